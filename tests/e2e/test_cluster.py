"""
A cluster (SPEC §9): two or three daemons sharing one memcached that the test starts on a
free port. An update PUT to any node reaches the device on the node holding its socket
(routed over the internal listeners, 200); a device that says hello on another node makes
its older socket close within 5 s; a node killed with devices on it loses nothing stored;
the internal routing endpoint validates everything it is sent and exists only on the
internal listener.
"""
import json
import re
import time
import unittest

import spd

KEY = "ZmFrZS1rZXktZm9yLXRlc3RzLW9ubHktMzItYnl0ZXM"  # 32 bytes, base64url


def endpoint_on(endpoint, node):
    """The same endpoint URL, pointed at another node's public port."""
    return re.sub(r":\d+/update/", ":%d/update/" % node.public_port, endpoint)


def metric(node, name, result):
    r = spd.http_request(node.internal_port, "GET", "/metrics")
    m = re.search(r'^simplepushd_%s\{result="%s"\} (\d+)$' % (name, result),
                  r.body.decode(), re.M)
    return int(m.group(1)) if m else None


def time_wait_sockets(port):
    """Sockets in TIME_WAIT on loopback with port at either end (from /proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            ports = {int(local.split(":")[1], 16), int(remote.split(":")[1], 16)}
            n += state == "06" and port in ports
    return n


def wait_metric(node, name, result, want, timeout=5):
    """The metric once it reaches want (a peer's answer may still be on its way)."""
    deadline = time.monotonic() + spd.scaled(timeout)
    while True:
        got = metric(node, name, result)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


class ClusterCase(spd.DaemonCase):
    PER_TEST = True
    NODES = 2
    EXTRA = {}

    def setUp(self):
        self.mc = spd.Memcached()
        self.addCleanup(self.mc.stop)
        self.CONFIG = spd.merge_config({"memcache": {"server": self.mc.addr},
                                        "endpoint": {"token_keys": KEY}}, self.EXTRA)
        super().setUp()  # self.daemon: node A
        self.nodes = [self.daemon]
        for i in range(1, self.NODES):
            node = spd.Daemon(self.CONFIG, name="%s.%s" % (self.id(), "abc"[i]))
            self.addCleanup(node.stop)
            node.start()
            self.nodes.append(node)

    def tearDown(self):
        super().tearDown()
        for node in self.nodes[1:]:
            if node.proc is not None:
                node.check()

    def device_on(self, node, uaid=spd.MISSING, channels=()):
        """A websocket to node that said hello; returns (ws, uaid)."""
        ws = spd.ws_connect(node.public_port)
        self.addCleanup(spd.ws_close, ws)
        reply = spd.hello(ws, uaid, list(channels))
        self.assertEqual(reply.get("status"), 200, reply)
        return ws, reply["uaid"]


class TestRouting(ClusterCase):
    def test_put_on_one_node_is_delivered_on_another(self):
        a, b = self.nodes
        ws, _ = self.device_on(b)
        chid = spd.new_chid()
        ep = spd.register(ws, chid)
        self.assertJSONResponse(spd.put(endpoint_on(ep, a), version=7, data="över"), 200, {})
        msg = spd.recv_json(ws)
        self.assertEqual(msg, {"messageType": "notification",
                               "updates": [{"channelID": chid, "version": 7, "data": "över"}]})
        self.assertEqual(metric(a, "routes_sent_total", "ok"), 1)
        self.assertEqual(metric(b, "routes_received_total", "ok"), 1)
        # The same endpoint on the device's own node is delivered locally.
        self.assertJSONResponse(spd.put(endpoint_on(ep, b), version=8), 200, {})
        self.assertEqual(spd.recv_json(ws)["updates"], [{"channelID": chid, "version": 8}])
        self.assertEqual(metric(a, "routes_sent_total", "ok"), 1)

    def test_routes_leave_no_sockets_in_time_wait(self):
        # One connection per route must not pile up TIME_WAIT sockets (ephemeral ports run
        # out at a few hundred routes a second otherwise).
        a, b = self.nodes
        ws, _ = self.device_on(b)
        chid = spd.new_chid()
        ep = endpoint_on(spd.register(ws, chid), a)
        conn = spd.http_connection(a.public_port)
        before = time_wait_sockets(b.internal_port)
        for version in range(1, 101):
            self.assertJSONResponse(spd.put(ep, version=version, conn=conn), 200, {})
            self.assertEqual(spd.recv_json(ws)["updates"],
                             [{"channelID": chid, "version": version}])
        self.assertLessEqual(time_wait_sockets(b.internal_port) - before, 5)

    def test_channel_spelling_survives_routing(self):
        a, b = self.nodes
        ws, _ = self.device_on(b)
        chid = spd.new_chid(upper=True)
        ep = spd.register(ws, chid)
        self.assertJSONResponse(spd.put(endpoint_on(ep, a), version=3), 200, {})
        self.assertEqual(spd.recv_json(ws)["updates"], [{"channelID": chid, "version": 3}])

    def test_device_gone_means_202_and_delivery_at_next_hello(self):
        a, b = self.nodes
        ws, uaid = self.device_on(b)
        chid = spd.new_chid()
        ep = spd.register(ws, chid)
        spd.ws_close(ws)
        time.sleep(0.3)  # the host record is cleared on close
        t0 = time.monotonic()
        self.assertJSONResponse(spd.put(endpoint_on(ep, a), version=11), 202, {})
        self.assertLess(time.monotonic() - t0, spd.scaled(1.5))
        ws2, _ = self.device_on(a, uaid, [chid])
        self.assertEqual(spd.recv_json(ws2)["updates"], [{"channelID": chid, "version": 11}])

    def test_routing_to_a_dead_node_answers_202(self):
        a, b = self.nodes
        ws, uaid = self.device_on(b)
        chid = spd.new_chid()
        ep = spd.register(ws, chid)
        b.crash()
        t0 = time.monotonic()
        self.assertJSONResponse(spd.put(endpoint_on(ep, a), version=21), 202, {})
        self.assertLess(time.monotonic() - t0, spd.scaled(3))  # the router's deadline: 2 s
        self.assertEqual(wait_metric(a, "routes_sent_total", "failed", 1), 1)


class TestKick(ClusterCase):
    def test_hello_on_another_node_closes_the_older_socket(self):
        a, b = self.nodes
        old, uaid = self.device_on(a)
        chid = spd.new_chid()
        spd.register(old, chid)
        t0 = time.monotonic()
        new, _ = self.device_on(b, uaid, [chid])
        code, _ = spd.expect_close(old, timeout=5)
        self.assertEqual(code, 1008)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(wait_metric(b, "kicks_sent_total", "ok", 1), 1)
        self.assertEqual(metric(a, "kicks_received_total", "ok"), 1)
        # The uaid now lives on b: a PUT to a reaches the new socket.
        ep = spd.register(new, chid)
        self.assertJSONResponse(spd.put(endpoint_on(ep, a), version=5), 200, {})
        self.assertEqual(spd.recv_json(new)["updates"], [{"channelID": chid, "version": 5}])

    def test_update_sent_to_the_older_socket_reaches_the_newer(self):
        a, b = self.nodes
        old, uaid = self.device_on(a)
        chid = spd.new_chid()
        ep = spd.register(old, chid)
        # The phone moves to b; its socket on a is still open (not yet kicked) when an update
        # arrives at a and is written to it. The update is stored, and b reads it again
        # once a has closed the older socket.
        raw = spd.RawWS(b.public_port)
        self.addCleanup(raw.close)
        self.assertJSONResponse(spd.put(ep, version=31), 200, {})
        raw.send_json({"messageType": "hello", "uaid": uaid, "channelIDs": [chid]})
        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and {"channelID": chid, "version": 31} not in seen:
            msg = raw.recv_json(timeout=5)
            if msg.get("messageType") == "notification":
                seen += msg["updates"]
        self.assertIn({"channelID": chid, "version": 31}, seen)

    def test_kick_of_an_older_generation_only(self):
        a, b = self.nodes
        ws, uaid = self.device_on(a)
        # A kick naming another generation of the uaid leaves the socket alone.
        r = spd.http_request(a.internal_port, "DELETE", "/route/%s?gen=%s" % (uaid, "0" * 16))
        self.assertError(r, 404, "Not Connected")
        spd.ping(ws)


class TestHostRecordRefresh(ClusterCase):
    EXTRA = {"storage": {"timeout_live": "2s"}}

    def test_host_record_outlives_its_ttl_while_connected(self):
        a, b = self.nodes
        ws, _ = self.device_on(b)
        chid = spd.new_chid()
        ep = spd.register(ws, chid)
        time.sleep(spd.scaled(5))  # > 2 x timeout_live: the record was written again
        self.assertJSONResponse(spd.put(endpoint_on(ep, a), version=4), 200, {})
        self.assertEqual(spd.recv_json(ws)["updates"], [{"channelID": chid, "version": 4}])


class TestRouteEndpoint(ClusterCase):
    NODES = 1

    def route(self, uaid, body, method="PUT", headers=None):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return spd.http_request(self.daemon.internal_port, method, "/route/" + uaid, body, h)

    def test_delivers_to_a_connected_device(self):
        ws, uaid = self.device_on(self.daemon)
        chid = spd.new_chid()
        spd.register(ws, chid)
        r = self.route(uaid, {"channelID": chid, "version": 12, "data": "x"})
        self.assertJSONResponse(r, 200, {})
        self.assertEqual(spd.recv_json(ws)["updates"],
                         [{"channelID": chid, "version": 12, "data": "x"}])

    def test_not_connected_is_404(self):
        r = self.route(spd.new_uaid(), {"channelID": spd.new_chid(), "version": 1})
        self.assertError(r, 404, "Not Connected")

    def test_only_on_the_internal_listener(self):
        _, uaid = self.device_on(self.daemon)
        r = spd.http_request(self.port, "PUT", "/route/" + uaid,
                             json.dumps({"channelID": spd.new_chid(), "version": 1}),
                             {"Content-Type": "application/json"})
        self.assertError(r, 404, "Not Found")

    def test_bad_requests(self):
        ws, uaid = self.device_on(self.daemon)
        chid = spd.new_chid()
        good = {"channelID": chid, "version": 1}
        cases = [
            ("not-a-uaid", good, 400, "Invalid UAID"),
            (uaid + "/x", good, 400, "Invalid UAID"),
            (uaid, "{", 400, "Invalid Body"),
            (uaid, "[]", 400, "Invalid Body"),
            (uaid, {"version": 1}, 400, "Invalid Body"),
            (uaid, {"channelID": "nope", "version": 1}, 400, "Invalid Body"),
            (uaid, {"channelID": chid, "version": -1}, 400, "Invalid Body"),
            (uaid, {"channelID": chid, "version": "1"}, 400, "Invalid Body"),
            (uaid, {"channelID": chid, "version": 1.5}, 400, "Invalid Body"),
            (uaid, {"channelID": chid, "version": 1, "data": 5}, 400, "Invalid Body"),
            (uaid, {"channelID": chid, "version": 1, "extra": 1}, 400, "Invalid Body"),
            (uaid, '{"channelID":"%s","version":1,"version":2}' % chid, 400, "Invalid Body"),
            (uaid, {"channelID": chid, "version": 1, "data": "a\u0000b"}, 400, "Invalid Body"),
            (uaid, {"channelID": chid, "version": 1, "data": "x" * 4097}, 400, "Invalid Data"),
            (uaid, "", 400, "Invalid Body"),
        ]
        for path, body, status, error in cases:
            with self.subTest(path=path, body=body):
                self.assertError(self.route(path, body), status, error)
        self.assertError(self.route(uaid, good, method="GET"), 405, "Method Not Allowed")
        self.assertError(self.route(uaid, good, method="POST"), 405, "Method Not Allowed")
        r = spd.raw_http(self.daemon.internal_port,
                         ("PUT /route/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
                          % uaid).encode())
        self.assertError(r, 413)
        r = spd.raw_http(self.daemon.internal_port,
                         ("PUT /route/%s HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
                          % uaid).encode())
        self.assertError(r, 400, "Invalid Content-Length")
        r = spd.raw_http(self.daemon.internal_port,
                         ("PUT /route/%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "0\r\n\r\n" % uaid).encode())
        self.assertError(r, 411, "Length Required")
        for gen in ("", "xyz", "1" * 17, "ABC"):
            with self.subTest(gen=gen):
                r = spd.http_request(self.daemon.internal_port, "DELETE",
                                     "/route/%s?gen=%s" % (uaid, gen))
                self.assertError(r, 400, "Invalid Generation")
        # None of it touched the device.
        spd.ping(ws)
        spd.expect_silence(ws, 0.2)


class TestNodeKilled(ClusterCase):
    NODES = 3

    def test_devices_of_a_killed_node_get_everything_stored_meanwhile(self):
        a, b, c = self.nodes
        devices = []
        for _ in range(5):
            ws, uaid = self.device_on(b)
            chids = [spd.new_chid() for _ in range(2)]
            eps = [spd.register(ws, ch) for ch in chids]
            devices.append((uaid, chids, eps))
        b.crash()
        sent = {}
        for i, (uaid, chids, eps) in enumerate(devices):
            for j, (chid, ep) in enumerate(zip(chids, eps)):
                node = a if (i + j) % 2 else c
                version = 100 + i * 10 + j
                r = spd.put(endpoint_on(ep, node), version=version)
                self.assertIn(r.status, (200, 202), r)
                sent[chid] = version
        for i, (uaid, chids, _) in enumerate(devices):
            ws, got_uaid = self.device_on(a if i % 2 else c, uaid, chids)
            self.assertEqual(got_uaid, uaid)
            got = {}
            while len(got) < len(chids):
                for u in spd.recv_json(ws)["updates"]:
                    got[u["channelID"]] = u["version"]
            self.assertEqual(got, {ch: sent[ch] for ch in chids})


if __name__ == "__main__":
    unittest.main()
