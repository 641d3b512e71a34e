// simplepush.js: the device side of the SimplePush protocol for browsers, as an ES module
// without dependencies (docs/client-js.md is its manual).
//
// One SimplePushClient holds one WebSocket (sub-protocol "push-notification") to a
// simplepushd, says hello with the uaid and channelIDs kept in Web Storage, registers and
// unregisters channels, acknowledges every notification update and raises an event for each
// one newer than the last version seen on its channel. It pings with `{}` after
// `pingInterval` of silence, and reconnects with exponential backoff and jitter when the
// socket goes away, resuming the same uaid.
//
// Invariants:
// * Storage holds the uaid and, per channel, its endpoint and the last version delivered
//   to the application; it is changed only by a register reply, unregister(), a delivered
//   notification, or a hello reply naming another uaid (a reset, which drops every channel).
// * At most one hello per socket, and requests go out only after its reply (as Gecko does).
// * Every well-formed update is acknowledged, also the ones not delivered to the application.
// * Versions are kept as exact decimal strings (the protocol allows up to 2^63-1, beyond
//   what a JavaScript number holds exactly), and acks echo them digit for digit.
// * After close() or a close with code 4774, nothing reconnects until connect() is called
//   (or, after 4774, the browser reports that it is back online).

/** The WebSocket sub-protocol of SimplePush. */
export const PROTOCOL = 'push-notification';

/** The close code with which a server says "do not reconnect" (Gecko's UDP wake-up code). */
export const CLOSE_NO_RECONNECT = 4774;

/** Pings are never more frequent than this unless allowShortPingInterval is set (ms). */
export const MIN_PING_INTERVAL = 60000;

/** Options of a client and their defaults (times in milliseconds). */
export const DEFAULTS = Object.freeze({
  url: '',
  storage: null,
  storagePrefix: 'simplepush.',
  pingInterval: 60000,
  allowShortPingInterval: false,
  requestTimeout: 10000,
  backoffBase: 1000,
  backoffCap: 60000,
  stableAfter: 10000,
  singleTab: true,
  WebSocket: null,
  random: null,
});

const UUID_RE = /^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$/;
const VERSION_RE = /^(?:0|[1-9][0-9]{0,18})$/;
const MAX_VERSION = 9223372036854775807n;

// Code and reason of the closes this client initiates itself.
const CLOSE_NORMAL = 1000;
const CLOSE_DEAD = 4000;

/**
 * The delay before reconnection attempt number `attempt` (0 for the first after a stable
 * connection): base * 2^attempt capped at `cap`, of which a random half is jitter, so the
 * result lies in [d/2, d] for d = min(cap, base * 2^attempt).
 */
export function backoffDelay(attempt, { base = 1000, cap = 60000, random = Math.random } = {}) {
  const n = Math.max(0, Math.min(Math.floor(Number(attempt) || 0), 62));
  const d = Math.min(cap, base * 2 ** n);
  const r = Math.min(Math.max(Number(random()) || 0, 0), 1);
  return Math.round(d / 2 + (d / 2) * r);
}

/** Whether `s` is a channelID or uaid the server accepts (32 hex, or 8-4-4-4-12 hex). */
export function isValidId(s) {
  return typeof s === 'string' && UUID_RE.test(s);
}

/** A lowercase dashed UUID v4, from crypto.randomUUID() where the context offers it. */
export function newChannelID(cryptoImpl = globalThis.crypto) {
  if (cryptoImpl && typeof cryptoImpl.randomUUID === 'function') {
    return cryptoImpl.randomUUID();
  }
  // crypto.randomUUID() exists only in secure contexts (https, localhost); getRandomValues()
  // exists everywhere, so a page served over plain http from another host still works.
  const b = new Uint8Array(16);
  cryptoImpl.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * A version as a canonical decimal string, or null when it is not an integer in
 * 0 .. 2^63-1 (the client accepts a number or a numeric string, as Gecko did).
 */
export function normalizeVersion(v) {
  let s;
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) return null;
    s = String(v);
  } else if (typeof v === 'string') {
    s = v;
  } else if (typeof v === 'bigint') {
    s = v.toString();
  } else {
    return null;
  }
  if (!VERSION_RE.test(s) || BigInt(s) > MAX_VERSION) return null;
  return s;
}

/** Whether decimal version string a is greater than b (b may be null: none seen). */
export function versionNewer(a, b) {
  return b == null || BigInt(a) > BigInt(b);
}

/** A version string as the application sees it: a number, or a BigInt past 2^53-1. */
export function versionValue(s) {
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : BigInt(s);
}

/**
 * Parses one server message. Integer `version` values are turned into strings before
 * JSON.parse so that none loses precision. The rewrite only touches a key: inside a JSON
 * string every `"` is preceded by a backslash, never by `{` or `,`.
 */
export function parseMessage(text) {
  const quoted = String(text).replace(
    /([{,]\s*"version"\s*:\s*)(-?\d+)(?=\s*[,}])/g,
    (_, head, digits) => `${head}"${digits}"`,
  );
  const msg = JSON.parse(quoted);
  return msg !== null && typeof msg === 'object' && !Array.isArray(msg) ? msg : null;
}

/** Serializes an ack of [{channelID, version}] with each version as a bare JSON integer. */
export function ackMessage(updates) {
  const items = updates.map((u) => `{"channelID":${JSON.stringify(u.channelID)},"version":${u.version}}`);
  return `{"messageType":"ack","updates":[${items.join(',')}]}`;
}

/** A Web Storage stand-in kept in memory (Node, or a browser with storage disabled). */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

function defaultStorage() {
  try {
    const s = globalThis.localStorage;
    if (s) {
      s.getItem('simplepush.probe');
      return s;
    }
  } catch {
    // Storage is disabled (for example a sandboxed frame): fall through to memory.
  }
  return new MemoryStorage();
}

function emit(target, type, detail) {
  target.dispatchEvent(new CustomEvent(type, { detail }));
}

/**
 * A SimplePush device connection. Events (CustomEvent, payload in `detail`):
 *   statechange {state}        every change of `state` (see STATES)
 *   open        {}             the socket opened (hello follows)
 *   ready       {uaid}         the hello reply arrived: registered channels receive updates
 *   reset       {oldUaid, uaid, channelIDs}  the server issued a new uaid; the channels
 *                              listed were dropped and must be registered again
 *   notification {channelID, version, data}  a version newer than the last one seen
 *   close       {code, reason, reconnect, delay}  the socket closed; reconnect says
 *                              whether (and delay in how many ms) it will reconnect
 *   error       {message}      a protocol problem that is not fatal to the client
 */
export class SimplePushClient extends EventTarget {
  /** The values of `state`. */
  static STATES = Object.freeze([
    'idle', // never connected
    'standby', // another tab of this origin holds the connection for this storage prefix
    'connecting', // socket opening
    'hello', // socket open, hello sent, waiting for its reply
    'ready', // hello answered
    'waiting', // socket closed, reconnecting after a backoff delay
    'stopped', // close() was called or the server closed with 4774
  ]);

  constructor(options = {}) {
    super();
    const o = { ...DEFAULTS, ...options };
    if (typeof o.url !== 'string' || !/^wss?:\/\//.test(o.url)) {
      throw new TypeError('SimplePushClient: options.url must be a ws:// or wss:// URL');
    }
    this.url = o.url;
    this.storage = o.storage || defaultStorage();
    this.prefix = String(o.storagePrefix);
    const ping = Number(o.pingInterval);
    if (!(ping > 0)) throw new RangeError('SimplePushClient: pingInterval must be > 0');
    this.pingInterval = o.allowShortPingInterval ? ping : Math.max(ping, MIN_PING_INTERVAL);
    this.requestTimeout = Number(o.requestTimeout);
    this.backoff = { base: Number(o.backoffBase), cap: Number(o.backoffCap) };
    this.stableAfter = Number(o.stableAfter);
    this.singleTab = Boolean(o.singleTab);
    this.WebSocketImpl = o.WebSocket || globalThis.WebSocket;
    this.random = o.random || Math.random;
    if (typeof this.WebSocketImpl !== 'function') {
      throw new TypeError('SimplePushClient: no WebSocket implementation');
    }

    this.state = 'idle';
    this.ws = null;
    this.failures = 0; // consecutive connections that did not stay up stableAfter ms
    this.readyAt = 0;
    this.queue = []; // requests waiting for a ready socket: {type, channelID, resolve, reject}
    this.inflight = new Map(); // "type:channelID" -> request sent on the current socket
    this.pingTimer = null;
    this.deadTimer = null;
    this.retryTimer = null;
    this.lockRelease = null;
    this.wanted = false; // connect() called and close() not since
    this.onOnline = () => {
      if (this.wanted && (this.state === 'waiting' || this.state === 'stopped')) {
        this.failures = 0;
        this.openSocket();
      }
    };
  }

  // ---- storage --------------------------------------------------------------------------

  key(name) {
    return this.prefix + name;
  }

  /** The uaid this device holds, or null before its first hello. */
  get uaid() {
    return this.storage.getItem(this.key('uaid')) || null;
  }

  loadChannels() {
    try {
      const v = JSON.parse(this.storage.getItem(this.key('channels')) || '{}');
      return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
    } catch {
      return {};
    }
  }

  saveChannels(channels) {
    this.storage.setItem(this.key('channels'), JSON.stringify(channels));
  }

  /** The registrations kept locally: [{channelID, pushEndpoint, version}]. */
  registrations() {
    const ch = this.loadChannels();
    return Object.keys(ch).map((id) => ({
      channelID: id,
      pushEndpoint: ch[id].pushEndpoint,
      version: ch[id].version == null ? null : versionValue(ch[id].version),
    }));
  }

  // ---- lifecycle ------------------------------------------------------------------------

  setState(state) {
    if (this.state !== state) {
      this.state = state;
      emit(this, 'statechange', { state });
    }
  }

  /**
   * Starts connecting (idempotent). With singleTab, waits first for the Web Lock of this
   * storage prefix so that two tabs of one origin never fight over one uaid.
   */
  connect() {
    if (this.wanted && this.state !== 'stopped') return;
    this.wanted = true;
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this.onOnline);
    }
    const locks = globalThis.navigator && globalThis.navigator.locks;
    if (this.singleTab && locks && typeof locks.request === 'function' && !this.lockRelease) {
      this.setState('standby');
      let release;
      const held = new Promise((resolve) => {
        release = resolve;
      });
      this.lockRelease = release;
      locks
        .request(this.key('connection'), () => {
          if (this.lockRelease !== release) return undefined; // closed while waiting
          this.openSocket();
          return held;
        })
        .catch((e) => emit(this, 'error', { message: `lock: ${e && e.message}` }));
      return;
    }
    this.openSocket();
  }

  /** Closes the socket for good (until connect()); pending requests are rejected. */
  close() {
    this.wanted = false;
    this.stop('closed by the application');
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this.onOnline);
    }
    if (this.lockRelease) {
      this.lockRelease();
      this.lockRelease = null;
    }
  }

  stop(why) {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      this.detach(ws);
      try {
        ws.close(CLOSE_NORMAL);
      } catch {
        // Already closing.
      }
    }
    this.failAll(new Error(why));
    this.setState('stopped');
  }

  openSocket() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ws) return;
    this.setState('connecting');
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url, PROTOCOL);
    } catch (e) {
      emit(this, 'error', { message: `connect: ${e && e.message}` });
      this.scheduleReconnect(1006, '');
      return;
    }
    this.ws = ws;
    this.readyAt = 0;
    ws.onopen = () => this.onOpen(ws);
    ws.onmessage = (ev) => this.onMessage(ws, ev.data);
    ws.onclose = (ev) => this.onClose(ws, ev.code, ev.reason);
    ws.onerror = () => {}; // a close event always follows
  }

  detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  onOpen(ws) {
    if (ws !== this.ws) return;
    this.setState('hello');
    emit(this, 'open', {});
    const hello = { messageType: 'hello', channelIDs: Object.keys(this.loadChannels()) };
    const uaid = this.uaid;
    if (uaid) hello.uaid = uaid; // Gecko omits the key when it has none.
    this.send(JSON.stringify(hello));
    this.armPing();
  }

  onClose(ws, code, reason) {
    if (ws !== this.ws) return;
    this.detach(ws);
    this.ws = null;
    this.clearTimers();
    // Requests sent on this socket go back to the queue: register and unregister are
    // idempotent, so they are sent again after the next hello.
    for (const req of this.inflight.values()) {
      clearTimeout(req.timer);
      this.queue.unshift(req);
    }
    this.inflight.clear();
    if (code === CLOSE_NO_RECONNECT) {
      emit(this, 'close', { code, reason, reconnect: false, delay: null });
      this.stop('the server asked not to reconnect (4774)');
      return;
    }
    this.scheduleReconnect(code, reason);
  }

  scheduleReconnect(code, reason) {
    const stable = this.readyAt && Date.now() - this.readyAt >= this.stableAfter;
    if (stable) this.failures = 0;
    const delay = backoffDelay(this.failures, { ...this.backoff, random: this.random });
    this.failures += 1;
    this.readyAt = 0;
    this.setState('waiting');
    emit(this, 'close', { code, reason, reconnect: true, delay });
    this.retryTimer = setTimeout(() => this.openSocket(), delay);
  }

  /** Closes the current socket as dead (no answer to a ping) and reconnects. */
  dropSocket(code, reason) {
    const ws = this.ws;
    if (!ws) return;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing.
    }
    this.onClose(ws, code, reason);
  }

  // ---- pings ----------------------------------------------------------------------------

  clearTimers() {
    clearTimeout(this.pingTimer);
    clearTimeout(this.deadTimer);
    this.pingTimer = this.deadTimer = null;
  }

  /** (Re)starts the silence timer: a ping goes out after pingInterval without a message. */
  armPing() {
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => {
      this.send('{}');
      clearTimeout(this.deadTimer);
      this.deadTimer = setTimeout(() => this.dropSocket(CLOSE_DEAD, 'no reply to ping'), this.requestTimeout);
    }, this.pingInterval);
  }

  send(text) {
    try {
      this.ws.send(text);
      return true;
    } catch (e) {
      emit(this, 'error', { message: `send: ${e && e.message}` });
      return false;
    }
  }

  // ---- incoming -------------------------------------------------------------------------

  onMessage(ws, data) {
    if (ws !== this.ws) return;
    // Any message proves the socket alive.
    clearTimeout(this.deadTimer);
    this.deadTimer = null;
    this.armPing();
    let msg;
    try {
      msg = parseMessage(data);
    } catch {
      msg = null;
    }
    if (!msg) {
      emit(this, 'error', { message: 'unparsable message from the server' });
      return;
    }
    const type = typeof msg.messageType === 'string' ? msg.messageType.toLowerCase() : '';
    if (type === '' || type === 'ping') return; // a pong
    if (type === 'hello') this.onHello(msg);
    else if (type === 'register' || type === 'unregister') this.onReply(type, msg);
    else if (type === 'notification') this.onNotification(msg);
    else emit(this, 'error', { message: `unexpected messageType ${JSON.stringify(msg.messageType)}` });
  }

  onHello(msg) {
    if (this.state !== 'hello') return; // a reply nobody waits for: ignore it
    const ok = msg.status === 200 || msg.status === undefined;
    if (!ok || typeof msg.uaid !== 'string' || msg.uaid === '' || msg.uaid.length > 128) {
      // An error reply (storage unavailable...) or no usable uaid: try again later.
      emit(this, 'error', { message: `hello refused: ${msg.status} ${msg.error || ''}`.trim() });
      this.dropSocket(CLOSE_NORMAL, 'hello refused');
      return;
    }
    const old = this.uaid;
    const channels = this.loadChannels();
    const dropped = Object.keys(channels);
    if (msg.uaid !== old) {
      // A new uaid means the server forgot this device: every registration is void.
      this.storage.setItem(this.key('uaid'), msg.uaid);
      this.saveChannels({});
      if (old || dropped.length) {
        emit(this, 'reset', { oldUaid: old, uaid: msg.uaid, channelIDs: dropped });
      }
    }
    this.readyAt = Date.now();
    this.setState('ready');
    emit(this, 'ready', { uaid: msg.uaid });
    this.flushQueue();
  }

  onReply(type, msg) {
    const id = typeof msg.channelID === 'string' ? msg.channelID : '';
    const req = this.inflight.get(`${type}:${id}`);
    if (!req) return;
    this.inflight.delete(`${type}:${id}`);
    clearTimeout(req.timer);
    if (msg.status !== 200) {
      const err = new Error(`${type} failed: ${msg.status} ${msg.error || ''}`.trim());
      err.status = msg.status;
      req.reject(err);
      return;
    }
    if (type === 'unregister') {
      req.resolve({ channelID: id });
      return;
    }
    let endpoint = msg.pushEndpoint;
    try {
      endpoint = new URL(endpoint).href;
    } catch {
      req.reject(new Error('register failed: the reply has no valid pushEndpoint'));
      return;
    }
    const channels = this.loadChannels();
    const prev = channels[id];
    channels[id] = { pushEndpoint: endpoint, version: prev ? prev.version : null };
    this.saveChannels(channels);
    req.resolve({ channelID: id, pushEndpoint: endpoint });
  }

  onNotification(msg) {
    if (!Array.isArray(msg.updates)) {
      emit(this, 'error', { message: 'notification without updates' });
      return;
    }
    const acks = [];
    const delivered = [];
    const channels = this.loadChannels();
    for (const u of msg.updates) {
      if (!u || typeof u !== 'object' || typeof u.channelID !== 'string') continue;
      const version = normalizeVersion(u.version);
      if (version === null) continue;
      acks.push({ channelID: u.channelID, version });
      const ch = channels[u.channelID];
      // Unknown channels and versions not newer than the last one seen are acked only.
      if (!ch || !versionNewer(version, ch.version)) continue;
      ch.version = version;
      delivered.push({
        channelID: u.channelID,
        version: versionValue(version),
        data: typeof u.data === 'string' ? u.data : null,
      });
    }
    if (delivered.length) this.saveChannels(channels);
    if (acks.length) this.send(ackMessage(acks));
    for (const d of delivered) emit(this, 'notification', d);
  }

  // ---- requests -------------------------------------------------------------------------

  /**
   * Registers a channel (a fresh UUID v4 when none is given) and resolves with
   * {channelID, pushEndpoint}. Waits for a ready connection; rejects on a non-200 reply,
   * after requestTimeout without a reply, or when the client stops.
   */
  register(channelID) {
    const id = channelID === undefined || channelID === null ? newChannelID() : channelID;
    if (!isValidId(id)) {
      return Promise.reject(new TypeError('register: channelID must be a UUID (32 hex or 8-4-4-4-12)'));
    }
    return this.request('register', id);
  }

  /**
   * Forgets a channel locally at once (its notifications are no longer delivered) and tells
   * the server; resolves with {channelID} when the server confirmed.
   */
  unregister(channelID) {
    if (!isValidId(channelID)) {
      return Promise.reject(new TypeError('unregister: channelID must be a UUID'));
    }
    const channels = this.loadChannels();
    if (channelID in channels) {
      delete channels[channelID];
      this.saveChannels(channels);
    }
    return this.request('unregister', channelID);
  }

  request(type, channelID) {
    if (this.state === 'stopped' && !this.wanted) {
      return Promise.reject(new Error(`${type}: the client is closed`));
    }
    const same = (r) => r.type === type && r.channelID === channelID;
    const pending = this.inflight.get(`${type}:${channelID}`) || this.queue.find(same);
    if (pending) return pending.promise;
    const req = { type, channelID, timer: null };
    req.promise = new Promise((resolve, reject) => {
      req.resolve = resolve;
      req.reject = reject;
    });
    this.queue.push(req);
    if (this.state === 'ready') this.flushQueue();
    return req.promise;
  }

  flushQueue() {
    while (this.queue.length && this.state === 'ready') {
      const req = this.queue.shift();
      const key = `${req.type}:${req.channelID}`;
      if (this.inflight.has(key)) continue;
      this.inflight.set(key, req);
      req.timer = setTimeout(() => {
        if (this.inflight.get(key) === req) {
          this.inflight.delete(key);
          req.reject(new Error(`${req.type}: no reply within ${this.requestTimeout} ms`));
        }
      }, this.requestTimeout);
      this.send(JSON.stringify({ messageType: req.type, channelID: req.channelID }));
    }
  }

  failAll(err) {
    for (const req of this.inflight.values()) {
      clearTimeout(req.timer);
      req.reject(err);
    }
    this.inflight.clear();
    for (const req of this.queue.splice(0)) req.reject(err);
  }
}

export default SimplePushClient;
