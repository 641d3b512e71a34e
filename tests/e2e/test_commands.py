"""
register, unregister, ack, purge, ping and unknown commands: SPEC §4, reference §16 items
1, 11-21.
"""

import re
import unittest

import spd
from spd import expect_close, expect_silence, hello, new_chid, new_uaid, recv_json, \
    recv_text, send_json

INVALID = "Invalid Command"


class TestPing(spd.DaemonCase):

    def test_empty_object_before_hello(self):
        ws = self.ws()
        ws.send("{}")
        self.assertEqual(recv_text(ws), "{}")

    def test_ping_message_type_variants(self):
        ws = self.ws()
        for msg in ('{"messageType":"ping"}', '{"messageType":"PING","extra":[1,2]}',
                    '{"messageType":"Ping","uaid":"x"}', ' { } ', '{\n}'):
            with self.subTest(msg=msg):
                ws.send(msg)
                self.assertEqual(recv_text(ws), "{}")

    def test_ping_after_hello(self):
        ws = self.ws()
        self.assertEqual(hello(ws, channelIDs=[])["status"], 200)
        for _ in range(3):
            spd.ping(ws)
        ws.send('{"messageType":"ping"}')
        self.assertEqual(recv_text(ws), "{}")

    def test_pipelined_pings(self):
        ws = self.ws()
        for _ in range(50):
            ws.send("{}")
        for _ in range(50):
            self.assertEqual(recv_text(ws), "{}")

    def test_purge_before_and_after_hello(self):
        ws = self.ws()
        for mt in ("purge", "PURGE"):
            send_json(ws, {"messageType": mt})
            self.assertEqual(recv_json(ws), {})
        self.assertEqual(hello(ws, channelIDs=[])["status"], 200)
        send_json(ws, {"messageType": "purge"})
        self.assertEqual(recv_json(ws), {})
        spd.ping(ws)


class TestBeforeHello(spd.DaemonCase):
    """Commands other than hello, ping and purge before hello: 401, echo, close 1000."""

    def test_register_before_hello(self):
        self.assertErrorClose(self.ws(), {"messageType": "register", "channelID": new_chid()},
                              401, INVALID)

    def test_unregister_before_hello(self):
        self.assertErrorClose(self.ws(), {"messageType": "unregister",
                                          "channelID": new_chid()}, 401, INVALID)

    def test_ack_before_hello_echoes_updates(self):
        req = {"messageType": "ack", "updates": [{"channelID": new_chid(), "version": 3}]}
        self.assertErrorClose(self.ws(), req, 401, INVALID)

    def test_uppercase_command_reply_is_lowercase(self):
        self.assertErrorClose(self.ws(), {"messageType": "REGISTER", "channelID": new_chid(),
                                          "extra": {"k": [1]}}, 401, INVALID)

    def test_ping_still_works_on_other_sockets(self):
        ws = self.ws()
        self.assertErrorClose(self.ws(), {"messageType": "register"}, 401, INVALID)
        spd.ping(ws)


class TestRegister(spd.DaemonCase):
    CONFIG = {"storage": {"max_channels": "3"}}

    def assertEndpoint(self, endpoint):
        prefix = "http://127.0.0.1:%d/update/" % self.port
        self.assertTrue(endpoint.startswith(prefix), endpoint)
        self.assertRegex(endpoint[len(prefix):], spd.TOKEN_RE)

    def test_register_reply(self):
        d = self.device()
        chid = new_chid()
        send_json(d.ws, {"messageType": "register", "channelID": chid})
        reply = recv_json(d.ws)
        self.assertEqual(set(reply), {"messageType", "channelID", "status", "pushEndpoint"},
                         reply)
        self.assertEqual(reply["messageType"], "register")
        self.assertEqual(reply["channelID"], chid)
        self.assertEqual(reply["status"], 200)
        self.assertEndpoint(reply["pushEndpoint"])

    def test_channelid_spellings_echoed(self):
        d = self.device()
        base = new_chid()
        mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(base))
        for chid in (base, base.upper(), base.replace("-", ""), base.replace("-", "").upper(),
                     mixed):
            with self.subTest(chid=chid):
                self.assertEndpoint(spd.register(d.ws, chid))

    def test_messagetype_case_and_extra_fields(self):
        d = self.device()
        chid = new_chid()
        send_json(d.ws, {"messageType": "Register", "channelID": chid, "uaid": "ignored",
                         "key": "x"})
        reply = recv_json(d.ws)
        self.assertEqual(reply["messageType"], "register")
        self.assertEqual(reply["status"], 200)
        self.assertEqual(reply["channelID"], chid)

    def test_register_twice_idempotent_all_endpoints_valid(self):
        d = self.device()
        chid = new_chid()
        e1 = spd.register(d.ws, chid)
        e2 = spd.register(d.ws, chid)
        for i, ep in enumerate((e1, e2), 1):
            self.assertEndpoint(ep)
            self.assertJSONResponse(spd.put(ep, version=i), 200, {})
            self.assertEqual(d.notification(), [{"channelID": chid, "version": i}])

    def test_invalid_channelid_is_401(self):
        good = new_chid()
        for value in ("", "not-a-uuid", good[:-1], good + "0", good.replace("-", "")[:31],
                      good[:8] + "_" + good[9:], "x" * 101, "x" * 20000, 123, None, True,
                      [good], {"id": good}):
            with self.subTest(channelID=str(value)[:40]):
                d = self.device()
                self.assertErrorClose(d.ws, {"messageType": "register", "channelID": value},
                                      401, INVALID)

    def test_missing_channelid_is_401(self):
        d = self.device()
        self.assertErrorClose(d.ws, {"messageType": "register"}, 401, INVALID)
        d = self.device()
        self.assertErrorClose(d.ws, {"messageType": "register", "channelIDs": [new_chid()]},
                              401, INVALID)

    def test_too_many_channels_is_413_without_close(self):
        d = self.device(channels=3)
        req = {"messageType": "register", "channelID": new_chid()}
        send_json(d.ws, req)
        self.assertEqual(recv_json(d.ws), spd.error_echo(req, 413, "Too Many Channels"))
        d.ping()
        # Freeing a slot makes room.
        d.unregister(next(iter(d.endpoints)))
        d.register()
        d.ping()

    def test_reregister_at_limit_is_idempotent(self):
        d = self.device(channels=3)
        for chid in list(d.endpoints):
            spd.register(d.ws, chid)
        d.ping()

    def test_register_on_second_uaid_spelling(self):
        # Channels belong to the uaid, whichever spelling said hello.
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        u = d.uaid
        ws = self.ws()
        dashed = "%s-%s-%s-%s-%s" % (u[:8], u[8:12], u[12:16], u[16:20], u[20:])
        self.assertEqual(hello(ws, dashed, [chid])["uaid"], dashed)
        ep = spd.register(ws, new_chid())
        self.assertJSONResponse(spd.put(ep, version=4), 200, {})
        msg = recv_json(ws)
        self.assertEqual(msg["messageType"], "notification")


class TestUnregister(spd.DaemonCase):

    def test_unregister_reply(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        send_json(d.ws, {"messageType": "unregister", "channelID": chid})
        self.assertEqual(recv_json(d.ws), {"messageType": "unregister", "channelID": chid,
                                           "status": 200})

    def test_unregister_unknown_and_twice(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        for c in (chid, chid, new_chid(), new_chid().upper()):
            send_json(d.ws, {"messageType": "UNREGISTER", "channelID": c})
            self.assertEqual(recv_json(d.ws), {"messageType": "unregister", "channelID": c,
                                               "status": 200})
        d.ping()

    def test_unregister_missing_or_invalid_channelid_is_401(self):
        for req in ({"messageType": "unregister"},
                    {"messageType": "unregister", "channelID": ""},
                    {"messageType": "unregister", "channelID": "junk"},
                    {"messageType": "unregister", "channelID": 5},
                    {"messageType": "unregister", "channelID": None}):
            with self.subTest(req=req):
                d = self.device()
                self.assertErrorClose(d.ws, req, 401, INVALID)


class TestAck(spd.DaemonCase):

    def test_ack_has_no_reply(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertJSONResponse(d.put(chid, version=9), 200, {})
        updates = d.notification()
        d.ack(updates)
        d.expect_nothing_pending()

    def test_empty_updates_accepted(self):
        d = self.device()
        send_json(d.ws, {"messageType": "ack", "updates": []})
        d.expect_nothing_pending()

    def test_malformed_entries_skipped(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        send_json(d.ws, {"messageType": "ack", "updates": [
            1, "x", None, [], {}, {"channelID": 1, "version": 1}, {"channelID": chid},
            {"version": 1}, {"channelID": chid, "version": "1"},
            {"channelID": new_chid(), "version": 1}]})
        d.expect_nothing_pending()

    def test_updates_missing_or_not_array_is_401(self):
        for req in ({"messageType": "ack"}, {"messageType": "ack", "updates": None},
                    {"messageType": "ack", "updates": "x"},
                    {"messageType": "ack", "updates": {"channelID": new_chid(), "version": 1}},
                    {"messageType": "ack", "updates": 7}):
            with self.subTest(req=req):
                d = self.device()
                self.assertErrorClose(d.ws, req, 401, INVALID)


class TestUnknownCommands(spd.DaemonCase):

    def test_unknown_message_types(self):
        for mt in ("foo", "", " hello", "hello ", "notification", "helloo", "regist"):
            with self.subTest(messageType=mt):
                self.assertErrorClose(self.ws(), {"messageType": mt, "x": 1}, 401, INVALID)

    def test_non_string_message_type(self):
        for mt in (123, None, True, [], {"a": 1}, ["hello"]):
            with self.subTest(messageType=mt):
                self.assertErrorClose(self.ws(), {"messageType": mt}, 401, INVALID)

    def test_object_without_message_type(self):
        for req in ({"foo": 1}, {" messageType ": "hello"}, {"messagetype": "hello",
                                                             "channelIDs": []},
                    {"MessageType": "ping"}):
            with self.subTest(req=req):
                self.assertErrorClose(self.ws(), req, 401, INVALID)

    def test_unknown_after_hello(self):
        d = self.device()
        self.assertErrorClose(d.ws, {"messageType": "bogus", "uaid": d.uaid}, 401, INVALID)


if __name__ == "__main__":
    unittest.main()
