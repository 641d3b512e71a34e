// The demo page (clients/demo/index.html) and the browser client (clients/js/simplepush.js)
// in headless Chromium against the real simplepushd, which serves both at /demo/
// (server.demo = 1). Run with `node --test` and SIMPLEPUSHD=<path to simplepushd>; see
// README.md. SP_SCREENSHOT=<file.png> also writes a screenshot of the page with received
// notifications (docs/demo.png is made that way).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';

import { Daemon } from './daemon.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const STEP_MS = 10000; // how long one expectation on the page may take
const UAID_RE = /^[0-9a-f]{32}$/;

/** Resolves once `predicate()` is true; polls every 50 ms, throws after `ms`. */
async function until(what, predicate, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** PUTs a form-encoded update to an endpoint as an app server would. */
async function put(endpoint, fields) {
  const res = await fetch(endpoint, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields),
  });
  return { status: res.status, body: await res.text() };
}

/** A browser with a persistent profile of its own, removed at close. */
async function launch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spd-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1000, height: 860 },
  });
  ctx.setDefaultTimeout(STEP_MS);
  return {
    ctx,
    async close() {
      await ctx.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A page that records uncaught errors and console errors into `problems`. */
async function watchedPage(ctx, problems) {
  const page = await ctx.newPage();
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  return page;
}

/**
 * Says `hello` on a WebSocket of our own (opened from a blank page) and returns every
 * message received within `ms`.
 */
async function rawHello(ctx, daemon, hello, ms = 700) {
  const page = await ctx.newPage();
  try {
    return await page.evaluate(
      ({ url, hello, ms }) =>
        new Promise((resolve, reject) => {
          const got = [];
          const ws = new WebSocket(url, 'push-notification');
          ws.onopen = () => ws.send(JSON.stringify(hello));
          ws.onmessage = (e) => got.push(JSON.parse(e.data));
          ws.onerror = () => reject(new Error('raw WebSocket failed'));
          setTimeout(() => {
            ws.close();
            resolve(got);
          }, ms);
        }),
      { url: `ws://127.0.0.1:${daemon.port}/`, hello, ms },
    );
  } finally {
    await page.close();
  }
}

async function waitState(page, state) {
  await page.locator(`#state[data-state="${state}"]`).waitFor();
}

function notificationItem(page, version) {
  return page.locator(`#notifications li[data-version="${version}"]`);
}

describe('demo page against simplepushd', () => {
  let daemon;
  let browser;
  let page;
  let base;
  let uaid;
  let endpoint;
  const problems = [];

  before(async () => {
    daemon = await Daemon.start();
    base = `${daemon.origin}/demo/`;
    browser = await launch();
    for (const p of browser.ctx.pages()) await p.close();
  });

  after(async () => {
    if (browser) await browser.close();
    if (daemon) await daemon.stop();
  });

  it('serves the page and the library from /demo/', async () => {
    const html = await fetch(base);
    assert.equal(html.status, 200);
    assert.match(html.headers.get('content-type'), /^text\/html/);
    assert.match(await html.text(), /<script type="module">/);
    const js = await fetch(`${base}simplepush.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /javascript/);
    assert.equal(await js.text(), fs.readFileSync(new URL('../../clients/js/simplepush.js', import.meta.url), 'utf8'));
    const bare = await fetch(`${daemon.origin}/demo`);
    assert.equal(bare.status, 200);
    assert.equal(await bare.text(), fs.readFileSync(new URL('../../clients/demo/index.html', import.meta.url), 'utf8'));
  });

  it('connects, says hello and shows the uaid', async () => {
    page = await watchedPage(browser.ctx, problems);
    await page.goto(base);
    await waitState(page, 'ready');
    uaid = await page.locator('#uaid').textContent();
    assert.match(uaid, UAID_RE);
    assert.equal(await daemon.clients(), 1);
  });

  it('registers a channel and shows its endpoint and a curl command', async () => {
    await page.click('#register');
    const ep = page.locator('#endpoint');
    await ep.waitFor();
    await until('an endpoint', async () => /\/update\//.test((await ep.textContent()) || ''));
    endpoint = (await ep.textContent()).trim();
    assert.match(endpoint, new RegExp(`^http://127\\.0\\.0\\.1:${daemon.port}/update/[A-Za-z0-9_-]+$`));
    const curl = await page.locator('#curl').textContent();
    assert.ok(curl.startsWith("curl -X PUT -d 'version="), curl);
    assert.ok(curl.endsWith(` '${endpoint}'`), curl);
    assert.equal(await page.locator('#channels tbody tr').count(), 1);
  });

  it('shows an update PUT by an app server, with its data', async () => {
    const res = await put(endpoint, { version: '5', data: 'from the app server' });
    assert.deepEqual(res, { status: 200, body: '{}' });
    const item = notificationItem(page, 5);
    await item.waitFor();
    assert.equal(await item.getAttribute('data-data'), 'from the app server');
    assert.match(await item.textContent(), /from the app server/);
  });

  it('sends an update from its own form', async () => {
    await page.fill('#version', '6');
    await page.fill('#data', 'sent from the page form');
    const curl = await page.locator('#curl').textContent();
    assert.equal(curl, `curl -X PUT -d 'version=6&data=sent+from+the+page+form' '${endpoint}'`);
    await page.click('#send');
    await page.locator('#send-result[data-status="200"]').waitFor();
    const item = notificationItem(page, 6);
    await item.waitFor();
    assert.equal(await item.getAttribute('data-data'), 'sent from the page form');
    // An older version is acked but not shown again (Gecko's rule).
    assert.equal((await put(endpoint, { version: '4', data: 'stale' })).status, 200);
    await page.waitForTimeout(300);
    assert.equal(await notificationItem(page, 4).count(), 0);
    if (process.env.SP_SCREENSHOT) {
      await page.screenshot({ path: process.env.SP_SCREENSHOT, fullPage: true });
    }
  });

  it('resumes the same uaid and registrations after a reload', async () => {
    await page.reload();
    await waitState(page, 'ready');
    assert.equal(await page.locator('#uaid').textContent(), uaid);
    assert.equal((await page.locator('#endpoint').textContent()).trim(), endpoint);
    await until('one device', async () => (await daemon.clients()) === 1);
  });

  it('keeps a second tab in standby until the first one closes (one uaid, one socket)', async () => {
    const second = await watchedPage(browser.ctx, problems);
    await second.goto(base);
    await waitState(second, 'standby');
    await second.waitForTimeout(300);
    assert.equal(await daemon.clients(), 1);
    await page.close();
    page = second;
    await waitState(page, 'ready');
    assert.equal(await page.locator('#uaid').textContent(), uaid);
    await until('one device', async () => (await daemon.clients()) === 1);
  });

  it('receives at the next hello what was sent while the page was closed', async () => {
    await page.close();
    await until('the daemon to see the page go', async () => (await daemon.clients()) === 0);
    assert.deepEqual(await put(endpoint, { version: '7', data: 'while you were away' }), { status: 202, body: '{}' });
    page = await watchedPage(browser.ctx, problems);
    await page.goto(base);
    const item = notificationItem(page, 7);
    await item.waitFor();
    assert.equal(await item.getAttribute('data-data'), 'while you were away');
    assert.equal(await page.locator('#uaid').textContent(), uaid);
    // The page acked it: a hello of our own with the page's uaid gets nothing pending.
    const channelID = await page.locator('#channels tbody tr').getAttribute('data-channel');
    await page.close();
    await until('the daemon to see the page go', async () => (await daemon.clients()) === 0);
    const raw = await rawHello(browser.ctx, daemon, { messageType: 'hello', uaid, channelIDs: [channelID] });
    assert.deepEqual(raw, [{ messageType: 'hello', status: 200, uaid }]);
    page = await watchedPage(browser.ctx, problems);
    await page.goto(base);
    await waitState(page, 'ready');
    assert.equal(await page.locator('#notifications li').count(), 0);
  });

  it('unregisters a channel, after which its endpoint is gone (410)', async () => {
    await page.locator('#channels button.unregister').click();
    await until('the channel list to empty', async () => (await page.locator('#channels tbody tr').count()) === 0);
    await until('410 from the endpoint', async () => (await put(endpoint, { version: '8' })).status === 410);
  });

  it('ran without page errors', () => {
    assert.deepEqual(problems, []);
  });
});

describe('close code 4774', () => {
  let daemon;
  let browser;

  before(async () => {
    daemon = await Daemon.start({ client: { min_ping_interval: '5s' } });
    browser = await launch();
  });

  after(async () => {
    if (browser) await browser.close();
    if (daemon) await daemon.stop();
  });

  it('stops reconnecting when the server closes with 4774', async () => {
    const problems = [];
    const page = await watchedPage(browser.ctx, problems);
    // A 1 s ping interval against a 5 s minimum: the second ping is closed with 4774.
    // (Loaded as /demo, without the slash, which the page turns into /demo/.)
    await page.goto(`${daemon.origin}/demo?ping=1000`);
    await waitState(page, 'ready');
    assert.equal(page.url(), `${daemon.origin}/demo/?ping=1000`);
    await waitState(page, 'stopped');
    assert.match(await page.locator('#state-detail').textContent(), /4774/);
    await page.waitForTimeout(2500);
    assert.equal(await page.locator('#state').textContent(), 'stopped');
    assert.equal(await daemon.clients(), 0);
    assert.deepEqual(problems, []);
  });
});
