"""
The gate (hardening issue; docs/security.md "Request heads"): the daemon's own listeners
check each connection's first request head before libwebsockets parses it, answer a bad one
with a JSON error, cap the connections whose head is still coming (server.max_handshakes),
and bind exactly the configured address. Also the libwebsockets 4.1.6 holes found on the
way: Host headers that name the other vhost, and listeners bound to every address.
"""
import json
import re
import signal
import socket
import time
import unittest

import spd
from spd import recv_json, send_json

WS_HEAD = ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Protocol: push-notification\r\n\r\n").encode()


def metrics(daemon):
    r = spd.http_request(daemon.internal_port, "GET", "/metrics")
    assert r.status == 200, r
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def read_all(s, timeout=5):
    """Everything the server sends until it closes (or the timeout)."""
    s.settimeout(spd.scaled(timeout))
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        except socket.timeout:
            raise AssertionError("connection still open after %ss; got %r" % (timeout, out[:300]))
        if not chunk:
            break
        out += chunk
    return out


def responses(data):
    """The (status, body) of every complete HTTP response in data."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^content-length: *(\d+)", head)
        n = int(m.group(1)) if m else 0
        out.append((status, rest[:n]))
        data = rest[n:]
    return out


class GateCase(spd.HealthyDeviceCase):
    """The healthy device of spd.HealthyDeviceCase is checked after every test."""

    def token_path(self):
        return "/update/" + spd.token_of(self.healthy_endpoint)


class TestHeadFilter(GateCase):

    def test_1mb_header_is_431_json(self):
        for name in ("X-Big", "Cookie"):
            with self.subTest(header=name):
                r = self.raw_http(b"GET /status/ HTTP/1.1\r\nHost: x\r\n" + name.encode() +
                                  b": " + b"a" * (1024 * 1024) + b"\r\n\r\n", timeout=10)
                self.assertIsNotNone(r, "closed without an answer")
                self.assertError(r, 431, "Request Header Fields Too Large")
                self.assertEqual(r.headers.get("connection"), "close", r)

    def test_huge_request_line_is_414_json(self):
        r = self.raw_http(b"PUT /update/" + b"A" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIsNotNone(r)
        self.assertError(r, 414, "URI Too Long")

    def test_http2_preface_is_505_json(self):
        r = self.raw_http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        self.assertIsNotNone(r)
        self.assertError(r, 505, "HTTP Version Not Supported")

    def test_methods_lws_would_act_on_are_405(self):
        for line in ("CONNECT / HTTP/1.1", "TRACE / HTTP/1.1", "get / HTTP/1.1"):
            with self.subTest(line=line):
                r = self.raw_http((line + "\r\nHost: x\r\n\r\n").encode())
                self.assertIsNotNone(r)
                self.assertError(r, 405, "Method Not Allowed")

    def test_tls_to_the_plain_port_is_refused(self):
        # A TLS ClientHello's first byte is a control byte: refused at once, not waited for.
        r = self.raw_http(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32)
        self.assertIsNotNone(r)
        self.assertError(r, 400, "Bad Request")

    def test_smuggling_shapes_are_400(self):
        path = self.token_path()
        for extra in ("Content-Length: 9\r\nTransfer-Encoding: chunked\r\n",
                      "Content-Length: 9\r\nContent-Length: 9\r\n",
                      "Content-Length : 9\r\n", "Host: y\r\nContent-Length: 9\r\n",
                      "X-A: 1\r\n Content-Length: 9\r\n"):
            with self.subTest(extra=extra):
                r = self.raw_http(("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%s\r\n"
                                   "version=9" % (path, spd.FORM, extra)).encode())
                self.assertIsNotNone(r)
                self.assertError(r, 400)
        spd.expect_silence(self.healthy_ws, 0.2)

    def test_internal_listener_is_filtered_too(self):
        cases = ((b"GET /metrics HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", 400),
                 (b"GARBAGE\r\n\r\n", 400), (b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n", 505))
        for req, status in cases:
            with self.subTest(req=req[:20]):
                r = self.raw_http(req, internal=True)
                self.assertIsNotNone(r)
                self.assertError(r, status)

    def test_refusals_are_counted(self):
        before = metrics(self.daemon)
        self.assertError(self.raw_http(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n"), 400)
        self.assertError(self.raw_http(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505)
        self.assertError(self.raw_http(b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n"), 405)
        after = metrics(self.daemon)
        for status in ("400", "405", "505"):
            name = 'simplepushd_bad_requests_total{status="%s"}' % status
            self.assertEqual(after[name] - before[name], 1, name)
        self.assertEqual(after["simplepushd_handshakes"], 0)

    def test_head_in_pieces_is_served(self):
        # The slow path: the head comes in several reads, with pauses between them.
        s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
        self.addCleanup(s.close)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(WS_HEAD), 40):
            s.sendall(WS_HEAD[i:i + 40])
            time.sleep(0.05)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            self.assertTrue(chunk, "closed during the handshake: %r" % head)
            head += chunk
        self.assertIn(b" 101 ", head.split(b"\r\n")[0])

        # A PUT whose head and body come apart.
        path = self.token_path()
        type(self).healthy_version += 1
        v = type(self).healthy_version
        body = "version=%d" % v
        req = ("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
               "Connection: close\r\n\r\n" % (path, spd.FORM, len(body))).encode()
        p = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
        self.addCleanup(p.close)
        p.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        p.sendall(req[:30])
        time.sleep(0.1)
        p.sendall(req[30:])
        time.sleep(0.1)
        p.sendall(body.encode())
        self.assertEqual(responses(read_all(p)), [(200, b"{}")])
        msg = recv_json(self.healthy_ws)
        self.assertEqual(msg["updates"], [{"channelID": self.healthy_chid, "version": v}])
        send_json(self.healthy_ws, {"messageType": "ack", "updates": msg["updates"]})

    def test_head_in_too_many_pieces_is_408(self):
        # Each peek of an incomplete head starts from its first byte, so the pieces are
        # capped (64): a head trickled a byte at a time is refused long before the 10 s.
        s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(10))
        self.addCleanup(s.close)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 400 + b"\r\n\r\n"
        got = b""
        s.settimeout(0.01)
        for b in req:
            try:
                s.sendall(bytes([b]))
            except OSError:
                break
            time.sleep(0.01)
            try:
                chunk = s.recv(4096)
                got += chunk
                if not chunk:
                    break
            except socket.timeout:
                pass
            except OSError:
                break
        s.settimeout(spd.scaled(5))
        try:
            got += read_all(s)
        except OSError:
            pass
        self.assertEqual([r[0] for r in responses(got)], [408], got[:300])
        self.assertEqual(json.loads(responses(got)[0][1]),
                         {"status": 408, "error": "Request Timeout"})


class TestVhosts(GateCase):
    def test_host_header_does_not_switch_listener(self):
        # lws moves a request to the vhost its Host header names among those of the same
        # listen port: the public listener must not serve the internal vhost, nor the
        # reverse.
        for host in ("internal", "internal:%d" % self.daemon.internal_port):
            with self.subTest(host=host):
                r = self.http("GET", "/metrics", headers={"Host": host})
                self.assertError(r, 404)
        r = self.http("GET", "/status/", headers={"Host": "public"}, internal=True)
        self.assertError(r, 404)
        r = self.http("GET", "/metrics", headers={"Host": "public"}, internal=True)
        self.assertEqual(r.status, 200, r)


class TestBind(spd.DaemonCase):
    """host = 127.0.0.1 binds 127.0.0.1 only (lws 4.1.6 bound every address: its IPv6
    listener took an IPv4 address as "any")."""

    def test_listeners_bind_the_configured_address_only(self):
        for port in (self.daemon.public_port, self.daemon.internal_port):
            with self.subTest(port=port):
                with self.assertRaises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.2", port), timeout=2).close()
                socket.create_connection((spd.HOST, port), timeout=2).close()


class TestHandshakeCap(spd.DaemonCase):
    PER_TEST = True
    CONFIG = {"server": {"max_handshakes": "5"}}

    def wait_handshakes(self, n):
        deadline = time.monotonic() + spd.scaled(5)
        while True:
            got = metrics(self.daemon)["simplepushd_handshakes"]
            if got == n:
                return
            if time.monotonic() > deadline:
                self.fail("simplepushd_handshakes is %s, expected %s" % (got, n))
            time.sleep(0.05)

    def test_extra_handshakes_refused_devices_unaffected(self):
        devices = [self.device(channels=1) for _ in range(2)]
        # An app server's kept-alive connection, established before the flood.
        conn = spd.http_connection(self.port)
        self.addCleanup(conn.close)
        for d in devices:
            chid = next(iter(d.endpoints))
            self.assertJSONResponse(spd.put(d.endpoints[chid], version=1, conn=conn), 200, {})
            self.assertEqual(d.notification(), [{"channelID": chid, "version": 1}])
        half = []
        for i in range(5):
            s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
            self.addCleanup(s.close)
            s.sendall(WS_HEAD[:20 + i])
            half.append(s)
        self.wait_handshakes(5)

        # Beyond the cap: a 503 at once, and the connection closed.
        before = metrics(self.daemon)["simplepushd_handshakes_refused_total"]
        for _ in range(3):
            s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
            self.addCleanup(s.close)
            got = responses(read_all(s))
            self.assertEqual(len(got), 1, got)
            self.assertEqual(got[0][0], 503)
            self.assertEqual(json.loads(got[0][1]), {"status": 503, "error": "Service Unavailable"})
        after = metrics(self.daemon)
        self.assertEqual(after["simplepushd_handshakes_refused_total"] - before, 3)
        self.assertEqual(after["simplepushd_handshakes"], 5)

        # Established devices and connections keep working meanwhile.
        for d in devices:
            d.ping()
            chid = next(iter(d.endpoints))
            self.assertJSONResponse(spd.put(d.endpoints[chid], version=4, conn=conn), 200, {})
            self.assertEqual(d.notification(), [{"channelID": chid, "version": 4}])

        # The half-finished handshakes complete (they were only waiting for their heads).
        for s in half[:2]:
            idx = half.index(s)
            s.sendall(WS_HEAD[20 + idx:])
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                self.assertTrue(chunk, head)
                head += chunk
            self.assertIn(b" 101 ", head.split(b"\r\n")[0])
        # The others give up; then new devices are admitted again.
        for s in half[2:]:
            s.close()
        self.wait_handshakes(0)
        self.device().ping()

    def test_sighup_applies_max_handshakes(self):
        self.daemon.write_config(config={"server": {"max_handshakes": "1"}})
        self.daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + spd.scaled(5)
        while "reload: server.max_handshakes changed" not in self.daemon.log():
            self.assertLess(time.monotonic(), deadline, "reload not logged")
            time.sleep(0.05)
        s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
        self.addCleanup(s.close)
        s.sendall(WS_HEAD[:10])
        self.wait_handshakes(1)
        t = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
        self.addCleanup(t.close)
        self.assertEqual([status for status, _ in responses(read_all(t))], [503])


if __name__ == "__main__":
    unittest.main()
