"""
spd: the harness of the simplepushd end-to-end tests.

It starts the real daemon (the binary named by $SIMPLEPUSHD) on free loopback ports with a
temporary config file, finds the bound ports in its "listening public=... internal=..." log
line, and stops it by pid at teardown: SIGTERM, then SIGKILL after a timeout, always reaped.
Every stop and every test's tearDown asserts that the daemon did not crash and that its
stderr holds no sanitizer report (the CI runs this suite against an ASan+UBSan build).

Clients:
* ws_connect(): a websocket-client WebSocket (the real, independent client), plus helpers
  that read frames precisely (text, close codes) without websocket-client's own close
  handling getting in the way.
* RawWS: a tiny RFC 6455 client for what websocket-client will not send (binary frames,
  fragmentation, invalid UTF-8, unmasked frames, reserved opcodes) and for a client that
  does not read or does not answer pings.
* http() / put(): http.client requests; raw_http() sends raw bytes for malformed requests.

Only the standard library and Debian's python3-websocket are used. Run with
/usr/bin/python3. SPD_TIME_SCALE (default 2 for a sanitizer build of the daemon, else 1) stretches every
timeout of the harness and of the tests that use scaled(); .ci/valgrind sets it to 10 and
SPD_VALGRIND=1 (which skips the RSS checks).
"""

import atexit
import base64
from http import client as http_client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import uuid

import websocket

DAEMON = os.environ.get("SIMPLEPUSHD", "")
HOST = "127.0.0.1"
PROTOCOL = "push-notification"


def _is_asan_build():
    try:
        with open(DAEMON, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


# An ASan build runs slower, and its quarantine keeps freed memory resident, so its RSS
# says nothing about leaks (LeakSanitizer does that there).
ASAN_BUILD = _is_asan_build()
# SPD_VALGRIND=1: $SIMPLEPUSHD runs the daemon under valgrind (.ci/valgrind), whose RSS says
# nothing about leaks either (memcheck reports them).
VALGRIND = os.environ.get("SPD_VALGRIND", "") not in ("", "0")
RSS_MEANINGFUL = not (ASAN_BUILD or VALGRIND)
TIME_SCALE = float(os.environ.get("SPD_TIME_SCALE", "") or (2.0 if ASAN_BUILD else 1.0))
KEEP = os.environ.get("SPD_KEEP", "") not in ("", "0")  # keep a failed daemon's directory

SANITIZER_MARKERS = (
    "AddressSanitizer",
    "LeakSanitizer",
    "UndefinedBehaviorSanitizer",
    "ThreadSanitizer",
    "MemorySanitizer",
    "runtime error:",
)

LISTENING_RE = re.compile(r"listening public=(\S+):(\d+) internal=(\S+):(\d+)")
UAID_RE = re.compile(r"^[0-9a-f]{32}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{90}$")
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
TOKEN_LEN = 90

# What every daemon of the suite runs with unless a test overrides it. Pings are not rate
# limited and nothing is re-sent on a timer, so that tests see only what they provoke.
BASE_CONFIG = {
    "server": {"host": HOST, "port": "0", "drain_seconds": "1"},
    "internal": {"host": HOST, "port": "0"},
    "client": {
        "hello_timeout": "30s",
        "min_ping_interval": "0",
        "resend_interval": "0",
        "pong_interval": "300s",
    },
    "log": {"level": "notice"},
}

# SPD_BACKEND=memcached runs every daemon of a test process on one shared memcached of its
# own (the same suite, the other backend); a test that names its own memcache.server keeps it.
BACKEND = os.environ.get("SPD_BACKEND", "memory")

MEMCACHED = os.environ.get("SP_MEMCACHED") or shutil.which("memcached") or "/usr/bin/memcached"


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Memcached:
    """A memcached of the test's own on a free loopback port, ended by pid."""

    def __init__(self):
        if not os.path.exists(MEMCACHED):
            raise AssertionError("memcached is missing (%s): install Debian's memcached"
                                 % MEMCACHED)
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        args = [MEMCACHED, "-l", HOST, "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("memcached did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        if self.proc:
            self.proc.wait()
        self.proc = None

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)



_shared_memcached = None


def with_backend(config):
    """config on the backend SPD_BACKEND names (unless it names a memcached itself)."""
    if BACKEND == "memcached" and not config.get("memcache", {}).get("server"):
        return merge_config(config, {"memcache": {"server": shared_memcached().addr}})
    return config


def shared_memcached():
    global _shared_memcached
    if _shared_memcached is None:
        _shared_memcached = Memcached()
        atexit.register(_shared_memcached.stop)
    return _shared_memcached


OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

MISSING = object()


def scaled(seconds):
    """A timeout stretched by SPD_TIME_SCALE."""
    return seconds * TIME_SCALE


def new_chid(upper=False, dashed=True):
    """A fresh channelID in the requested spelling."""
    s = str(uuid.uuid4()) if dashed else uuid.uuid4().hex
    return s.upper() if upper else s


def new_uaid(upper=False, dashed=False):
    """A fresh, valid uaid that the daemon has never seen."""
    return new_chid(upper=upper, dashed=dashed)


def merge_config(*layers):
    """Merges {"section": {"key": value}} layers; also accepts {"section.key": value}.
    A value of None removes the key."""
    out = {}
    for layer in layers:
        for name, value in (layer or {}).items():
            if isinstance(value, dict):
                sec = out.setdefault(name, {})
                for k, v in value.items():
                    if v is None:
                        sec.pop(k, None)
                    else:
                        sec[k] = str(v)
            else:
                section, _, key = name.partition(".")
                sec = out.setdefault(section, {})
                if value is None:
                    sec.pop(key, None)
                else:
                    sec[key] = str(value)
    return out


def render_config(conf):
    lines = ["# written by the simplepushd e2e harness"]
    for section, keys in conf.items():
        if not keys:
            continue
        lines.append("[%s]" % section)
        for k, v in keys.items():
            lines.append("%s = %s" % (k, v))
        lines.append("")
    return "\n".join(lines) + "\n"


def run_cli(args, timeout=10):
    """Runs the daemon binary with args; returns CompletedProcess (text)."""
    return subprocess.run([DAEMON] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=scaled(timeout))


def _die_with_parent():
    """In the child before exec: SIGKILL it if the test runner dies (CTest timeout), so
    that no daemon outlives its test."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def sanitizer_report(text):
    for m in SANITIZER_MARKERS:
        if m in text:
            return m
    return None


class Daemon:
    """One simplepushd process with its own temporary directory and config file."""

    def __init__(self, config=None, name="spd", raw_config=None, env=None):
        if not DAEMON:
            raise unittest.SkipTest("SIMPLEPUSHD is not set")
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="spd-%s-" % name)
        self.config = with_backend(merge_config(BASE_CONFIG, config))
        self.config_path = os.path.join(self.dir, "config.ini")
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.write_config(raw_config)
        self.proc = None
        self.logf = None
        self.public_port = None
        self.internal_port = None
        self.returncode = None
        self.extra_env = dict(env or {})

    def write_config(self, raw_config=None, config=None):
        if config is not None:
            self.config = with_backend(merge_config(BASE_CONFIG, config))
        text = raw_config if raw_config is not None else render_config(self.config)
        with open(self.config_path, "w") as f:
            f.write(text)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def start(self, timeout=10):
        self.logf = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.update(self.extra_env)
        self.proc = subprocess.Popen([DAEMON, "-c", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf, env=env, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            m = LISTENING_RE.search(self.log())
            if m:
                self.public_port = int(m.group(2))
                self.internal_port = int(m.group(4))
                return self
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._finish()
                self._abandon("%s exited with %s before listening" % (self.name, rc))
            if time.monotonic() > deadline:
                self._kill()
                self._abandon("%s did not log its listening line within %ss"
                              % (self.name, timeout))
            time.sleep(0.02)

    def _abandon(self, why):
        tail = self.log_tail()
        self.returncode = self.proc.returncode
        self.proc = None
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)
        raise AssertionError("%s; log:\n%s" % (why, tail))

    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def check(self):
        """Asserts the daemon still runs and has logged no sanitizer report."""
        if self.proc is None:
            return
        m = sanitizer_report(self.log())
        if m:
            raise AssertionError("%s: sanitizer report (%s) in stderr:\n%s"
                                 % (self.name, m, self.log_tail(120)))
        if self.proc.poll() is not None:
            raise AssertionError("%s died (exit %s); log:\n%s"
                                 % (self.name, self.proc.returncode, self.log_tail()))

    def wait_exit(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.returncode = self.proc.wait()
        self._finish()

    def crash(self):
        """Kills the daemon on purpose (SIGKILL, a node lost), reaps it and checks its log;
        its stop() is then a no-op."""
        self._kill()
        m = sanitizer_report(self.log())
        self.proc = None
        if m:
            raise AssertionError("%s: sanitizer report (%s) in stderr:\n%s"
                                 % (self.name, m, self.log_tail(120)))
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _finish(self):
        if self.logf is not None:
            self.logf.close()
            self.logf = None

    def stop(self, timeout=15):
        """SIGTERM, SIGKILL after timeout, reap; asserts a clean exit and a clean log."""
        if self.proc is None:
            return
        problems = []
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                problems.append("did not exit within %ss of SIGTERM (killed)" % timeout)
                self._kill()
        self.returncode = self.proc.wait()
        self._finish()
        rc = self.returncode
        if rc not in (0, -signal.SIGTERM) and not problems:
            problems.append("exit status %s (expected 0)" % rc)
        m = sanitizer_report(self.log())
        if m:
            problems.append("sanitizer report (%s) in stderr" % m)
        self.proc = None
        log_tail = self.log_tail(150)
        if not (problems and KEEP):
            shutil.rmtree(self.dir, ignore_errors=True)
        if problems:
            raise AssertionError("%s: %s; log%s:\n%s" % (
                self.name, "; ".join(problems),
                " (kept in %s)" % self.log_path if KEEP else "", log_tail))

    # URLs
    def ws_url(self, path="/", scheme="ws"):
        return "%s://%s:%d%s" % (scheme, HOST, self.public_port, path)


# --- WebSocket (websocket-client) -----------------------------------------------------------

class Closed(AssertionError):
    """The server closed the WebSocket while the test expected a message."""

    def __init__(self, code, reason=b""):
        super().__init__("connection closed by server (close code %s, reason %r)"
                         % (code, reason))
        self.code = code
        self.reason = reason


class NoMessage(AssertionError):
    pass


def ws_connect(port, path="/", subprotocol=True, timeout=5, tls=False, header=None):
    """A connected websocket-client WebSocket (socket timeout = timeout, scaled)."""
    scheme = "wss" if tls else "ws"
    url = "%s://%s:%d%s" % (scheme, HOST, port, path)
    opts = {}
    if subprotocol:
        opts["subprotocols"] = [PROTOCOL]
    if header:
        opts["header"] = header
    sslopt = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False} if tls else {}
    return websocket.create_connection(url, timeout=scaled(timeout), sslopt=sslopt, **opts)


def ws_close(ws):
    """Closes politely, never raising, never waiting long."""
    try:
        if ws.connected:
            ws.close(timeout=1)
    except Exception:
        pass
    try:
        ws.shutdown()
    except Exception:
        pass


def _close_code(data):
    if len(data) >= 2:
        return struct.unpack("!H", data[:2])[0], data[2:]
    return None, b""


def _recv_frame(ws, timeout):
    """The next data or close frame as (opcode, payload); answers pings; reassembles."""
    # One deadline for the whole wait: pings answered on the way must not extend it.
    deadline = time.monotonic() + scaled(timeout)
    parts = []
    first_op = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NoMessage("no message within %ss" % timeout)
        ws.settimeout(left)
        try:
            frame = ws.recv_frame()
        except websocket.WebSocketTimeoutException:
            raise NoMessage("no message within %ss" % timeout)
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError) as e:
            raise Closed(None, repr(e).encode())
        if frame is None:
            raise Closed(None)
        op = frame.opcode
        if op == OP_PING:
            try:
                ws.pong(frame.data)
            except Exception:
                pass
            continue
        if op == OP_PONG:
            continue
        if op == OP_CLOSE:
            return op, frame.data
        if op in (OP_TEXT, OP_BINARY):
            first_op = op
            parts = [frame.data]
        elif op == OP_CONT:
            parts.append(frame.data)
        if frame.fin:
            return first_op, b"".join(parts)


def recv_text(ws, timeout=5):
    """The next text message; raises Closed or NoMessage."""
    op, data = _recv_frame(ws, timeout)
    if op == OP_CLOSE:
        code, reason = _close_code(data)
        _after_close(ws, data)
        raise Closed(code, reason)
    if op != OP_TEXT:
        raise AssertionError("server sent a non-text frame (opcode %s): %r" % (op, data[:80]))
    return data.decode("utf-8")


def recv_json(ws, timeout=5):
    text = recv_text(ws, timeout)
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError("server sent invalid JSON: %r" % text[:200])


def send_json(ws, obj):
    ws.send(obj if isinstance(obj, str) else json.dumps(obj))


def _after_close(ws, data):
    try:
        ws.send(data[:2] if len(data) >= 2 else b"", websocket.ABNF.OPCODE_CLOSE)
    except Exception:
        pass
    try:
        ws.shutdown()
    except Exception:
        pass


def expect_close(ws, timeout=5):
    """Reads until the server closes. Returns (close code or None when the TCP connection
    ended without a close frame, [text messages received before it])."""
    msgs = []
    deadline = time.monotonic() + scaled(timeout)
    while True:
        left = (deadline - time.monotonic()) / TIME_SCALE
        if left <= 0:
            raise AssertionError("connection not closed within %ss (got %r)" % (timeout, msgs))
        try:
            op, data = _recv_frame(ws, left)
        except Closed:
            return None, msgs
        except NoMessage:
            raise AssertionError("connection not closed within %ss (got %r)" % (timeout, msgs))
        if op == OP_CLOSE:
            code, _ = _close_code(data)
            _after_close(ws, data)
            return code, msgs
        msgs.append(data.decode("utf-8", "replace") if op == OP_TEXT else data)


def expect_silence(ws, seconds):
    """Asserts that no data frame and no close arrives within seconds."""
    try:
        op, data = _recv_frame(ws, seconds)
    except NoMessage:
        return
    if op == OP_CLOSE:
        raise Closed(_close_code(data)[0])
    raise AssertionError("unexpected message: %r" % data[:300])


def hello(ws, uaid=MISSING, channelIDs=(), message_type="hello", **extra):
    msg = {"messageType": message_type}
    if uaid is not MISSING:
        msg["uaid"] = uaid
    if channelIDs is not MISSING:
        msg["channelIDs"] = list(channelIDs)
    msg.update(extra)
    send_json(ws, msg)
    return recv_json(ws)


def register(ws, chid):
    """Registers chid; asserts the 200 reply; returns the pushEndpoint."""
    send_json(ws, {"messageType": "register", "channelID": chid})
    reply = recv_json(ws)
    if reply.get("status") != 200 or reply.get("messageType") != "register" \
            or reply.get("channelID") != chid or not isinstance(reply.get("pushEndpoint"), str):
        raise AssertionError("register %s failed: %r" % (chid, reply))
    return reply["pushEndpoint"]


def ping(ws, timeout=5):
    """Sends {} and asserts the exact reply {}."""
    ws.send("{}")
    text = recv_text(ws, timeout)
    if text != "{}":
        raise AssertionError("ping answered with %r, expected {}" % text[:300])


def error_echo(request, status, error):
    """The pushgo-style error reply expected for request."""
    exp = dict(request)
    if isinstance(exp.get("messageType"), str):
        exp["messageType"] = exp["messageType"].lower()
    exp["status"] = status
    exp["error"] = error
    return exp


def token_of(endpoint):
    return urllib.parse.urlsplit(endpoint).path.rsplit("/", 1)[-1]


# --- raw RFC 6455 client ------------------------------------------------------------------

class RawWS:
    """A minimal RFC 6455 client over a plain socket. Frames are sent exactly as asked."""

    def __init__(self, port, path="/", subprotocol=True, timeout=5, rcvbuf=None, tls=False):
        self.timeout = scaled(timeout)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(self.timeout)
        s.connect((HOST, port))
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=HOST)
        self.sock = s
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        req = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (HOST, port), "Upgrade: websocket",
               "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if subprotocol:
            req.append("Sec-WebSocket-Protocol: " + PROTOCOL)
        s.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError("handshake: connection closed (%r)" % self.buf[:200])
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise AssertionError("handshake refused: %r" % head[:300])
        import hashlib
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("sec-websocket-accept") != accept:
            raise AssertionError("bad Sec-WebSocket-Accept: %r" % headers)
        self.headers = headers
        self.closed = False

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        if isinstance(payload, str):
            payload = payload.encode()
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if mask:
            key = os.urandom(4)
            full = (key * (n // 4 + 1))[:n]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(full, "big")).to_bytes(
                n, "big") if n else b""
            head += key
        self.sock.sendall(head + payload)

    def send_text(self, payload, fragments=1):
        """Sends a text message, split into the given number of frames."""
        if isinstance(payload, str):
            payload = payload.encode()
        if fragments <= 1:
            self.send_frame(OP_TEXT, payload)
            return
        size = -(-len(payload) // fragments)
        chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        for i, c in enumerate(chunks):
            self.send_frame(OP_TEXT if i == 0 else OP_CONT, c, fin=(i == len(chunks) - 1))

    def send_json(self, obj, fragments=1):
        self.send_text(json.dumps(obj), fragments)

    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoMessage("no frame in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(262144)
            except socket.timeout:
                raise NoMessage("no frame in time")
            except (ConnectionError, OSError):
                chunk = b""
            if not chunk:
                raise Closed(None)
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=5):
        """(fin, opcode, payload); raises Closed(None) on EOF and NoMessage on timeout."""
        deadline = time.monotonic() + scaled(timeout)
        b0, b1 = self._read(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8, deadline))[0]
        if b1 & 0x80:
            raise AssertionError("server sent a masked frame")
        payload = self._read(n, deadline) if n else b""
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_message(self, timeout=5, answer_pings=True):
        """(opcode, payload) of the next data or close message, reassembling fragments."""
        deadline = time.monotonic() + scaled(timeout)
        parts, first = [], None
        while True:
            left = max(0.0, (deadline - time.monotonic()) / TIME_SCALE)
            fin, op, payload = self.recv_frame(left)
            if op == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                return op, payload
            if op in (OP_TEXT, OP_BINARY):
                first, parts = op, [payload]
            else:
                parts.append(payload)
            if fin:
                return first, b"".join(parts)

    def recv_json(self, timeout=5):
        op, payload = self.recv_message(timeout)
        if op == OP_CLOSE:
            raise Closed(_close_code(payload)[0])
        if op != OP_TEXT:
            raise AssertionError("server sent opcode %s" % op)
        return json.loads(payload.decode("utf-8"))

    def expect_close(self, timeout=5, answer_pings=True):
        """(close code or None when the connection ended without a close frame, [messages])."""
        msgs = []
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = (deadline - time.monotonic()) / TIME_SCALE
            if left <= 0:
                raise AssertionError("connection not closed within %ss" % timeout)
            try:
                op, payload = self.recv_message(left, answer_pings)
            except Closed:
                self.close()
                return None, msgs
            except NoMessage:
                raise AssertionError("connection not closed within %ss (got %r)"
                                     % (timeout, msgs))
            if op == OP_CLOSE:
                code, _ = _close_code(payload)
                try:
                    self.send_frame(OP_CLOSE, payload[:2])
                except OSError:
                    pass
                self.close()
                return code, msgs
            msgs.append(payload)

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


# --- HTTP ---------------------------------------------------------------------------------

class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names; repeated headers joined with ", "
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise AssertionError("HTTP %s body is not JSON: %r" % (self.status, self.body[:300]))

    def content_type(self):
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def __repr__(self):
        return "<HTTP %s %r %r>" % (self.status, self.headers, self.body[:200])


def _headers_dict(pairs):
    h = {}
    for k, v in pairs:
        k = k.lower()
        h[k] = h[k] + ", " + v if k in h else v
    return h


def http_connection(port, tls=False, timeout=5):
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return http_client.HTTPSConnection(HOST, port, timeout=scaled(timeout), context=ctx)
    return http_client.HTTPConnection(HOST, port, timeout=scaled(timeout))


def http_request(port, method, path, body=None, headers=None, tls=False, timeout=5, conn=None):
    """One request; returns a Response. Uses conn when given (keep-alive)."""
    own = conn is None
    c = conn or http_connection(port, tls, timeout)
    try:
        if isinstance(body, str):
            body = body.encode()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return Response(r.status, r.reason, _headers_dict(r.getheaders()), data)
    finally:
        if own:
            c.close()


def http_url(method, url, body=None, headers=None, timeout=5, conn=None):
    u = urllib.parse.urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    return http_request(u.port or (443 if u.scheme == "https" else 80), method, path, body,
                        headers, tls=(u.scheme == "https"), timeout=timeout, conn=conn)


FORM = "application/x-www-form-urlencoded"


def put(endpoint, version=None, data=None, query=None, body=None, content_type=FORM,
        headers=None, conn=None):
    """PUT to an endpoint URL. version/data go into a form body unless body is given;
    query is a dict (or a string) added to the URL."""
    url = endpoint
    if query is not None:
        q = query if isinstance(query, str) else urllib.parse.urlencode(query)
        url += ("&" if "?" in url else "?") + q
    if body is None:
        fields = {}
        if version is not None:
            fields["version"] = str(version)
        if data is not None:
            fields["data"] = data
        body = urllib.parse.urlencode(fields) if fields else None
    h = dict(headers or {})
    if body is not None and content_type is not None:
        h["Content-Type"] = content_type
    return http_url("PUT", url, body=body, headers=h, conn=conn)


def raw_http(port, request, timeout=5, tls=False):
    """Sends raw bytes, reads one response. Returns a Response, or None when the server
    closed the connection without answering."""
    s = socket.create_connection((HOST, port), timeout=scaled(timeout))
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname=HOST)
    try:
        try:
            s.sendall(request if isinstance(request, bytes) else request.encode())
        except OSError:
            pass  # refused part-way (closed, reset, or no longer reading): read what came
        return read_http_response(s)
    finally:
        s.close()


def read_http_response(s):
    buf = b""

    def more():
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except socket.timeout:
            raise AssertionError("HTTP response incomplete after timeout: %r" % buf[:300])
        return chunk

    while b"\r\n\r\n" not in buf:
        chunk = more()
        if not chunk:
            if not buf:
                return None
            raise AssertionError("connection closed inside response head: %r" % buf[:300])
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = _headers_dict((ln.partition(":")[0].strip(), ln.partition(":")[2].strip())
                            for ln in lines[1:] if ln)
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            chunk = more()
            if not chunk:
                break
            body += chunk
        body = body[:n]
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        raw = body
        out = b""
        while True:
            while b"\r\n" not in raw:
                chunk = more()
                if not chunk:
                    return Response(status, reason, headers, out)
                raw += chunk
            size_line, raw = raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(raw) < size + 2:
                chunk = more()
                if not chunk:
                    break
                raw += chunk
            if size == 0:
                break
            out += raw[:size]
            raw = raw[size + 2:]
        body = out
    elif status not in (101, 204, 304) and not 100 <= status < 200:
        while True:
            chunk = more()
            if not chunk:
                break
            body += chunk
    return Response(status, reason, headers, body)


# --- test case base -----------------------------------------------------------------------

class DaemonCase(unittest.TestCase):
    """A TestCase with a daemon per class (PER_TEST = False) or per test (True), config
    overrides in CONFIG, and helpers that clean up after themselves."""

    CONFIG = {}
    PER_TEST = False
    daemon = None

    @classmethod
    def setUpClass(cls):
        if not cls.PER_TEST:
            cls.daemon = Daemon(cls.CONFIG, name=cls.__name__)
            cls.daemon.start()

    @classmethod
    def tearDownClass(cls):
        d, cls.daemon = cls.daemon, None
        if d is not None and not cls.PER_TEST:
            d.stop()

    def setUp(self):
        if self.PER_TEST:
            self.daemon = Daemon(self.CONFIG, name="%s.%s" % (type(self).__name__,
                                                              self._testMethodName))
            self.addCleanup(self.daemon.stop)
            self.daemon.start()

    def tearDown(self):
        if self.daemon is not None:
            self.daemon.check()

    # clients
    @property
    def port(self):
        return self.daemon.public_port

    def ws(self, path="/", subprotocol=True, timeout=5, **kw):
        ws = ws_connect(self.daemon.public_port, path, subprotocol, timeout, **kw)
        self.addCleanup(ws_close, ws)
        return ws

    def raw_ws(self, path="/", subprotocol=True, timeout=5, **kw):
        r = RawWS(self.daemon.public_port, path, subprotocol, timeout, **kw)
        self.addCleanup(r.close)
        return r

    def http(self, method, path, body=None, headers=None, internal=False, **kw):
        port = self.daemon.internal_port if internal else self.daemon.public_port
        return http_request(port, method, path, body, headers, **kw)

    def raw_http(self, request, internal=False, **kw):
        port = self.daemon.internal_port if internal else self.daemon.public_port
        return raw_http(port, request, **kw)

    def device(self, channels=0, uaid=MISSING, upper=False):
        d = Device(self, uaid=uaid)
        for _ in range(channels):
            d.register(new_chid(upper=upper))
        return d

    # assertions
    def assertJSONResponse(self, r, status, body=MISSING):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.content_type(), "application/json", r)
        got = r.json()
        if body is not MISSING:
            self.assertEqual(got, body, r)
        return got

    def assertError(self, r, status, error=MISSING):
        got = self.assertJSONResponse(r, status)
        self.assertIsInstance(got, dict, r)
        self.assertEqual(got.get("status"), status, r)
        self.assertIsInstance(got.get("error"), str, r)
        if error is not MISSING:
            self.assertEqual(got, {"status": status, "error": error}, r)
        return got

    def assertErrorClose(self, ws, request, status, error, code=1000):
        """Sends request, asserts the echoed error reply and then close with code."""
        send_json(ws, request)
        reply = recv_json(ws)
        self.assertEqual(reply, error_echo(request, status, error))
        got, msgs = expect_close(ws)
        self.assertEqual(msgs, [], "messages after the error reply")
        self.assertEqual(got, code, "close code after error reply to %r" % (request,))

    def assertNow(self, version, t0, t1):
        self.assertIsInstance(version, int)
        self.assertEqual(len(str(version)), 10, version)
        self.assertGreaterEqual(version, int(t0) - 1)
        self.assertLessEqual(version, int(t1) + 1)


class HealthyDeviceCase(DaemonCase):
    """A DaemonCase whose daemon keeps one healthy device connected for the class: after
    every test it must still answer a ping and take (and ack) a notification, so a test of
    bad input shows it left the daemon and its other connections untouched."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.healthy_ws = ws_connect(cls.daemon.public_port, timeout=10)
            reply = hello(cls.healthy_ws, channelIDs=[])
            assert reply.get("status") == 200, reply
            cls.healthy_uaid = reply["uaid"]
            cls.healthy_chid = new_chid()
            cls.healthy_endpoint = register(cls.healthy_ws, cls.healthy_chid)
            cls.healthy_version = 0
        except BaseException:
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        ws_close(cls.healthy_ws)
        super().tearDownClass()

    def tearDown(self):
        super().tearDown()
        self.assertHealthy()

    def assertHealthy(self):
        ws = type(self).healthy_ws
        ping(ws)
        type(self).healthy_version += 1
        v = type(self).healthy_version
        self.assertJSONResponse(put(self.healthy_endpoint, version=v), 200, {})
        msg = recv_json(ws)
        self.assertEqual(msg, {"messageType": "notification",
                               "updates": [{"channelID": self.healthy_chid, "version": v}]})
        send_json(ws, {"messageType": "ack", "updates": msg["updates"]})
        ping(ws)


def read_until_closed(s):
    """Everything a raw socket receives until the peer closes (or resets) it."""
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


class Device:
    """A device: one socket at a time, a uaid, registered channels and their endpoints."""

    def __init__(self, case, uaid=MISSING, connect=True):
        self.case = case
        self.uaid = None if uaid is MISSING else uaid
        self.endpoints = {}
        self.ws = None
        if connect:
            reply = self.connect(uaid)
            case.assertEqual(reply.get("status"), 200, reply)
            if uaid not in (MISSING, None):
                case.assertEqual(reply.get("uaid"), uaid, reply)

    def connect(self, uaid=MISSING, channelIDs=None):
        """Opens a new socket and says hello (uaid defaults to the current one); returns
        the hello reply and adopts the uaid it names."""
        self.disconnect()
        self.ws = self.case.ws()
        if uaid is MISSING and self.uaid is not None:
            uaid = self.uaid
        chids = list(self.endpoints) if channelIDs is None else channelIDs
        reply = hello(self.ws, uaid, chids)
        if reply.get("status") == 200 and isinstance(reply.get("uaid"), str):
            self.uaid = reply["uaid"]
        return reply

    def reconnect(self, channelIDs=None):
        """Reconnects with the same uaid; asserts it was kept."""
        reply = self.connect(self.uaid, channelIDs)
        self.case.assertEqual(reply, {"messageType": "hello", "status": 200,
                                      "uaid": self.uaid})
        return reply

    def disconnect(self):
        """Closes the socket (close handshake) and gives the daemon a moment to forget it."""
        if self.ws is not None:
            ws_close(self.ws)
            self.ws = None
            time.sleep(0.05)

    def register(self, chid=None):
        chid = chid or new_chid()
        ep = register(self.ws, chid)
        self.endpoints[chid] = ep
        return chid

    def unregister(self, chid):
        send_json(self.ws, {"messageType": "unregister", "channelID": chid})
        reply = recv_json(self.ws)
        self.case.assertEqual(reply, {"messageType": "unregister", "channelID": chid,
                                      "status": 200})
        self.endpoints.pop(chid, None)

    def recv(self, timeout=5):
        return recv_json(self.ws, timeout)

    def notification(self, timeout=5):
        """The updates of the next message, which must be a notification."""
        msg = self.recv(timeout)
        self.case.assertEqual(msg.get("messageType"), "notification", msg)
        self.case.assertEqual(set(msg), {"messageType", "updates"}, msg)
        updates = msg["updates"]
        self.case.assertIsInstance(updates, list, msg)
        self.case.assertTrue(updates, "empty updates: %r" % msg)
        return updates

    def ack(self, updates):
        send_json(self.ws, {"messageType": "ack", "updates": [
            {"channelID": u["channelID"], "version": u["version"]} for u in updates]})

    def ping(self):
        ping(self.ws)

    def expect_nothing_pending(self):
        """The next message after a ping is its {} reply: no notification was queued."""
        self.ws.send("{}")
        text = recv_text(self.ws)
        self.case.assertEqual(text, "{}", "expected no notification")

    def put(self, chid, **kw):
        return put(self.endpoints[chid], **kw)


def http(method, url, body=None, headers=None, timeout=5):
    """(status, headers, body) of one request to a full URL."""
    r = http_url(method, url, body=body, headers=headers, timeout=timeout)
    return r.status, r.headers, r.body
