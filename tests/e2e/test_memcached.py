"""
The daemon on the memcached backend (SPEC §9): the whole device/app-server round trip
through a real memcached, state shared by two daemons on one memcached, and memcached hung
(SIGSTOP) or killed and restarted while devices stay connected: PUT answers 503 with
Retry-After fast (the circuit breaker, no multi-second stall), /__heartbeat__ says 503,
/__lbheartbeat__ stays 200, devices keep pinging, and service resumes by itself.
"""
import os
import signal
import time
import unittest

import spd

class MemcachedCase(spd.DaemonCase):
    PER_TEST = True

    def setUp(self):
        self.mc = spd.Memcached()
        self.addCleanup(self.mc.stop)
        self.CONFIG = {"memcache": {"server": self.mc.addr},
                       "endpoint": {"token_keys": KEY}}
        super().setUp()


KEY = "ZmFrZS1rZXktZm9yLXRlc3RzLW9ubHktMzItYnl0ZXM"  # 32 bytes, base64url


class TestMemcachedBackend(MemcachedCase):
    def test_round_trip_and_offline_delivery(self):
        d = self.device()
        chid = d.register()
        self.assertJSONResponse(d.put(chid, version=5, data="hi"), 200, {})
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 5, "data": "hi"}])
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=6), 202, {})
        d.reconnect()
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 6}])

    def test_state_is_shared_by_two_daemons(self):
        other = spd.Daemon(self.CONFIG, name=self.id() + ".b").start()
        self.addCleanup(other.stop)
        d = self.device()
        chid = d.register()
        d.disconnect()
        # An update arriving at the other node is stored in memcached ...
        ep_b = d.endpoints[chid].replace(":%d/" % self.port, ":%d/" % other.public_port)
        self.assertJSONResponse(spd.put(ep_b, version=9), 202, {})
        # ... and reaches the device when it comes back, here.
        d.reconnect()
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 9}])

    def test_health_says_ok(self):
        self.assertJSONResponse(self.http("GET", "/__heartbeat__"), 200,
                                {"status": "ok", "storage": "ok"})


class TestMemcachedFailure(MemcachedCase):
    def put_timed(self, endpoint, version):
        t0 = time.monotonic()
        r = spd.put(endpoint, version=version)
        return r, time.monotonic() - t0

    def test_hung_memcached_fails_fast_and_recovers(self):
        d = self.device()
        chid = d.register()
        os.kill(self.mc.proc.pid, signal.SIGSTOP)
        try:
            statuses = []
            for v in range(1, 9):
                r, took = self.put_timed(d.endpoints[chid], v)
                statuses.append(r.status)
                self.assertEqual(r.status, 503, r)
                self.assertEqual(r.content_type(), "application/json", r)
                self.assertGreaterEqual(int(r.headers.get("retry-after", "0")), 1, r.headers)
                self.assertLess(took, spd.scaled(2), "a PUT stalled %.2fs" % took)
            # Devices keep their sockets and their pings.
            d.ping()
            self.assertJSONResponse(self.http("GET", "/__lbheartbeat__"), 200, {})
            r = self.http("GET", "/__heartbeat__")
            self.assertEqual(r.status, 503, r)
            # A hello needs storage: 503 and close.
            ws = self.ws()
            reply = spd.hello(ws)
            self.assertEqual(reply.get("status"), 503, reply)
            spd.ws_close(ws)
        finally:
            os.kill(self.mc.proc.pid, signal.SIGCONT)
        # Service resumes by itself (the breaker lets a probe through within seconds).
        deadline = time.monotonic() + spd.scaled(10)
        while True:
            r = spd.put(d.endpoints[chid], version=100)
            if r.status == 200:
                break
            self.assertEqual(r.status, 503, r)
            self.assertLess(time.monotonic(), deadline, "no recovery after SIGCONT")
            time.sleep(0.3)
        self.assertEqual(d.notification()[0]["version"], 100)

    def test_killed_memcached_then_restarted(self):
        d = self.device()
        chid = d.register()
        self.mc.stop()
        r, took = self.put_timed(d.endpoints[chid], 1)
        self.assertEqual(r.status, 503, r)
        self.assertLess(took, spd.scaled(2))
        d.ping()
        self.mc.start()  # empty: everything it held is gone
        deadline = time.monotonic() + spd.scaled(10)
        while True:
            r = spd.put(d.endpoints[chid], version=2)
            if r.status in (200, 202):
                break
            self.assertLess(time.monotonic(), deadline, "no recovery after restart")
            time.sleep(0.3)
        # The device is still connected here, so the update reached it.
        self.assertEqual(r.status, 200, r)
        self.assertEqual(d.notification()[0]["version"], 2)


if __name__ == "__main__":
    unittest.main()
