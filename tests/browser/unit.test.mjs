// Unit tests of clients/js/simplepush.js under Node, without a browser or a daemon: the pure
// helpers (backoff bounds, ids, versions, parsing) and the client's protocol behaviour driven
// through a scripted fake WebSocket with short timers.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  CLOSE_NO_RECONNECT,
  MIN_PING_INTERVAL,
  MemoryStorage,
  SimplePushClient,
  ackMessage,
  backoffDelay,
  isValidId,
  newChannelID,
  normalizeVersion,
  parseMessage,
  versionNewer,
} from '../../clients/js/simplepush.js';

const UUID4_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const CH1 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
const CH2 = '11111111-2222-4333-8444-555555555555';
const UAID = '0123456789abcdef0123456789abcdef';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, predicate, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A WebSocket whose server side the test plays; every instance is kept in `sockets`. */
function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocol) {
      this.url = url;
      this.protocol = protocol;
      this.sent = [];
      this.closed = null;
      sockets.push(this);
    }
    send(text) {
      if (this.closed) throw new Error('closed');
      this.sent.push(text);
    }
    close(code, reason) {
      this.closed = { code, reason };
    }
    // Server side.
    open() {
      this.onopen && this.onopen({});
    }
    receive(msg) {
      this.onmessage && this.onmessage({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
    }
    serverClose(code, reason = '') {
      this.closed = this.closed || { code, reason };
      this.onclose && this.onclose({ code, reason });
    }
    json(i) {
      return JSON.parse(this.sent[i]);
    }
    last() {
      return JSON.parse(this.sent[this.sent.length - 1]);
    }
  }
  return { FakeWebSocket, sockets };
}

function makeClient(opts = {}) {
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const storage = opts.storage || new MemoryStorage();
  const client = new SimplePushClient({
    url: 'ws://push.example/',
    WebSocket: FakeWebSocket,
    storage,
    singleTab: false,
    backoffBase: 20,
    backoffCap: 160,
    requestTimeout: 200,
    random: () => 1,
    ...opts,
  });
  const events = [];
  for (const type of ['open', 'ready', 'reset', 'notification', 'close', 'error', 'statechange']) {
    client.addEventListener(type, (e) => events.push({ type, ...e.detail }));
  }
  const of = (type) => events.filter((e) => e.type === type);
  return { client, sockets, storage, events, of };
}

/** Connects and answers the hello with `uaid`; returns the socket. */
async function ready(t, uaid = UAID) {
  t.client.connect();
  const ws = t.sockets[t.sockets.length - 1];
  ws.open();
  ws.receive({ messageType: 'hello', status: 200, uaid });
  assert.equal(t.client.state, 'ready');
  return ws;
}

/** Registers channelID through socket ws, answering with an endpoint. */
async function registered(t, ws, channelID) {
  const p = t.client.register(channelID);
  const req = ws.last();
  assert.deepEqual(req, { messageType: 'register', channelID });
  ws.receive({ messageType: 'register', channelID, status: 200, pushEndpoint: `http://push.example/update/${channelID}` });
  return p;
}

describe('backoffDelay', () => {
  it('stays within [d/2, d] for d = min(cap, base * 2^attempt)', () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const d = Math.min(60000, 1000 * 2 ** attempt);
      assert.equal(backoffDelay(attempt, { random: () => 0 }), d / 2, `attempt ${attempt}, no jitter`);
      assert.equal(backoffDelay(attempt, { random: () => 1 }), d, `attempt ${attempt}, full jitter`);
      const r = backoffDelay(attempt);
      assert.ok(r >= d / 2 && r <= d, `attempt ${attempt}: ${r}`);
    }
  });

  it('starts near the base and never exceeds the cap', () => {
    assert.equal(backoffDelay(0, { random: () => 1 }), 1000);
    assert.equal(backoffDelay(5, { random: () => 1 }), 32000);
    assert.equal(backoffDelay(6, { random: () => 1 }), 60000);
    assert.equal(backoffDelay(1e9, { random: () => 1 }), 60000);
    assert.equal(backoffDelay(3, { base: 10, cap: 50, random: () => 1 }), 50);
  });

  it('treats nonsense attempts and random values as the first attempt and clamps jitter', () => {
    for (const a of [-1, NaN, undefined, 'x']) {
      assert.equal(backoffDelay(a, { random: () => 1 }), 1000, String(a));
    }
    assert.equal(backoffDelay(0, { random: () => 7 }), 1000);
    assert.equal(backoffDelay(0, { random: () => -3 }), 500);
    assert.equal(backoffDelay(0, { random: () => NaN }), 500);
  });
});

describe('identifiers and versions', () => {
  it('makes lowercase dashed UUID v4 channelIDs, also without crypto.randomUUID', () => {
    assert.match(newChannelID(), UUID4_RE);
    const onlyRandomValues = { getRandomValues: (b) => globalThis.crypto.getRandomValues(b) };
    const ids = new Set();
    for (let i = 0; i < 200; i++) {
      const id = newChannelID(onlyRandomValues);
      assert.match(id, UUID4_RE);
      ids.add(id);
    }
    assert.equal(ids.size, 200);
    const zeros = newChannelID({ getRandomValues: (b) => b.fill(0) });
    assert.equal(zeros, '00000000-0000-4000-8000-000000000000');
  });

  it('accepts the id forms the server accepts', () => {
    const table = [
      [CH1, true],
      [CH1.toUpperCase(), true],
      [UAID, true],
      ['', false],
      [CH1.slice(1), false],
      [`${CH1}0`, false],
      ['zzzzzzzz-bbbb-4ccc-8ddd-eeeeeeeeeeee', false],
      [42, false],
      [null, false],
    ];
    for (const [id, ok] of table) assert.equal(isValidId(id), ok, String(id));
  });

  it('normalizes versions to exact decimal strings in 0 .. 2^63-1', () => {
    const table = [
      [0, '0'],
      [5, '5'],
      ['5', '5'],
      [Number.MAX_SAFE_INTEGER, '9007199254740991'],
      ['9223372036854775807', '9223372036854775807'],
      [9223372036854775807n, '9223372036854775807'],
      ['9223372036854775808', null],
      ['99999999999999999999', null],
      [2 ** 53, null],
      [-1, null],
      ['-1', null],
      [1.5, null],
      ['1.5', null],
      ['007', null],
      ['', null],
      [' 5', null],
      [null, null],
      [undefined, null],
      [{}, null],
      [true, null],
      [NaN, null],
      [Infinity, null],
    ];
    for (const [v, want] of table) assert.equal(normalizeVersion(v), want, String(v));
  });

  it('compares versions exactly past 2^53', () => {
    assert.ok(versionNewer('9007199254740993', '9007199254740992'));
    assert.ok(!versionNewer('9007199254740992', '9007199254740993'));
    assert.ok(!versionNewer('5', '5'));
    assert.ok(versionNewer('0', null));
  });

  it('parses versions as strings and leaves look-alikes inside strings alone', () => {
    const text = '{"messageType":"notification","updates":[{"channelID":"a","version":9223372036854775807,' +
      '"data":"x,\\"version\\":5}"},{ "version" : 12 , "channelID":"b"}]}';
    const msg = parseMessage(text);
    assert.equal(msg.updates[0].version, '9223372036854775807');
    assert.equal(msg.updates[0].data, 'x,"version":5}');
    assert.equal(msg.updates[1].version, '12');
    assert.equal(parseMessage('{"version":1.5}').version, 1.5);
    assert.equal(parseMessage('[1]'), null);
    assert.equal(parseMessage('null'), null);
    assert.throws(() => parseMessage('{'));
  });

  it('acks versions digit for digit', () => {
    assert.equal(
      ackMessage([{ channelID: CH1, version: '9223372036854775807' }, { channelID: 'q"', version: '0' }]),
      `{"messageType":"ack","updates":[{"channelID":"${CH1}","version":9223372036854775807},{"channelID":"q\\"","version":0}]}`,
    );
  });
});

describe('SimplePushClient', () => {
  it('needs a ws:// URL and a positive ping interval, and keeps pings >= 60 s unless allowed', () => {
    assert.throws(() => new SimplePushClient({ url: 'http://x/', WebSocket: class {} }), TypeError);
    assert.throws(() => new SimplePushClient({ WebSocket: class {} }), TypeError);
    assert.throws(() => new SimplePushClient({ url: 'ws://x/', WebSocket: class {}, pingInterval: 0 }), RangeError);
    const c = new SimplePushClient({ url: 'ws://x/', WebSocket: class {}, pingInterval: 1000 });
    assert.equal(c.pingInterval, MIN_PING_INTERVAL);
    const d = new SimplePushClient({ url: 'ws://x/', WebSocket: class {}, pingInterval: 1000, allowShortPingInterval: true });
    assert.equal(d.pingInterval, 1000);
    assert.equal(new SimplePushClient({ url: 'ws://x/', WebSocket: class {} }).pingInterval, 60000);
  });

  it('says hello without a uaid the first time, stores the one it gets, and resumes it', async () => {
    const t = makeClient();
    t.client.connect();
    const ws = t.sockets[0];
    assert.equal(ws.url, 'ws://push.example/');
    assert.equal(ws.protocol, 'push-notification');
    assert.equal(t.client.state, 'connecting');
    ws.open();
    assert.deepEqual(ws.json(0), { messageType: 'hello', channelIDs: [] });
    assert.equal(t.client.state, 'hello');
    ws.receive({ messageType: 'hello', status: 200, uaid: UAID });
    assert.deepEqual(t.of('ready').map((e) => e.uaid), [UAID]);
    assert.equal(t.client.uaid, UAID);
    assert.equal(t.of('reset').length, 0);
    await registered(t, ws, CH1);

    // A second client on the same storage (a reload) resumes the uaid and the channels.
    const t2 = makeClient({ storage: t.storage });
    t2.client.connect();
    t2.sockets[0].open();
    assert.deepEqual(t2.sockets[0].json(0), { messageType: 'hello', channelIDs: [CH1], uaid: UAID });
    t2.sockets[0].receive({ messageType: 'HELLO', status: 200, uaid: UAID });
    assert.equal(t2.client.state, 'ready');
    assert.equal(t2.of('reset').length, 0);
    assert.deepEqual(t2.client.registrations(), [
      { channelID: CH1, pushEndpoint: `http://push.example/update/${CH1}`, version: null },
    ]);
    t.client.close();
    t2.client.close();
  });

  it('registers with a generated or given channelID and unregisters', async () => {
    const t = makeClient();
    const ws = await ready(t);
    const p = t.client.register();
    const { channelID } = ws.last();
    assert.match(channelID, UUID4_RE);
    // A second call for the same channel joins the pending request.
    assert.equal(t.client.register(channelID), p);
    assert.equal(ws.sent.length, 2);
    ws.receive({ messageType: 'register', channelID, status: 200, pushEndpoint: 'http://push.example/update/tok' });
    assert.deepEqual(await p, { channelID, pushEndpoint: 'http://push.example/update/tok' });

    await registered(t, ws, CH2);
    assert.deepEqual(t.client.registrations().map((r) => r.channelID), [channelID, CH2]);

    const u = t.client.unregister(channelID);
    // Forgotten locally at once, before the reply.
    assert.deepEqual(t.client.registrations().map((r) => r.channelID), [CH2]);
    assert.deepEqual(ws.last(), { messageType: 'unregister', channelID });
    ws.receive({ messageType: 'unregister', channelID, status: 200 });
    assert.deepEqual(await u, { channelID });
    t.client.close();
  });

  it('rejects bad channelIDs, error replies, replies without an endpoint and silence', async () => {
    const t = makeClient();
    const ws = await ready(t);
    await assert.rejects(t.client.register('not-a-uuid'), TypeError);
    await assert.rejects(t.client.unregister(42), TypeError);
    assert.equal(ws.sent.length, 1); // only the hello

    const p413 = t.client.register(CH1);
    ws.receive({ messageType: 'register', channelID: CH1, status: 413, error: 'Too Many Channels' });
    await assert.rejects(p413, (e) => e.status === 413 && /Too Many Channels/.test(e.message));

    const pBad = t.client.register(CH2);
    ws.receive({ messageType: 'register', channelID: CH2, status: 200, pushEndpoint: 'not a url' });
    await assert.rejects(pBad, /pushEndpoint/);
    assert.deepEqual(t.client.registrations(), []);

    const pSilent = t.client.register(CH1);
    await assert.rejects(pSilent, /no reply within 200 ms/);
    // A late reply for a request that timed out is ignored.
    ws.receive({ messageType: 'register', channelID: CH1, status: 200, pushEndpoint: 'http://x/update/1' });
    assert.deepEqual(t.client.registrations(), []);
    t.client.close();
    await assert.rejects(t.client.register(CH1), /closed/);
  });

  it('queues requests until the hello is answered and re-sends them after a reconnect', async () => {
    const t = makeClient();
    const p = t.client.register(CH1);
    t.client.connect();
    const ws = t.sockets[0];
    ws.open();
    assert.equal(ws.sent.length, 1); // hello only
    ws.receive({ messageType: 'hello', status: 200, uaid: UAID });
    assert.deepEqual(ws.last(), { messageType: 'register', channelID: CH1 });
    ws.serverClose(1006);
    await until('a new socket', () => t.sockets.length === 2);
    const ws2 = t.sockets[1];
    ws2.open();
    ws2.receive({ messageType: 'hello', status: 200, uaid: UAID });
    assert.deepEqual(ws2.last(), { messageType: 'register', channelID: CH1 });
    ws2.receive({ messageType: 'register', channelID: CH1, status: 200, pushEndpoint: 'http://x/update/1' });
    assert.equal((await p).channelID, CH1);
    t.client.close();
  });

  it('acks every well-formed update and raises events only for newer versions', async () => {
    const t = makeClient();
    const ws = await ready(t);
    await registered(t, ws, CH1);
    await registered(t, ws, CH2);
    const before = ws.sent.length;
    ws.receive(
      '{"messageType":"notification","updates":[' +
        `{"channelID":"${CH1}","version":5,"data":"five"},` +
        `{"channelID":"${CH2}","version":9223372036854775807},` +
        '{"channelID":"99999999-2222-4333-8444-555555555555","version":3},' +
        `{"channelID":"${CH1}","version":-1},` +
        `{"channelID":"${CH1}","version":"x"},` +
        '{"version":4},null,7]}',
    );
    assert.equal(ws.sent.length, before + 1);
    assert.equal(
      ws.sent[before],
      '{"messageType":"ack","updates":[' +
        `{"channelID":"${CH1}","version":5},` +
        `{"channelID":"${CH2}","version":9223372036854775807},` +
        '{"channelID":"99999999-2222-4333-8444-555555555555","version":3}]}',
    );
    assert.deepEqual(
      t.of('notification').map(({ channelID, version, data }) => ({ channelID, version, data })),
      [
        { channelID: CH1, version: 5, data: 'five' },
        { channelID: CH2, version: 9223372036854775807n, data: null },
      ],
    );
    // The same and older versions: acked again, no event.
    ws.receive({ messageType: 'notification', updates: [{ channelID: CH1, version: 5 }, { channelID: CH1, version: 4 }] });
    assert.deepEqual(JSON.parse(ws.sent[ws.sent.length - 1]).updates.map((u) => u.version), [5, 4]);
    assert.equal(t.of('notification').length, 2);
    // A newer one: event. The version survives in storage (a reload keeps the rule).
    ws.receive({ messageType: 'notification', updates: [{ channelID: CH1, version: '6', data: 'six' }] });
    assert.equal(t.of('notification').length, 3);
    assert.equal(t.client.registrations().find((r) => r.channelID === CH1).version, 6);
    // Nonsense notifications are reported, not acked.
    const n = ws.sent.length;
    ws.receive({ messageType: 'notification' });
    ws.receive('not json');
    ws.receive({ messageType: 'surprise' });
    assert.equal(ws.sent.length, n);
    assert.equal(t.of('error').length, 3);
    t.client.close();
  });

  it('drops local registrations and re-registers nothing when the server issues a new uaid', async () => {
    const t = makeClient();
    const ws = await ready(t);
    await registered(t, ws, CH1);
    await registered(t, ws, CH2);
    ws.serverClose(1001);
    await until('a new socket', () => t.sockets.length === 2);
    const ws2 = t.sockets[1];
    ws2.open();
    assert.deepEqual(ws2.json(0).channelIDs, [CH1, CH2]);
    const NEW = 'fedcba9876543210fedcba9876543210';
    ws2.receive({ messageType: 'hello', status: 200, uaid: NEW });
    assert.deepEqual(t.of('reset').map(({ oldUaid, uaid, channelIDs }) => ({ oldUaid, uaid, channelIDs })), [
      { oldUaid: UAID, uaid: NEW, channelIDs: [CH1, CH2] },
    ]);
    assert.equal(t.client.uaid, NEW);
    assert.deepEqual(t.client.registrations(), []);
    assert.equal(ws2.sent.length, 1); // nothing re-registered
    // Updates for the dropped channels are acked but not delivered.
    ws2.receive({ messageType: 'notification', updates: [{ channelID: CH1, version: 9 }] });
    assert.equal(t.of('notification').length, 0);
    assert.equal(ws2.last().messageType, 'ack');
    t.client.close();
  });

  it('reconnects with growing backoff and resets it after a stable connection', async () => {
    const t = makeClient({ stableAfter: 50 });
    t.client.connect();
    const delays = [];
    for (let i = 0; i < 5; i++) {
      const ws = t.sockets[i];
      ws.serverClose(1006); // the socket never opens
      const close = t.of('close').at(-1);
      assert.equal(close.reconnect, true);
      assert.equal(t.client.state, 'waiting');
      delays.push(close.delay);
      await until(`socket ${i + 2}`, () => t.sockets.length === i + 2);
    }
    assert.deepEqual(delays, [20, 40, 80, 160, 160]);
    // A connection that stays ready for stableAfter starts the backoff over.
    const ws = t.sockets[5];
    ws.open();
    ws.receive({ messageType: 'hello', status: 200, uaid: UAID });
    await sleep(60);
    ws.serverClose(1000);
    assert.equal(t.of('close').at(-1).delay, 20);
    // One that does not is counted as a failure.
    await until('socket 7', () => t.sockets.length === 7);
    t.sockets[6].open();
    t.sockets[6].receive({ messageType: 'hello', status: 200, uaid: UAID });
    t.sockets[6].serverClose(1008);
    assert.equal(t.of('close').at(-1).delay, 40);
    t.client.close();
    await sleep(60);
    assert.equal(t.sockets.length, 7, 'close() stops reconnecting');
    assert.equal(t.client.state, 'stopped');
  });

  it('does not reconnect after close code 4774 and fails pending requests', async () => {
    const t = makeClient();
    const ws = await ready(t);
    const p = t.client.register(CH1);
    ws.serverClose(CLOSE_NO_RECONNECT);
    await assert.rejects(p, /4774/);
    assert.equal(t.client.state, 'stopped');
    const close = t.of('close').at(-1);
    assert.deepEqual({ code: close.code, reconnect: close.reconnect }, { code: 4774, reconnect: false });
    await sleep(100);
    assert.equal(t.sockets.length, 1);
    // connect() starts again, with the same uaid.
    t.client.connect();
    assert.equal(t.sockets.length, 2);
    t.sockets[1].open();
    assert.equal(t.sockets[1].json(0).uaid, UAID);
    t.client.close();
  });

  it('pings with {} after silence and reconnects when nothing answers', async () => {
    const t = makeClient({ pingInterval: 30, allowShortPingInterval: true, requestTimeout: 40 });
    const ws = await ready(t);
    await until('a ping', () => ws.sent.includes('{}'));
    ws.receive('{}'); // the pong
    const pings = () => ws.sent.filter((s) => s === '{}').length;
    await until('a second ping', () => pings() === 2);
    // No pong this time: the socket is dropped as dead and a new one is made.
    await until('a reconnect', () => t.sockets.length === 2, 1000);
    assert.deepEqual(ws.closed, { code: 4000, reason: 'no reply to ping' });
    assert.equal(t.of('close').at(-1).code, 4000);
    t.client.close();
  });

  it('closes and retries when the hello is refused or gives no usable uaid', async () => {
    for (const reply of [
      { messageType: 'hello', status: 503, error: 'Service Unavailable', channelIDs: [] },
      { messageType: 'hello', status: 200, uaid: '' },
      { messageType: 'hello', status: 200 },
    ]) {
      const t = makeClient();
      t.client.connect();
      t.sockets[0].open();
      t.sockets[0].receive(reply);
      assert.equal(t.client.state, 'waiting', JSON.stringify(reply));
      assert.equal(t.sockets[0].closed.code, 1000);
      assert.equal(t.client.uaid, null);
      await until('a retry', () => t.sockets.length === 2);
      t.client.close();
    }
  });

  it('ignores a hello reply it did not ask for', async () => {
    const t = makeClient();
    const ws = await ready(t);
    ws.receive({ messageType: 'hello', status: 200, uaid: 'fedcba9876543210fedcba9876543210' });
    assert.equal(t.client.uaid, UAID);
    assert.equal(t.of('ready').length, 1);
    t.client.close();
  });
});
