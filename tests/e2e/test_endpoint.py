"""
The app-server endpoint PUT /update/<token>: every status of SPEC §7, the token rules of
§8; reference §8, §16 items 24-27.
"""

import base64
import os
import socket
import time
import unittest

import spd
from spd import new_chid

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64key():
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def other_char(c):
    return ALPHABET[(ALPHABET.index(c) + 1) % 64] if c in ALPHABET else "A"


class EndpointCase(spd.DaemonCase):

    def setUp(self):
        super().setUp()
        self.dev = self.device()
        self.chid = self.dev.register()
        self.endpoint = self.dev.endpoints[self.chid]
        self.token = spd.token_of(self.endpoint)
        self.path = "/update/" + self.token

    def put_path(self, path, body=None, headers=None):
        h = dict(headers or {})
        if body is not None:
            h.setdefault("Content-Type", spd.FORM)
        return self.http("PUT", path, body=body, headers=h)

    def delivered(self, timeout=5):
        updates = self.dev.notification(timeout)
        self.assertEqual(len(updates), 1, updates)
        self.assertEqual(updates[0]["channelID"], self.chid)
        return updates[0]


class TestStatuses(EndpointCase):

    def test_200_connected(self):
        r = spd.put(self.endpoint, version=1)
        self.assertJSONResponse(r, 200, {})
        self.assertEqual(self.delivered(), {"channelID": self.chid, "version": 1})

    def test_202_offline(self):
        self.dev.disconnect()
        self.assertJSONResponse(spd.put(self.endpoint, version=1), 202, {})

    def test_400_invalid_version(self):
        bad = ("abc", "-1", "1.5", "1e3", "0x10", "5abc", "5 5", "9223372036854775808",
               "18446744073709551616", "99999999999999999999999", "--1", "1-")
        for v in bad:
            with self.subTest(body=v):
                self.assertError(spd.put(self.endpoint, version=v), 400, "Invalid Version")
            with self.subTest(query=v):
                self.assertError(spd.put(self.endpoint, query={"version": v}), 400,
                                 "Invalid Version")
        self.dev.expect_nothing_pending()

    def test_400_bad_version_in_body_even_if_query_good(self):
        self.assertError(spd.put(self.endpoint, version="abc", query={"version": "5"}), 400,
                         "Invalid Version")

    def test_400_negative_or_malformed_content_length(self):
        for cl in ("-1", "-100", "abc", "12abc", "0x10", "1 2", ""):
            with self.subTest(content_length=cl):
                req = ("PUT %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\n"
                       "Content-Length: %s\r\nConnection: close\r\n\r\nversion=1"
                       % (self.path, spd.HOST, self.port, spd.FORM, cl))
                r = self.raw_http(req)
                self.assertIsNotNone(r, "connection closed without a response")
                self.assertError(r, 400)
        self.dev.expect_nothing_pending()

    def test_404_bad_tokens(self):
        t = self.token
        bad = [
            t[:-1], t[:60], t[:1], t + "A", t + t, t + "=", t + "==", "=" + t[1:],
            t[:44] + "+" + t[45:], t[:44] + "/" + t[45:],
            t[:44] + "." + t[45:], t[:44] + "~" + t[45:], t[:44] + "*" + t[45:],
            t.swapcase() if t.swapcase() != t else t[::-1],
            "A" * spd.TOKEN_LEN, "_" * spd.TOKEN_LEN, "0" * 200,
            self.dev.uaid + "." + self.chid,  # pushgo's plain token form
            self.dev.uaid,
        ]
        # Non-zero trailing bits: 90 characters carry 540 bits for 536 bits of token.
        last = ALPHABET.index(t[-1])
        bad.append(t[:-1] + ALPHABET[last | 1])
        for tok in bad:
            with self.subTest(token=tok[:50]):
                self.assertError(self.put_path("/update/" + tok, "version=1"), 404,
                                 "Invalid Token")
        self.dev.expect_nothing_pending()

    def test_404_every_single_character_change(self):
        t = self.token
        for i in range(len(t)):
            tok = t[:i] + other_char(t[i]) + t[i + 1:]
            with self.subTest(position=i):
                self.assertError(self.put_path("/update/" + tok, "version=1"), 404,
                                 "Invalid Token")
        self.dev.expect_nothing_pending()

    def test_404_empty_token(self):
        for path in ("/update/", "/update//"):
            with self.subTest(path=path):
                r = self.put_path(path, "version=1")
                self.assertError(r, 404)

    def test_405_other_methods(self):
        for method in ("GET", "POST", "DELETE", "PATCH"):
            with self.subTest(method=method):
                body = "version=1" if method in ("POST", "PATCH") else None
                h = {"Content-Type": spd.FORM} if body else {}
                r = self.http(method, self.path, body=body, headers=h)
                self.assertError(r, 405)
                self.assertEqual(r.headers.get("allow"), "PUT", r)
        self.dev.expect_nothing_pending()

    def test_405_options_without_cors(self):
        r = self.http("OPTIONS", self.path, headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "PUT"})
        self.assertError(r, 405)
        self.assertEqual(r.headers.get("allow"), "PUT", r)

    def test_410_after_unregister(self):
        self.dev.unregister(self.chid)
        self.assertError(spd.put(self.endpoint, version=1), 410, "Gone")
        self.dev.expect_nothing_pending()

    def test_410_after_hello_reset(self):
        self.dev.disconnect()
        ws = self.ws()
        reply = spd.hello(ws, self.dev.uaid, [new_chid() for _ in range(201)])
        self.assertEqual(reply["status"], 200)
        self.assertNotEqual(reply["uaid"], self.dev.uaid)
        self.assertError(spd.put(self.endpoint, version=1), 410, "Gone")

    def test_reregister_after_unregister_works(self):
        self.dev.unregister(self.chid)
        ep = spd.register(self.dev.ws, self.chid)
        self.assertJSONResponse(spd.put(ep, version=2), 200, {})
        self.assertEqual(self.delivered(), {"channelID": self.chid, "version": 2})

    def test_411_chunked(self):
        req = ("PUT %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\n"
               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               "9\r\nversion=1\r\n0\r\n\r\n" % (self.path, spd.HOST, self.port, spd.FORM))
        r = self.raw_http(req)
        self.assertIsNotNone(r, "connection closed without a response")
        self.assertError(r, 411)
        self.dev.expect_nothing_pending()

    def test_413_data_too_long(self):
        self.assertError(spd.put(self.endpoint, version=1, data="x" * 4097), 413)
        self.dev.expect_nothing_pending()

    def test_413_data_too_long_in_query(self):
        self.assertError(spd.put(self.endpoint, query={"version": 1, "data": "y" * 4097}), 413)
        self.dev.expect_nothing_pending()

    def test_400_data_not_utf8(self):
        # SPEC leaves it open; docs/protocol.md: data that cannot travel in JSON is refused.
        for body in ("version=1&data=%FF", "version=1&data=a%00b", "version=1&data=%C0%80"):
            with self.subTest(body=body):
                self.assertError(self.put_path(self.path, body), 400, "Invalid Data")
        self.dev.expect_nothing_pending()

    def test_data_at_limit_accepted(self):
        self.assertJSONResponse(spd.put(self.endpoint, version=1, data="z" * 4096), 200, {})
        self.assertEqual(self.delivered(), {"channelID": self.chid, "version": 1,
                                            "data": "z" * 4096})

    def test_413_body_too_large(self):
        limit = 3 * 4096 + 1024
        body = "version=1&x=" + "a" * (limit + 1 - len("version=1&x="))
        self.assertEqual(len(body), limit + 1)
        self.assertError(self.put_path(self.path, body), 413)
        self.assertError(self.put_path(self.path, "version=1&x=" + "b" * 100000), 413)
        self.dev.expect_nothing_pending()

    def test_body_at_limit_accepted(self):
        limit = 3 * 4096 + 1024
        head = "version=3&data=" + "d" * 4096 + "&x="
        body = head + "p" * (limit - len(head))
        self.assertEqual(len(body), limit)
        self.assertJSONResponse(self.put_path(self.path, body), 200, {})
        self.assertEqual(self.delivered(), {"channelID": self.chid, "version": 3,
                                            "data": "d" * 4096})

    def test_content_type_json_on_every_response(self):
        # Spot checks of the unusual ones; every assertError/assertJSONResponse checks it too.
        for method, path in (("PUT", "/update/xyz"), ("GET", self.path),
                             ("GET", "/no/such/path"), ("PUT", "/no/such/path")):
            with self.subTest(method=method, path=path):
                r = self.http(method, path)
                self.assertEqual(r.content_type(), "application/json", r)
                self.assertIsInstance(r.json(), dict)


class TestVersionAndData(EndpointCase):

    def test_version_from_body(self):
        self.assertJSONResponse(spd.put(self.endpoint, version=7), 200, {})
        self.assertEqual(self.delivered()["version"], 7)

    def test_version_from_query(self):
        self.assertJSONResponse(spd.put(self.endpoint, query={"version": 9}), 200, {})
        self.assertEqual(self.delivered()["version"], 9)

    def test_body_wins_over_query(self):
        self.assertJSONResponse(spd.put(self.endpoint, version=7, query={"version": 9}), 200,
                                {})
        self.assertEqual(self.delivered()["version"], 7)

    def test_data_from_query_and_body(self):
        self.assertJSONResponse(spd.put(self.endpoint, query={"version": 3, "data": "q"}),
                                200, {})
        self.assertEqual(self.delivered(), {"channelID": self.chid, "version": 3, "data": "q"})
        self.assertJSONResponse(spd.put(self.endpoint, data="b", query={"version": 4,
                                                                        "data": "q"}), 200, {})
        self.assertEqual(self.delivered(), {"channelID": self.chid, "version": 4, "data": "b"})

    def test_form_encoding_decoded(self):
        body = "version=%31%32&data=a+b%20c%26d%3De%C3%A9"
        self.assertJSONResponse(self.put_path(self.path, body), 200, {})
        self.assertEqual(self.delivered(), {"channelID": self.chid, "version": 12,
                                            "data": "a b c&d=e\u00e9"})

    def test_repeated_field_first_counts(self):
        # docs/protocol.md: for a repeated field the first one counts.
        r = self.put_path(self.path, "version=3&version=4&data=a&data=b")
        self.assertJSONResponse(r, 200, {})
        self.assertEqual(self.delivered(), {"channelID": self.chid, "version": 3, "data": "a"})

    def test_no_content_type_parsed_as_form(self):
        r = spd.put(self.endpoint, version=5, content_type=None)
        self.assertJSONResponse(r, 200, {})
        self.assertEqual(self.delivered()["version"], 5)

    def test_form_content_type_with_charset(self):
        r = spd.put(self.endpoint, version=6,
                    content_type="application/x-www-form-urlencoded; charset=UTF-8")
        self.assertJSONResponse(r, 200, {})
        self.assertEqual(self.delivered()["version"], 6)

    def test_other_content_type_body_ignored(self):
        for ctype, body in (("text/plain", "version=5"), ("application/json", '{"version":5}'),
                            ("text/plain", "version=5&data=zzz")):
            with self.subTest(content_type=ctype, body=body):
                t0 = time.time()
                r = spd.put(self.endpoint, body=body, content_type=ctype)
                t1 = time.time()
                self.assertJSONResponse(r, 200, {})
                u = self.delivered()
                self.assertNow(u["version"], t0, t1)
                self.assertNotIn("data", u)

    def test_other_content_type_body_ignored_query_used(self):
        r = spd.put(self.endpoint, body="version=5", content_type="text/plain",
                    query={"version": 6})
        self.assertJSONResponse(r, 200, {})
        self.assertEqual(self.delivered()["version"], 6)

    def test_missing_version_is_now(self):
        for kw in ({}, {"body": "version="}, {"query": "version="}, {"data": "only data"},
                   {"body": ""}):
            with self.subTest(**{k: str(v) for k, v in kw.items()}):
                t0 = time.time()
                r = spd.put(self.endpoint, **kw)
                t1 = time.time()
                self.assertJSONResponse(r, 200, {})
                u = self.delivered()
                self.assertNow(u["version"], t0, t1)

    def test_empty_data_no_field(self):
        for kw in ({"version": 1, "data": ""}, {"query": "version=2&data="}):
            with self.subTest(**{k: str(v) for k, v in kw.items()}):
                self.assertJSONResponse(spd.put(self.endpoint, **kw), 200, {})
                self.assertNotIn("data", self.delivered())


class TestConnections(EndpointCase):
    """How the answer of a stored update leaves: written at once from the store's completion,
    then the connection goes on (keep-alive, pipelined requests) or closes."""

    def raw_put(self, version, http="HTTP/1.1", extra=""):
        body = "version=%d" % version
        return ("PUT %s %s\r\nHost: %s:%d\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s"
                "\r\n%s" % (self.path, http, spd.HOST, self.port, spd.FORM, len(body), extra,
                             body)).encode()

    def read_responses(self, s, n):
        """The first n responses on s (status, body), and what came after them until close."""
        buf, out = b"", []
        s.settimeout(spd.scaled(5))
        while len(out) < n:
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "closed after %d responses: %r" % (len(out), buf))
                buf += chunk
            head, rest = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v)
            while len(rest) < length:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "closed inside a body")
                rest += chunk
            out.append((int(lines[0].split(" ")[1]), rest[:length]))
            buf = rest[length:]
        return out, buf

    def test_keep_alive_puts(self):
        conn = spd.http_connection(self.port)
        self.addCleanup(conn.close)
        for v in range(1, 6):
            self.assertJSONResponse(spd.put(self.endpoint, version=v, conn=conn), 200, {})
            u = self.delivered()
            self.assertEqual(u["version"], v)
            self.dev.ack([u])

    def test_pipelined_puts(self):
        """lws 4.1 cannot parse a pipelined request with a body from its input buffer (it
        loops forever): the first is answered, the connection closes, the daemon goes on."""
        chid2 = self.dev.register()
        path2 = "/update/" + spd.token_of(self.dev.endpoints[chid2])
        s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
        self.addCleanup(s.close)
        s.sendall(self.raw_put(1) + self.raw_put(2).replace(self.path.encode(), path2.encode()))
        responses, after = self.read_responses(s, 1)
        self.assertEqual(responses, [(200, b"{}")])
        after += spd.read_until_closed(s)
        self.assertEqual(after, b"")
        self.assertEqual(self.delivered(), {"channelID": self.chid, "version": 1})
        self.dev.expect_nothing_pending()
        r = spd.put(self.dev.endpoints[chid2], version=3)
        self.assertJSONResponse(r, 200, {})
        self.assertEqual(self.dev.notification(), [{"channelID": chid2, "version": 3}])

    def test_request_with_body_pipelined_behind_other_requests(self):
        """Whatever precedes it, a request with a body that lws would parse out of its own
        buffer closes the connection (lws 4.1 would loop forever on it), and the daemon
        goes on serving."""
        empty_put = ("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                     % self.path).encode()
        get = b"GET /__lbheartbeat__ HTTP/1.1\r\nHost: x\r\n\r\n"
        post = b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd"
        cases = {"get+put": get + self.raw_put(2), "empty put+put": empty_put + self.raw_put(3),
                 "get+post": get + post, "get+short put": get + self.raw_put(4).replace(
                     b"Content-Length: 9", b"Content-Length: 2").replace(b"version=4", b"v=")}
        version = 10 ** 12
        for name, raw in cases.items():
            with self.subTest(name):
                s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
                self.addCleanup(s.close)
                s.sendall(raw)
                data = spd.read_until_closed(s)
                self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
                self.assertLessEqual(data.count(b"HTTP/1.1 "), 2, data)
                # A higher version than any earlier one ("now" for the empty PUT).
                version += 1
                self.assertJSONResponse(spd.put(self.endpoint, version=version), 200, {})
                while True:
                    updates = self.dev.notification()
                    self.dev.ack(updates)
                    if updates[-1]["version"] == version:
                        break

    def test_http10_and_connection_close_answered_then_closed(self):
        for v, http, extra in ((1, "HTTP/1.0", ""), (2, "HTTP/1.1", "Connection: close\r\n")):
            with self.subTest(http=http, extra=extra):
                s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
                self.addCleanup(s.close)
                s.sendall(self.raw_put(v, http, extra))
                responses, after = self.read_responses(s, 1)
                self.assertEqual(responses, [(200, b"{}")])
                after += spd.read_until_closed(s)
                self.assertEqual(after, b"")
                self.assertEqual(self.delivered()["version"], v)


class TestCors(EndpointCase):
    CONFIG = {"endpoint": {"cors": "1"}}

    def test_preflight(self):
        r = self.http("OPTIONS", self.path, headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type"})
        self.assertIn(r.status, (200, 204), r)
        self.assertIn(r.headers.get("access-control-allow-origin"),
                      ("*", "http://app.example"), r)
        methods = [m.strip().upper() for m in
                   r.headers.get("access-control-allow-methods", "").split(",")]
        self.assertIn("PUT", methods, r)
        if r.status == 200:
            self.assertEqual(r.content_type(), "application/json", r)

    def test_put_still_works(self):
        r = spd.put(self.endpoint, version=3, headers={"Origin": "http://app.example"})
        self.assertJSONResponse(r, 200, {})
        # docs/protocol.md: every endpoint response carries the CORS headers.
        self.assertEqual(r.headers.get("access-control-allow-origin"), "*", r)
        self.assertEqual(self.delivered()["version"], 3)

    def test_other_methods_still_405(self):
        r = self.http("GET", self.path)
        self.assertError(r, 405)
        self.assertIn("PUT", r.headers.get("allow", ""), r)


class TestTokenKeys(spd.DaemonCase):
    """Tokens are authenticated with the configured keys: the first key encrypts, all
    decrypt; a token made under a key the daemon does not hold is 404."""

    @classmethod
    def setUpClass(cls):
        k1, k2 = b64key(), b64key()
        cls.daemon = spd.Daemon({"endpoint": {"token_keys": k1}}, name="keysA").start()
        try:
            cls.other = spd.Daemon({"endpoint": {"token_keys": "%s , %s" % (k2, k1)}},
                                   name="keysB").start()
        except BaseException:
            cls.daemon.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.other.stop()
        finally:
            super().tearDownClass()

    def tearDown(self):
        super().tearDown()
        self.other.check()

    def test_foreign_key_is_404(self):
        ws = spd.ws_connect(self.other.public_port)
        self.addCleanup(spd.ws_close, ws)
        self.assertEqual(spd.hello(ws, channelIDs=[])["status"], 200)
        ep_b = spd.register(ws, new_chid())
        tok_b = spd.token_of(ep_b)
        self.assertRegex(tok_b, spd.TOKEN_RE)
        r = spd.http_request(self.daemon.public_port, "PUT", "/update/" + tok_b,
                             body="version=1", headers={"Content-Type": spd.FORM})
        self.assertError(r, 404, "Invalid Token")

    def test_second_key_decrypts(self):
        d = self.device(channels=1, upper=True)
        chid = next(iter(d.endpoints))
        tok_a = spd.token_of(d.endpoints[chid])
        r = spd.http_request(self.other.public_port, "PUT", "/update/" + tok_a,
                             body="version=5", headers={"Content-Type": spd.FORM})
        # With storage of its own the other daemon stores the update (202); sharing memcached
        # with this one, it also routes it to the device here (200).
        routed = spd.BACKEND == "memcached"
        self.assertJSONResponse(r, 200 if routed else 202, {})
        if routed:
            self.assertEqual(d.notification(), [{"channelID": chid, "version": 5}])
        ws = spd.ws_connect(self.other.public_port)
        self.addCleanup(spd.ws_close, ws)
        self.assertEqual(spd.hello(ws, d.uaid, []), {"messageType": "hello", "status": 200,
                                                     "uaid": d.uaid})
        msg = spd.recv_json(ws)
        self.assertEqual(msg, {"messageType": "notification",
                               "updates": [{"channelID": chid, "version": 5}]})


if __name__ == "__main__":
    unittest.main()
