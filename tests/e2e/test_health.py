"""
Health, status, version and metrics routes (SPEC §1, §12), unknown paths, and the SIGTERM
drain (§12, close code 1001).
"""

import re
import signal
import threading
import time
import unittest

import spd
from spd import expect_close, hello

NOT_FOUND = {"status": 404, "error": "Not Found"}


class TestHealth(spd.DaemonCase):

    def status(self, path="/status/"):
        r = self.http("GET", path)
        body = self.assertJSONResponse(r, 200)
        self.assertEqual(set(body), {"status", "clients", "version"}, body)
        self.assertEqual(body["status"], "OK")
        self.assertIsInstance(body["clients"], int)
        self.assertIsInstance(body["version"], str)
        self.assertTrue(body["version"])
        return body

    def wait_clients(self, n, timeout=3):
        deadline = time.monotonic() + spd.scaled(timeout)
        while True:
            got = self.status()["clients"]
            if got == n or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def test_status_both_spellings(self):
        self.assertEqual(self.status("/status/"), self.status("/status"))

    def test_status_counts_clients(self):
        base = self.wait_clients(0)
        d1, d2 = self.device(), self.device()
        self.assertEqual(self.wait_clients(base + 2), base + 2)
        d1.disconnect()
        d2.disconnect()
        self.assertEqual(self.wait_clients(base), base)

    def test_lbheartbeat(self):
        self.assertJSONResponse(self.http("GET", "/__lbheartbeat__"), 200, {})

    def test_heartbeat(self):
        self.assertJSONResponse(self.http("GET", "/__heartbeat__"), 200,
                                {"status": "ok", "storage": "ok"})

    def test_internal_heartbeat(self):
        self.assertJSONResponse(self.http("GET", "/__heartbeat__", internal=True), 200,
                                {"status": "ok", "storage": "ok"})

    def test_version(self):
        body = self.assertJSONResponse(self.http("GET", "/__version__"), 200)
        self.assertEqual(set(body), {"version", "commit", "source"}, body)
        for k in ("version", "commit", "source"):
            self.assertIsInstance(body[k], str, body)
            self.assertTrue(body[k], body)
        self.assertEqual(body["version"], self.status()["version"])

    def test_internal_metrics_prometheus_text(self):
        r = self.http("GET", "/metrics", internal=True)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.content_type(), "text/plain", r)
        text = r.body.decode("utf-8")
        samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        self.assertTrue(samples, text[:500])
        for ln in samples:
            self.assertRegex(ln, r"^[A-Za-z_:][A-Za-z0-9_:]*(\{[^}]*\})? "
                                 r"[-+]?([0-9.]+([eE][-+]?[0-9]+)?|Inf|NaN)( [0-9]+)?$")
        for ln in text.splitlines():
            if ln.startswith("# TYPE "):
                self.assertIn(ln.split()[3], ("counter", "gauge", "histogram"), ln)

    def metrics(self):
        r = self.http("GET", "/metrics", internal=True)
        self.assertEqual(r.status, 200, r)
        values = {}
        for ln in r.body.decode().splitlines():
            if ln and not ln.startswith("#"):
                name, value = ln.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def test_metrics_move_with_traffic(self):
        before = self.metrics()
        d = self.device()
        chid = d.register()
        self.assertJSONResponse(d.put(chid, version=7), 200, {})
        d.ack(d.notification())
        d.ping()
        d.disconnect()
        self.assertJSONResponse(spd.put(d.endpoints[chid], version=8), 202, {})
        self.assertError(spd.put(d.endpoints[chid][:-3] + "AAA", version=9), 404)
        after = self.metrics()

        def delta(name):
            return after.get(name, 0) - before.get(name, 0)
        self.assertEqual(delta("simplepushd_hellos_total"), 1)
        self.assertEqual(delta("simplepushd_registers_total"), 1)
        self.assertEqual(delta("simplepushd_acks_total"), 1)
        self.assertEqual(delta("simplepushd_pings_total"), 1)
        self.assertEqual(delta("simplepushd_notifications_total"), 1)
        self.assertEqual(delta('simplepushd_puts_total{status="200"}'), 1)
        self.assertEqual(delta('simplepushd_puts_total{status="202"}'), 1)
        self.assertEqual(delta('simplepushd_puts_total{status="404"}'), 1)
        self.assertEqual(delta('simplepushd_store_requests_total{op="update",status="ok"}'), 2)
        self.assertGreaterEqual(delta("simplepushd_store_latency_seconds_count"), 5)
        self.assertEqual(after["simplepushd_connections"], 0)
        self.assertEqual(after['simplepushd_store_latency_seconds_bucket{le="+Inf"}'],
                         after["simplepushd_store_latency_seconds_count"])

    def test_metrics_not_public(self):
        self.assertJSONResponse(self.http("GET", "/metrics"), 404, NOT_FOUND)

    def test_unknown_paths_404(self):
        for internal in (False, True):
            for method, path in (("GET", "/nope"), ("GET", "/__nope__"), ("POST", "/nope"),
                                 ("GET", "/favicon.ico"), ("GET", "/a/b/c"),
                                 ("DELETE", "/x"), ("GET", "/__heartbeat__x")):
                with self.subTest(internal=internal, method=method, path=path):
                    r = self.http(method, path, internal=internal)
                    self.assertJSONResponse(r, 404, NOT_FOUND)

    def test_internal_port_does_not_serve_public_routes(self):
        r = self.http("PUT", "/update/" + "A" * spd.TOKEN_LEN, body="version=1",
                      headers={"Content-Type": spd.FORM}, internal=True)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.content_type(), "application/json", r)

    def test_health_paths_other_methods_405(self):
        # SPEC is silent; docs/protocol.md: 405 with Allow: GET.
        for path in ("/status/", "/__lbheartbeat__", "/__heartbeat__", "/__version__"):
            with self.subTest(path=path):
                r = self.http("POST", path, body="x=1")
                self.assertError(r, 405)
                self.assertEqual(r.headers.get("allow"), "GET", r)

    def test_internal_port_refuses_websocket(self):
        with self.assertRaises(Exception):
            ws = spd.ws_connect(self.daemon.internal_port, timeout=3)
            self.addCleanup(spd.ws_close, ws)
            self.assertEqual(spd.hello(ws, channelIDs=[])["status"], 200)

    def test_plain_get_root_is_json(self):
        r = self.http("GET", "/")
        self.assertGreaterEqual(r.status, 400, r)
        self.assertEqual(r.content_type(), "application/json", r)
        self.assertIsInstance(r.json(), dict)

    def test_keep_alive(self):
        conn = spd.http_connection(self.port)
        self.addCleanup(conn.close)
        for path in ("/status/", "/__lbheartbeat__", "/__heartbeat__", "/nope", "/status"):
            with self.subTest(path=path):
                r = spd.http_request(self.port, "GET", path, conn=conn)
                self.assertIn(r.status, (200, 404), r)
                self.assertEqual(r.content_type(), "application/json", r)


class TestDrain(spd.DaemonCase):
    PER_TEST = True
    CONFIG = {"server": {"drain_seconds": "2"}}

    def tearDown(self):
        # These tests end the daemon on purpose: reap it and check its exit and its log.
        self.daemon.stop()

    def test_sigterm_drains_devices_with_1001_and_exits_0(self):
        devices = [self.device() for _ in range(4)]
        t0 = time.monotonic()
        self.daemon.signal(signal.SIGTERM)
        time.sleep(0.05)
        # While draining, the load balancer must be told to go away.
        for path in ("/__lbheartbeat__", "/status/"):
            try:
                r = self.http("GET", path)
            except OSError:
                continue  # already gone
            self.assertEqual(r.status, 503, (path, r))
            self.assertEqual(r.content_type(), "application/json", r)
        for d in devices:
            code, msgs = expect_close(d.ws, timeout=6)
            self.assertEqual(code, 1001, msgs)
        rc = self.daemon.wait_exit(8)
        self.assertEqual(rc, 0, "exit status after SIGTERM drain")
        self.assertLess(time.monotonic() - t0, spd.scaled(8))
        self.daemon.stop()

    def test_sigterm_spreads_closes_over_drain_seconds(self):
        # drain_seconds = 2: twenty devices are closed in rounds across the window, not at
        # once, so that they reconnect elsewhere gradually (the bounds are coarse on purpose).
        devices = [self.device() for _ in range(20)]
        t0 = time.monotonic()
        self.daemon.signal(signal.SIGTERM)
        results = []

        def wait_close(d):
            code, msgs = expect_close(d.ws, timeout=8)
            results.append((code, time.monotonic() - t0, msgs))

        threads = [threading.Thread(target=wait_close, args=(d,)) for d in devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([r[0] for r in results], [1001] * len(devices), results)
        times = [r[1] for r in results]
        self.assertGreater(max(times) - min(times), 1.0, times)
        self.assertLess(max(times), spd.scaled(4), times)
        self.assertEqual(self.daemon.wait_exit(8), 0)
        self.daemon.stop()

    def test_sigterm_stops_accepting_devices(self):
        keep = self.device()
        self.daemon.signal(signal.SIGTERM)
        time.sleep(0.1)
        try:
            ws = spd.ws_connect(self.port, timeout=3)
        except Exception:
            ws = None  # refused at the handshake or the listener is closed: fine
        if ws is not None:
            self.addCleanup(spd.ws_close, ws)
            try:
                spd.send_json(ws, {"messageType": "hello", "channelIDs": []})
                code, msgs = expect_close(ws, timeout=4)
            except OSError:
                code, msgs = None, []
            for m in msgs:
                self.assertNotIn('"status":200', m.replace(" ", ""), "hello served while draining")
        code, _ = expect_close(keep.ws, timeout=6)
        self.assertEqual(code, 1001)
        self.assertEqual(self.daemon.wait_exit(8), 0)
        self.daemon.stop()

    def test_sigterm_idle_exits_0_quickly(self):
        t0 = time.monotonic()
        self.daemon.signal(signal.SIGTERM)
        self.assertEqual(self.daemon.wait_exit(5), 0)
        self.assertLess(time.monotonic() - t0, spd.scaled(4))
        self.daemon.stop()


if __name__ == "__main__":
    unittest.main()
