"""
Resource abuse (hardening issue): slowloris on the HTTP and WebSocket handshakes, 10,000
connect/disconnect cycles with flat memory, and a PUT flood on one channel with flat memory
(only the latest version is kept). Memory bounds are generous: they catch leaks that grow
with the number of events, not allocator noise.
"""
import json
import socket
import time
import unittest

import spd


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class TestSlowloris(spd.DaemonCase):
    def trickle(self, request):
        """Sends request one byte every 0.5 s; returns seconds until the daemon hangs up."""
        s = socket.create_connection((spd.HOST, self.port), timeout=1)
        self.addCleanup(s.close)
        t0 = time.monotonic()
        for b in request:
            try:
                s.sendall(bytes([b]))
            except OSError:
                return time.monotonic() - t0
            try:
                if s.recv(4096) == b"":
                    return time.monotonic() - t0
            except socket.timeout:
                pass
            except OSError:
                return time.monotonic() - t0
            if time.monotonic() - t0 > spd.scaled(30):
                break
        self.fail("a trickled request head was never cut off")

    def test_http_head_trickled_is_cut(self):
        req = b"PUT /update/x HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
        took = self.trickle(req)
        self.assertLess(took, spd.scaled(25))
        self.healthy()

    def test_ws_handshake_trickled_is_cut(self):
        req = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n")
        took = self.trickle(req)
        self.assertLess(took, spd.scaled(25))
        self.healthy()

    def healthy(self):
        d = self.device()
        d.ping()


class TestChurn(spd.DaemonCase):
    def test_10000_connect_disconnect_cycles_keep_rss_flat(self):
        pid = self.daemon.pid()

        def cycles(n):
            for i in range(n):
                ws = spd.ws_connect(self.port)
                if i % 2:
                    spd.send_json(ws, {"messageType": "hello", "channelIDs": []})
                    spd.recv_json(ws)
                ws.close()

        cycles(1000)  # warm up allocator pools and lws's tables
        time.sleep(0.5)
        before = rss_kb(pid)
        cycles(9000)
        time.sleep(1)
        after = rss_kb(pid)
        # A leak of even 100 bytes a cycle would add ~880 KiB; allow a little noise. (Under
        # ASan freed memory stays in quarantine: LeakSanitizer checks leaks there instead,
        # and memcheck under valgrind.)
        if spd.RSS_MEANINGFUL:
            self.assertLess(after - before, 2048, "RSS grew from %d to %d KiB" % (before, after))
        d = self.device()
        d.ping()


class TestPutFlood(spd.DaemonCase):
    def test_one_channel_flood_keeps_latest_and_memory_flat(self):
        d = self.device()
        chid = d.register()
        d.disconnect()  # offline: every update is stored, replacing the last
        ep = d.endpoints[chid]
        u = spd.urllib.parse.urlsplit(ep)
        conn = spd.http_connection(u.port, False, 5)
        self.addCleanup(conn.close)

        def flood(first, n):
            for v in range(first, first + n):
                r = spd.http_request(u.port, "PUT", u.path, body="version=%d&data=%s"
                                     % (v, "x" * 1000),
                                     headers={"Content-Type": spd.FORM}, conn=conn)
                self.assertEqual(r.status, 202, r)

        pid = self.daemon.pid()
        flood(1, 500)
        before = rss_kb(pid)
        flood(501, 4500)
        after = rss_kb(pid)
        if spd.RSS_MEANINGFUL:
            self.assertLess(after - before, 2048, "RSS grew from %d to %d KiB" % (before, after))
        d.reconnect()
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 5000,
                                             "data": "x" * 1000}])


if __name__ == "__main__":
    unittest.main()
