"""
Timeouts and limits: hello timeout, ping rate (4774), server.max_connections (503 + 1008),
duplicate uaid (1008), max_pending_bytes (1008), pong_interval (dead peers). SPEC §2, §4
close codes, §5 rule 5, §10.
"""

import json
import time
import unittest

import spd
from spd import OP_CLOSE, OP_PING, OP_PONG, expect_close, hello, new_chid, recv_json, \
    recv_text


class TestHelloTimeout(spd.DaemonCase):
    CONFIG = {"client": {"hello_timeout": "1s"}}

    def test_closed_1000_without_hello(self):
        # t0 before the handshake: the timer starts when the daemon has accepted the socket,
        # which may be well before the client sees the 101 when the daemon is slowed down
        # (valgrind); so the lower bound holds however slow it is.
        t0 = time.monotonic()
        ws = self.ws()
        code, msgs = expect_close(ws, timeout=5)
        elapsed = time.monotonic() - t0
        self.assertEqual((code, msgs), (1000, []))
        self.assertGreaterEqual(elapsed, 0.9, "closed before hello_timeout")
        self.assertLessEqual(elapsed, spd.scaled(3.5), "closed too late")

    def test_pings_do_not_extend_the_timeout(self):
        ws = self.ws()
        t0 = time.monotonic()
        code = None
        while time.monotonic() - t0 < spd.scaled(5):
            try:
                ws.send("{}")
                self.assertEqual(recv_text(ws, timeout=0.3 * 10), "{}")
            except spd.Closed as e:
                code = e.code
                break
            except OSError:
                code, _ = expect_close(ws)
                break
            time.sleep(0.3)
        self.assertEqual(code, 1000)
        self.assertLessEqual(time.monotonic() - t0, spd.scaled(3.5))

    def test_hello_in_time_keeps_socket(self):
        ws = self.ws()
        time.sleep(0.6)
        self.assertEqual(hello(ws, channelIDs=[])["status"], 200)
        spd.expect_silence(ws, 1.8)
        spd.ping(ws)

    def test_purge_does_not_stop_the_timer(self):
        # A purge answers {} but is no hello: the timer still closes the socket.
        ws = self.ws()
        spd.send_json(ws, {"messageType": "purge"})
        self.assertEqual(recv_json(ws), {})
        code, _ = expect_close(ws, timeout=5)
        self.assertEqual(code, 1000)


class TestPingRate(spd.DaemonCase):
    CONFIG = {"client": {"min_ping_interval": "2s"}}

    def assertFastPingCloses(self, ws, first, second):
        ws.send(first)
        self.assertEqual(recv_text(ws), "{}")
        ws.send(second)
        code, msgs = expect_close(ws)
        self.assertEqual((code, msgs), (4774, []))

    def test_fast_pings_close_4774(self):
        d = self.device()
        self.assertFastPingCloses(d.ws, "{}", "{}")

    def test_ping_message_type_counts_too(self):
        d = self.device()
        self.assertFastPingCloses(d.ws, '{"messageType":"ping"}', "{}")

    def test_fast_pings_before_hello(self):
        self.assertFastPingCloses(self.ws(), "{}", '{"messageType":"PING"}')

    def test_spaced_pings_are_fine(self):
        d = self.device()
        d.ping()
        time.sleep(2.3)
        d.ping()
        time.sleep(2.3)
        d.ping()

    def test_other_commands_are_not_pings(self):
        d = self.device()
        d.ping()
        for _ in range(3):
            d.register()
        d.ack([])
        d.unregister(next(iter(d.endpoints)))
        time.sleep(2.2)
        d.ping()

    def test_other_sockets_unaffected(self):
        keep = self.device()
        keep.ping()
        self.assertFastPingCloses(self.device().ws, "{}", "{}")
        time.sleep(2.1)
        keep.ping()


class TestMaxConnections(spd.DaemonCase):
    PER_TEST = True
    CONFIG = {"server": {"max_connections": "5"}}

    def fill(self):
        devices = [self.device() for _ in range(5)]
        return devices

    def assertRejected(self):
        ws = self.ws()
        code, msgs = expect_close(ws)
        self.assertEqual([json.loads(m) for m in msgs],
                         [{"status": 503, "error": "Service Unavailable"}])
        self.assertEqual(code, 1008)

    def status(self):
        return self.http("GET", "/status/")

    def test_sixth_socket_gets_503_then_1008(self):
        devices = self.fill()
        self.assertRejected()
        self.assertRejected()
        for d in devices:
            d.ping()

    def test_status_and_lbheartbeat_503_while_full(self):
        devices = self.fill()
        r = self.status()
        body = self.assertJSONResponse(r, 503)
        self.assertEqual(body.get("status"), "NOPE", body)
        self.assertEqual(body.get("clients"), 5, body)
        self.assertJSONResponse(self.http("GET", "/__lbheartbeat__"), 503, {})
        devices[0].disconnect()
        deadline = time.monotonic() + spd.scaled(3)
        while self.status().status != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertJSONResponse(self.http("GET", "/__lbheartbeat__"), 200, {})
        body = self.assertJSONResponse(self.status(), 200)
        self.assertEqual(body["clients"], 4)

    def test_freed_slot_admits_exactly_one(self):
        devices = self.fill()
        for _ in range(5):
            self.assertRejected()
        devices[0].disconnect()
        time.sleep(0.2)
        self.device().ping()
        self.assertRejected()

    def test_http_still_served_when_full(self):
        devices = self.fill()
        chid = devices[0].register()
        self.assertJSONResponse(devices[0].put(chid, version=3), 200, {})
        self.assertEqual(devices[0].notification(), [{"channelID": chid, "version": 3}])
        self.assertJSONResponse(self.http("GET", "/__heartbeat__"), 200,
                                {"status": "ok", "storage": "ok"})


class TestDuplicateUaid(spd.DaemonCase):

    def test_older_socket_closed_newcomer_keeps_uaid(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        ws2 = self.ws()
        self.assertEqual(hello(ws2, d.uaid, [chid]), {"messageType": "hello", "status": 200,
                                                      "uaid": d.uaid})
        t0 = time.monotonic()
        code, msgs = expect_close(d.ws, timeout=6)
        self.assertEqual((code, msgs), (1008, []))
        self.assertLess(time.monotonic() - t0, spd.scaled(5))
        # The old socket's end must not unbind the newcomer.
        time.sleep(0.2)
        for v in (1, 2):
            self.assertJSONResponse(spd.put(d.endpoints[chid], version=v), 200, {})
            self.assertEqual(recv_json(ws2), {"messageType": "notification", "updates": [
                {"channelID": chid, "version": v}]})

    def test_other_spelling_of_same_uaid(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        u = d.uaid
        dashed = ("%s-%s-%s-%s-%s" % (u[:8], u[8:12], u[12:16], u[16:20], u[20:])).upper()
        ws2 = self.ws()
        self.assertEqual(hello(ws2, dashed, [chid]), {"messageType": "hello", "status": 200,
                                                      "uaid": dashed})
        code, _ = expect_close(d.ws, timeout=6)
        self.assertEqual(code, 1008)
        self.assertJSONResponse(spd.put(d.endpoints[chid], version=5), 200, {})
        self.assertEqual(recv_json(ws2)["updates"], [{"channelID": chid, "version": 5}])

    def test_three_in_a_row(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        ws2, ws3 = self.ws(), self.ws()
        self.assertEqual(hello(ws2, d.uaid, [chid])["uaid"], d.uaid)
        self.assertEqual(hello(ws3, d.uaid, [chid])["uaid"], d.uaid)
        for ws in (d.ws, ws2):
            code, _ = expect_close(ws, timeout=6)
            self.assertEqual(code, 1008)
        self.assertJSONResponse(spd.put(d.endpoints[chid], version=7), 200, {})
        self.assertEqual(recv_json(ws3)["updates"], [{"channelID": chid, "version": 7}])

    def test_pending_delivered_to_newcomer(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertJSONResponse(spd.put(d.endpoints[chid], version=9), 200, {})
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 9}])
        ws2 = self.ws()
        self.assertEqual(hello(ws2, d.uaid, [chid])["status"], 200)
        self.assertEqual(recv_json(ws2), {"messageType": "notification", "updates": [
            {"channelID": chid, "version": 9}]})


class TestSlowReader(spd.DaemonCase):
    """A device that does not read is closed (1008) instead of being buffered forever."""

    def test_device_not_reading_is_closed(self):
        r = self.raw_ws(rcvbuf=4096, timeout=20)
        r.send_json({"messageType": "hello", "channelIDs": []})
        self.assertEqual(r.recv_json()["status"], 200)
        chid = new_chid()
        r.send_json({"messageType": "register", "channelID": chid})
        ep = r.recv_json()["pushEndpoint"]
        conn = spd.http_connection(self.port)
        self.addCleanup(conn.close)
        statuses = {}
        data = "x" * 4000
        gone = False
        t0 = time.monotonic()
        for v in range(1, 6001):
            resp = spd.put(ep, version=v, data=data, conn=conn)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 202:
                gone = True
                break
            self.assertEqual(resp.status, 200, resp)
            if time.monotonic() - t0 > spd.scaled(60):
                break
        self.assertTrue(gone, "device never dropped; PUT statuses %r" % statuses)
        # Whatever was buffered drains, then the close (1008) or the end of the connection.
        code, msgs = r.expect_close(timeout=30)
        self.assertIn(code, (1008, None), "close code")
        self.assertGreater(len(msgs), 0)
        # The daemon is fine for others.
        self.device().ping()


class TestPong(spd.DaemonCase):
    CONFIG = {"client": {"pong_interval": "1s"}}

    def test_dead_peer_closed(self):
        r = self.raw_ws()
        r.send_json({"messageType": "hello", "channelIDs": []})
        self.assertEqual(r.recv_json()["status"], 200)
        pings = 0
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < spd.scaled(12):
            try:
                fin, op, payload = r.recv_frame(timeout=1)
            except spd.NoMessage:
                continue
            except spd.Closed:
                closed = True
                break
            if op == OP_PING:
                pings += 1
            elif op == OP_CLOSE:
                closed = True
                break
            else:
                self.fail("unexpected frame %r %r" % (op, payload[:80]))
        self.assertGreaterEqual(pings, 1, "no WebSocket ping within the pong interval")
        self.assertTrue(closed, "a peer that never answers pings was not closed")

    def test_live_peer_kept(self):
        d = self.device()
        # Reading answers the daemon's pings.
        spd.expect_silence(d.ws, 4.5)
        d.ping()

    def test_pings_are_sent(self):
        r = self.raw_ws()
        r.send_json({"messageType": "hello", "channelIDs": []})
        self.assertEqual(r.recv_json()["status"], 200)
        deadline = time.monotonic() + spd.scaled(4)
        seen = 0
        while time.monotonic() < deadline and seen < 2:
            try:
                fin, op, payload = r.recv_frame(timeout=0.5)
            except spd.NoMessage:
                continue
            self.assertIn(op, (OP_PING,), payload)
            seen += 1
            r.send_frame(OP_PONG, payload)
        self.assertGreaterEqual(seen, 2)
        r.send_text("{}")
        self.assertEqual(r.recv_message(), (spd.OP_TEXT, b"{}"))


if __name__ == "__main__":
    unittest.main()
