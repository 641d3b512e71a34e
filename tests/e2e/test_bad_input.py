"""
Abuse: malformed JSON, non-objects, wrong types, huge fields and messages, binary frames,
invalid UTF-8, protocol violations, malformed HTTP (SPEC §1, §2, §4; reference §16 items
21-23). A healthy device stays connected throughout each class; after every test it must
still answer pings and receive notifications, and the daemon must still be clean.
"""

import json
import re
import socket
import struct
import time
import unittest

import spd
from spd import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, expect_close, \
    hello, new_chid, recv_json, send_json

MAX_MESSAGE = 262144


class AbuseCase(spd.HealthyDeviceCase):
    """The healthy device of spd.HealthyDeviceCase is checked after every test."""

    def assertClosedWithoutReply(self, conn, code=None):
        """conn: websocket-client socket or RawWS. code None: any close."""
        if isinstance(conn, spd.RawWS):
            got, msgs = conn.expect_close()
        else:
            got, msgs = expect_close(conn)
        self.assertEqual(msgs, [], "no reply expected")
        if code is not None:
            self.assertEqual(got, code)
        return got


class TestMalformedMessages(AbuseCase):

    def test_malformed_json_closes_without_reply(self):
        for text in ("{", "}", "not json", '{"messageType":', '{"messageType":"hello",}',
                     "{'messageType':'hello'}", '{"a":1}{"b":2}', "{}}", "\x00", " ",
                     '{"messageType":"hello","channelIDs":[]', '{"a":NaN}', '{"a":01}'):
            for after_hello in (False, True):
                with self.subTest(text=text, after_hello=after_hello):
                    ws = self.ws()
                    if after_hello:
                        self.assertEqual(hello(ws, channelIDs=[])["status"], 200)
                    ws.send(text)
                    self.assertClosedWithoutReply(ws, 1000)

    def test_empty_text_message(self):
        r = self.raw_ws()
        r.send_text(b"")
        self.assertClosedWithoutReply(r, 1000)

    def test_non_objects_close_without_reply(self):
        for text in ("[]", "[{}]", '"hello"', "123", "null", "true", "false", '[{"messageType"'
                     ':"hello","channelIDs":[]}]', "1.5e10"):
            with self.subTest(text=text):
                ws = self.ws()
                ws.send(text)
                self.assertClosedWithoutReply(ws, 1000)

    def test_deeply_nested_json(self):
        for text in ("[" * 100000 + "]" * 100000,
                     '{"messageType":"ping","x":' + "[" * 50000 + "]" * 50000 + "}",
                     '{"a":' * 20000 + "1" + "}" * 20000):
            with self.subTest(text=text[:20]):
                ws = self.ws()
                ws.send(text)
                # Refused one way or another (no reply and close, or an error and close),
                # but the daemon survives; a ping answer is acceptable only with a close.
                spd.expect_close(ws)

    def test_nul_and_control_characters(self):
        # Either rejected as malformed JSON (close, no reply) or answered 401 and closed.
        for obj in ({"messageType": "hel\u0000lo", "channelIDs": []},
                    {"messageType": "register", "channelID": new_chid() + "\u0000"},
                    {"messageType": "\u0000"}, {"messageType": "hello\u0001",
                                                "channelIDs": []}):
            with self.subTest(obj=obj):
                ws = self.ws()
                if obj["messageType"] == "register":
                    self.assertEqual(hello(ws, channelIDs=[])["status"], 200)
                send_json(ws, obj)
                code, msgs = expect_close(ws)
                self.assertLessEqual(len(msgs), 1, msgs)
                for m in msgs:
                    self.assertEqual(json.loads(m), spd.error_echo(obj, 401,
                                                                   "Invalid Command"))

    def test_duplicate_keys_close_without_reply(self):
        # SPEC is silent; docs/protocol.md: an object with duplicate keys is malformed.
        ws = self.ws()
        ws.send('{"messageType":"ping","messageType":"hello","channelIDs":[]}')
        self.assertClosedWithoutReply(ws, 1000)


class TestWrongTypesAndHugeFields(AbuseCase):

    def test_wrong_types(self):
        cases = [
            (False, {"messageType": "hello", "uaid": 1, "channelIDs": []}),
            (False, {"messageType": "hello", "channelIDs": "abc"}),
            (True, {"messageType": "register", "channelID": 123}),
            (True, {"messageType": "register", "channelID": [new_chid()]}),
            (True, {"messageType": "unregister", "channelID": {"a": 1}}),
            (True, {"messageType": "ack", "updates": "x"}),
            (True, {"messageType": "ack", "updates": {"channelID": new_chid(), "version": 1}}),
            (False, {"messageType": 1.5}),
            (False, {"messageType": ["hello"]}),
        ]
        for after_hello, req in cases:
            with self.subTest(req=req):
                ws = self.ws()
                if after_hello:
                    self.assertEqual(hello(ws, channelIDs=[])["status"], 200)
                self.assertErrorClose(ws, req, 401, "Invalid Command")

    def test_huge_uaid_gets_new(self):
        reply = hello(self.ws(), "u" * 200000, [])
        self.assertEqual(reply["status"], 200)
        self.assertRegex(reply["uaid"], spd.UAID_RE)

    def test_huge_channelid_is_401(self):
        ws = self.ws()
        self.assertEqual(hello(ws, channelIDs=[])["status"], 200)
        # 50 000 characters: the echoed error reply stays under max_pending_bytes.
        self.assertErrorClose(ws, {"messageType": "register", "channelID": "a" * 50000}, 401,
                              "Invalid Command")

    def test_huge_message_type_is_401(self):
        self.assertErrorClose(self.ws(), {"messageType": "x" * 50000}, 401, "Invalid Command")

    def test_many_channelids_in_hello(self):
        # 6000 entries: over max_channels, so a fresh uaid; never a crash.
        reply = hello(self.ws(), spd.new_uaid(), [new_chid() for _ in range(6000)])
        self.assertEqual(reply["status"], 200)
        self.assertRegex(reply["uaid"], spd.UAID_RE)

    def test_130kb_message_answered(self):
        junk = "j" * (130 * 1024)
        ws = self.ws()
        reply = hello(ws, channelIDs=[], junk=junk, more={"a": [junk[:1000]] * 5})
        self.assertEqual(reply["status"], 200)
        send_json(ws, {"messageType": "ping", "junk": junk})
        self.assertEqual(spd.recv_text(ws), "{}")
        chid = new_chid()
        send_json(ws, {"messageType": "register", "channelID": chid, "junk": junk})
        self.assertEqual(recv_json(ws)["status"], 200)

    def test_130kb_message_fragmented(self):
        junk = "k" * (130 * 1024)
        for fragments in (2, 7, 200):
            with self.subTest(fragments=fragments):
                r = self.raw_ws()
                r.send_json({"messageType": "hello", "channelIDs": [], "junk": junk},
                            fragments=fragments)
                self.assertEqual(r.recv_json()["status"], 200)
                r.send_json({"messageType": "ping", "junk": junk}, fragments=fragments)
                op, payload = r.recv_message()
                self.assertEqual((op, payload), (OP_TEXT, b"{}"))

    def test_message_at_max_size_answered(self):
        head = '{"messageType":"ping","j":"'
        text = head + "m" * (MAX_MESSAGE - len(head) - 2) + '"}'
        self.assertEqual(len(text), MAX_MESSAGE)
        r = self.raw_ws()
        r.send_text(text, fragments=3)
        self.assertEqual(r.recv_message(), (OP_TEXT, b"{}"))

    def test_message_over_max_size_closes_1009(self):
        head = '{"messageType":"ping","j":"'
        text = head + "m" * (MAX_MESSAGE - len(head) - 1) + '"}'
        self.assertEqual(len(text), MAX_MESSAGE + 1)
        for fragments in (1, 4):
            with self.subTest(fragments=fragments):
                r = self.raw_ws()
                try:
                    r.send_text(text, fragments=fragments)
                except OSError:
                    pass
                self.assertClosedWithoutReply(r, 1009)

    def test_much_too_big_message_closes_1009(self):
        ws = self.ws()
        try:
            ws.send("{" + " " * (4 * 1024 * 1024) + "}")
        except Exception:
            pass
        code, msgs = expect_close(ws, timeout=10)
        self.assertEqual(msgs, [])
        self.assertEqual(code, 1009)


class TestFrames(AbuseCase):

    def test_binary_frame_closes_1003(self):
        for after_hello in (False, True):
            for payload in (b"{}", b"", json.dumps({"messageType": "hello",
                                                     "channelIDs": []}).encode()):
                with self.subTest(after_hello=after_hello, payload=payload[:10]):
                    r = self.raw_ws()
                    if after_hello:
                        r.send_json({"messageType": "hello", "channelIDs": []})
                        self.assertEqual(r.recv_json()["status"], 200)
                    r.send_frame(OP_BINARY, payload)
                    self.assertClosedWithoutReply(r, 1003)

    def test_binary_frame_websocket_client(self):
        ws = self.ws()
        ws.send_binary(b'{"messageType":"hello","channelIDs":[]}')
        code, msgs = expect_close(ws)
        self.assertEqual((code, msgs), (1003, []))

    def test_invalid_utf8_closes_1007(self):
        bad = [b'{"messageType":"ping","x":"\xff"}', b"\xfe\xff", b'{"a":"\xc0\x80"}',
               b'{"a":"\xed\xa0\x80"}', b'{"a":"\xf4\x90\x80\x80"}', b'{"a":"\xe2\x82"}']
        for payload in bad:
            with self.subTest(payload=payload):
                r = self.raw_ws()
                r.send_frame(OP_TEXT, payload)
                self.assertClosedWithoutReply(r, 1007)

    def test_invalid_utf8_across_fragments_closes_1007(self):
        r = self.raw_ws()
        r.send_frame(OP_TEXT, b'{"messageType":"ping","x":"\xe2\x82', fin=False)
        r.send_frame(OP_CONT, b'A"}', fin=True)
        self.assertClosedWithoutReply(r, 1007)

    def test_valid_utf8_split_across_fragments(self):
        payload = '{"messageType":"ping","x":"\u20ac\U0001f600"}'.encode()
        cut = payload.index(b"\xe2") + 1
        r = self.raw_ws()
        r.send_frame(OP_TEXT, payload[:cut], fin=False)
        r.send_frame(OP_CONT, payload[cut:cut + 2], fin=False)
        r.send_frame(OP_CONT, payload[cut + 2:], fin=True)
        self.assertEqual(r.recv_message(), (OP_TEXT, b"{}"))

    def test_unmasked_frame(self):
        # RFC 6455 §5.1 wants a close; SPEC is silent and libwebsockets 4.1.6 gives the
        # daemon no way to see the mask bit. Either a close (1002 or none) or a normal
        # answer is accepted; what matters is that the daemon and the others are unharmed.
        r = self.raw_ws()
        r.send_frame(OP_TEXT, b"{}", mask=False)
        try:
            op, payload = r.recv_message()
        except spd.Closed:
            return
        if op == OP_CLOSE:
            self.assertIn(spd._close_code(payload)[0], (1002,))
        else:
            self.assertEqual((op, payload), (OP_TEXT, b"{}"))

    def test_reserved_opcode_and_rsv_bits_close(self):
        for op, rsv in ((0x3, 0), (0xB, 0), (OP_TEXT, 4), (OP_TEXT, 1)):
            with self.subTest(op=op, rsv=rsv):
                r = self.raw_ws()
                r.send_frame(op, b"{}", rsv=rsv)
                code, msgs = r.expect_close()
                self.assertEqual(msgs, [])
                self.assertIn(code, (None, 1002))

    def test_continuation_without_start_closes(self):
        r = self.raw_ws()
        r.send_frame(OP_CONT, b"{}", fin=True)
        code, msgs = r.expect_close()
        self.assertEqual(msgs, [])
        self.assertIn(code, (None, 1002))

    def test_ws_ping_answered_with_pong(self):
        r = self.raw_ws()
        r.send_frame(OP_PING, b"are you there")
        fin, op, payload = r.recv_frame()
        self.assertEqual((op, payload), (OP_PONG, b"are you there"))
        # Interleaved with a fragmented message.
        r.send_frame(OP_TEXT, b'{"messageType"', fin=False)
        r.send_frame(OP_PING, b"p2")
        r.send_frame(OP_CONT, b':"ping"}', fin=True)
        frames = [r.recv_frame()[1:] for _ in range(2)]
        self.assertEqual(sorted(frames), sorted([(OP_PONG, b"p2"), (OP_TEXT, b"{}")]))

    def test_client_close_is_answered(self):
        r = self.raw_ws()
        r.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye")
        code, msgs = r.expect_close()
        self.assertEqual(msgs, [])
        self.assertEqual(code, 1000)

    def test_abrupt_disconnects(self):
        for stage in range(4):
            with self.subTest(stage=stage):
                r = spd.RawWS(self.port)
                if stage >= 1:
                    r.send_json({"messageType": "hello", "channelIDs": []})
                if stage >= 2:
                    r.send_frame(OP_TEXT, b'{"messageType":"regis', fin=False)
                if stage >= 3:
                    r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))  # RST
                r.close()
        for _ in range(20):
            s = socket.create_connection((spd.HOST, self.port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            s.close()
        time.sleep(0.2)


class TestHttpAbuse(AbuseCase):

    def request(self, text, timeout=5):
        return self.raw_http(text.replace("\n", "\r\n").encode(), timeout=timeout)

    def token_path(self):
        return "/update/" + spd.token_of(self.healthy_endpoint)

    def assertRefusedJSON(self, r, allowed=None):
        """A 4xx/5xx JSON response, or the connection closed without one."""
        if r is None:
            return
        self.assertGreaterEqual(r.status, 400, r)
        if allowed:
            self.assertIn(r.status, allowed, r)
        self.assertEqual(r.content_type(), "application/json", r)
        r.json()

    def test_upgrade_h2c_refused_400(self):
        r = self.request("GET / HTTP/1.1\nHost: x\nConnection: Upgrade, HTTP2-Settings\n"
                         "Upgrade: h2c\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\n\n")
        self.assertIsNotNone(r)
        self.assertError(r, 400)

    def test_upgrade_other_refused(self):
        for up in ("foo", "websocket2", "h2", "TLS/1.2"):
            with self.subTest(upgrade=up):
                r = self.request("GET /status/ HTTP/1.1\nHost: x\nConnection: Upgrade\n"
                                 "Upgrade: %s\n\n" % up)
                if r is not None:
                    self.assertGreaterEqual(r.status, 400, r)
                    self.assertLess(r.status, 500, r)

    # libwebsockets 4.1.6 would answer these itself (403, HTML) before any callback of ours;
    # the gate checks the request head before lws parses it (docs/security.md).
    def test_upgrade_other_refused_400_json(self):
        # SPEC §1: any Upgrade other than websocket is refused with 400, and every HTTP
        # response is JSON.
        for up in ("foo", "websocket2", "h2", "TLS/1.2"):
            with self.subTest(upgrade=up):
                r = self.request("GET /status/ HTTP/1.1\nHost: x\nConnection: Upgrade\n"
                                 "Upgrade: %s\n\n" % up)
                self.assertIsNotNone(r)
                self.assertError(r, 400)

    def test_http2_preface_refused(self):
        s = socket.create_connection((spd.HOST, self.port), timeout=2)
        self.addCleanup(s.close)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        try:
            data = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            data = b""
        self.assertFalse(data.startswith(b"\x00"), "answered with HTTP/2 frames: %r"
                         % data[:50])
        self.assertNotIn(b" 200 ", data[:20])

    def test_huge_headers(self):
        for size in (8 * 1024, 64 * 1024, 1024 * 1024):
            with self.subTest(size=size):
                r = self.request("GET /status/ HTTP/1.1\nHost: x\nX-Big: %s\n\n" % ("a" * size))
                if r is not None:
                    self.assertEqual(r.content_type(), "application/json", r)
                    if size >= 1024 * 1024:
                        self.assertGreaterEqual(r.status, 400, r)

    def test_many_headers(self):
        hdrs = "".join("X-H%d: v\n" % i for i in range(2000))
        r = self.request("GET /status/ HTTP/1.1\nHost: x\n%s\n" % hdrs)
        if r is not None:
            self.assertEqual(r.content_type(), "application/json", r)

    def test_huge_url(self):
        for size in (4096, 100000):
            with self.subTest(size=size):
                r = self.request("PUT /update/%s HTTP/1.1\nHost: x\nContent-Length: 0\n\n"
                                 % ("A" * size))
                self.assertRefusedJSON(r)

    # libwebsockets 4.1.6 would answer these itself (403, HTML) before any callback of ours;
    # the gate checks the request head before lws parses it (docs/security.md).
    def test_garbage_request_lines(self):
        for text in ("GARBAGE\n\n", "GET\n\n", "GET / HTTP/9.9\nHost: x\n\n",
                     "\x00\x01\x02\x03\n\n", "GET / HTTP/1.1\nHost: x\nBadHeader\n\n",
                     "GET / HTTP/1.1\nHost: x\nContent-Length: 1\nContent-Length: 2\n\nab"):
            with self.subTest(text=text[:20]):
                try:
                    r = self.request(text, timeout=2)
                except (AssertionError, OSError):
                    r = None  # no complete response: closed or still waiting
                if r is not None:
                    self.assertGreaterEqual(r.status, 400, r)
                    self.assertEqual(r.content_type(), "application/json", r)

    def test_put_without_length_or_body(self):
        r = self.request("PUT %s?version=1 HTTP/1.1\nHost: x\nConnection: close\n\n"
                         % self.token_path())
        self.assertIsNotNone(r)
        # No body at all is a valid request; it is delivered (the healthy device is online).
        self.assertJSONResponse(r, 200, {})
        msg = recv_json(self.healthy_ws)
        self.assertEqual(msg["updates"][0]["version"], 1)
        send_json(self.healthy_ws, {"messageType": "ack", "updates": msg["updates"]})

    def test_body_shorter_than_content_length(self):
        s = socket.create_connection((spd.HOST, self.port), timeout=5)
        self.addCleanup(s.close)
        s.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: 100\r\n"
                   "\r\nversion=1" % (self.token_path(), spd.FORM)).encode())
        time.sleep(0.3)
        s.close()
        time.sleep(0.1)
        spd.expect_silence(self.healthy_ws, 0.3)

    def test_bad_tokens_abuse(self):
        for tok in ("%00", "..", "%2e%2e%2f", "%C3%A9" * 10, "A" * 89 + "%41", "\u00e9"):
            with self.subTest(token=tok):
                path = "/update/" + tok
                r = self.request("PUT %s HTTP/1.1\nHost: x\nContent-Length: 0\n"
                                 "Connection: close\n\n" % path)
                self.assertRefusedJSON(r, (400, 404))

    # libwebsockets 4.1.6 parses a pipelined request (one that came in the same read as the
    # request before it) from its buffer list, then reads that request's body from the same
    # list, from its start: the head is taken as the body, and body completion is then
    # called again and again without end, inside lws (the daemon hung at 100% CPU). The
    # daemon closes such a connection after answering what came before.

    def pipelined(self, data):
        """Sends data in one write; returns the (status, body) of every answer until close."""
        s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(5))
        self.addCleanup(s.close)
        s.sendall(data)
        out = spd.read_until_closed(s)
        answers = []
        while b"\r\n\r\n" in out:
            head, _, rest = out.partition(b"\r\n\r\n")
            n = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
            answers.append((int(head.split(b" ")[1]), rest[:n]))
            out = rest[n:]
        return answers

    def put_request(self, version, extra=""):
        body = "version=%d" % version
        return ("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s"
                % (self.token_path(), spd.FORM, len(body), extra, body)).encode()

    def next_version(self):
        type(self).healthy_version += 1
        return type(self).healthy_version

    def assertDelivered(self, version):
        msg = recv_json(self.healthy_ws)
        self.assertEqual(msg["updates"], [{"channelID": self.healthy_chid, "version": version}])
        send_json(self.healthy_ws, {"messageType": "ack", "updates": msg["updates"]})

    def test_pipelined_put_after_get_is_not_served(self):
        got = self.pipelined(b"GET /status/ HTTP/1.1\r\nHost: x\r\n\r\n" + self.put_request(7777))
        self.assertEqual([status for status, _ in got], [200])
        spd.expect_silence(self.healthy_ws, 0.3)  # not applied, with any version

    def test_pipelined_put_after_put(self):
        v = self.next_version()
        got = self.pipelined(self.put_request(v) + self.put_request(9999))
        self.assertEqual(got, [(200, b"{}")])
        self.assertDelivered(v)
        spd.expect_silence(self.healthy_ws, 0.3)

    def test_bytes_after_a_put_body(self):
        # Answered and applied once (RFC 9112 forbids the CRLF; old clients sent it).
        v = self.next_version()
        got = self.pipelined(self.put_request(v, "Connection: close\r\n") + b"\r\n")
        self.assertEqual(got, [(200, b"{}")])
        self.assertDelivered(v)
        spd.expect_silence(self.healthy_ws, 0.3)

    def test_many_concurrent_http_connections(self):
        socks = []
        for _ in range(50):
            s = socket.create_connection((spd.HOST, self.port), timeout=5)
            socks.append(s)
            self.addCleanup(s.close)
        for s in socks:
            s.sendall(b"GET /__lbheartbeat__ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for s in socks:
            r = spd.read_http_response(s)
            self.assertIsNotNone(r)
            self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    unittest.main()
