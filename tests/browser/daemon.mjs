// The real simplepushd for the browser tests: started from $SIMPLEPUSHD with a temporary
// config on free loopback ports, found through its "listening public=... internal=..." log
// line, stopped by pid (SIGTERM, then SIGKILL) and always reaped. stop() reports a crash or
// a sanitizer report in its stderr as an error.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const LISTENING_RE = /listening public=(\S+):(\d+) internal=(\S+):(\d+)/;
const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:/;

/**
 * The config every test daemon runs with; `extra` ({section: {key: value}}) overrides it
 * (a null value removes the key).
 */
export function daemonConfig(extra = {}) {
  const base = {
    server: { host: '127.0.0.1', port: '0', demo: '1', drain_seconds: '1' },
    internal: { host: '127.0.0.1', port: '0' },
    client: { min_ping_interval: '0', resend_interval: '0' },
    log: { level: 'notice' },
  };
  for (const [section, keys] of Object.entries(extra)) {
    base[section] = { ...(base[section] || {}), ...keys };
    for (const [k, v] of Object.entries(keys)) if (v === null) delete base[section][k];
  }
  return Object.entries(base)
    .map(([section, keys]) => `[${section}]\n${Object.entries(keys).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`)
    .join('\n');
}

export class Daemon {
  /** Starts the daemon and resolves once it listens; `extra` overrides config keys. */
  static async start(extra = {}, { timeoutMs = 10000 } = {}) {
    const bin = process.env.SIMPLEPUSHD;
    if (!bin || !fs.existsSync(bin)) {
      throw new Error(`SIMPLEPUSHD must name the simplepushd binary (got ${JSON.stringify(bin || '')})`);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spd-browser-'));
    const conf = path.join(dir, 'config.ini');
    fs.writeFileSync(conf, daemonConfig(extra));
    const d = new Daemon();
    d.dir = dir;
    d.stderr = '';
    d.proc = spawn(bin, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    d.exited = new Promise((resolve) => d.proc.once('exit', (code, signal) => resolve({ code, signal })));
    d.proc.stderr.setEncoding('utf8');
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`simplepushd did not listen within ${timeoutMs} ms:\n${d.stderr}`)), timeoutMs);
      d.proc.stderr.on('data', (chunk) => {
        d.stderr += chunk;
        const m = LISTENING_RE.exec(d.stderr);
        if (m && !d.port) {
          d.host = m[1];
          d.port = Number(m[2]);
          d.internalPort = Number(m[4]);
          clearTimeout(timer);
          resolve();
        }
      });
      d.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`simplepushd exited (${code ?? signal}) before listening:\n${d.stderr}`));
      });
    });
    return d;
  }

  /** http://127.0.0.1:<public port> */
  get origin() {
    return `http://${this.host}:${this.port}`;
  }

  /** The number of connected devices, from GET /status/. */
  async clients() {
    const res = await fetch(`${this.origin}/status/`);
    return (await res.json()).clients;
  }

  /** Stops the daemon by pid: SIGTERM, SIGKILL after `graceMs`. Throws on a crash. */
  async stop({ graceMs = 5000 } = {}) {
    if (!this.proc) return;
    const proc = this.proc;
    this.proc = null;
    let killed = false;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => {
        killed = true;
        proc.kill('SIGKILL');
      }, graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    const { code, signal } = await this.exited;
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (killed) throw new Error(`simplepushd ignored SIGTERM for ${graceMs} ms:\n${this.stderr}`);
    if (code !== 0) throw new Error(`simplepushd exited with ${code ?? signal}:\n${this.stderr}`);
    if (SANITIZER_RE.test(this.stderr)) throw new Error(`sanitizer report:\n${this.stderr}`);
  }
}
