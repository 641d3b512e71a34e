"""
hello: SPEC §5 (and §2, §3 for the transport and the uaid forms), reference §16 items 2-10.
"""

import unittest

import spd
from spd import MISSING, error_echo, expect_close, hello, new_chid, new_uaid, recv_json, \
    send_json


def hello_reply(uaid):
    return {"messageType": "hello", "status": 200, "uaid": uaid}


class TestHello(spd.DaemonCase):
    CONFIG = {"storage": {"max_channels": "3"}}

    def assertNewUaid(self, reply, sent=None):
        self.assertEqual(set(reply), {"messageType", "status", "uaid"}, reply)
        self.assertEqual(reply["messageType"], "hello", reply)
        self.assertEqual(reply["status"], 200, reply)
        u = reply["uaid"]
        self.assertRegex(u, spd.UAID_RE)
        # A UUIDv4: version nibble 4, variant 10xx.
        self.assertEqual(u[12], "4", u)
        self.assertIn(u[16], "89ab", u)
        if isinstance(sent, str):
            self.assertNotEqual(u.lower(), sent.lower().replace("-", ""))
        return u

    # --- new uaids (rule 3) -----------------------------------------------------------------

    def test_missing_uaid_gets_new(self):
        u = self.assertNewUaid(hello(self.ws(), channelIDs=[]))
        v = self.assertNewUaid(hello(self.ws(), channelIDs=[]))
        self.assertNotEqual(u, v)

    def test_null_and_empty_uaid_get_new(self):
        for uaid in (None, ""):
            with self.subTest(uaid=uaid):
                self.assertNewUaid(hello(self.ws(), uaid, []))

    def test_invalid_uaid_forms_get_new(self):
        good = new_uaid()
        dashed = new_uaid(dashed=True)
        bad = [
            "valid_uaid", " fooey barrey ", "0", "True", "x" * 64000,
            good[:31], good + "0", good[:31] + "g", "{%s}" % dashed, dashed.replace("-", "_"),
            dashed[:8] + dashed[9:] + "-",  # 36 characters, dash misplaced
            dashed[:-1], " " + good, good + " ", good.replace(good[0], "\u00e9", 1),
        ]
        for uaid in bad:
            with self.subTest(uaid=uaid[:40]):
                self.assertNewUaid(hello(self.ws(), uaid, []), uaid)

    def test_unknown_uaid_with_channels_gets_new(self):
        uaid = new_uaid()
        self.assertNewUaid(hello(self.ws(), uaid, [new_chid()]), uaid)

    def test_too_many_channelids_gets_new_and_drops_old_data(self):
        d = self.device(channels=1)
        (chid, endpoint), = d.endpoints.items()
        old = d.uaid
        d.disconnect()
        ws = self.ws()
        reply = hello(ws, old, [chid] + [new_chid() for _ in range(3)])  # 4 > max 3
        self.assertNewUaid(reply, old)
        # The old uaid was dropped by this reset: its endpoint is gone.
        self.assertError(spd.put(endpoint, version=1), 410)

    # --- kept uaids -----------------------------------------------------------------------

    def test_unknown_valid_uaid_without_channels_is_echoed_byte_for_byte(self):
        for uaid in (new_uaid(), new_uaid(upper=True), new_uaid(dashed=True),
                     new_uaid(upper=True, dashed=True),
                     "".join(c.upper() if i % 3 else c for i, c in enumerate(new_uaid(
                         dashed=True)))):
            with self.subTest(uaid=uaid):
                self.assertEqual(hello(self.ws(), uaid, []), hello_reply(uaid))

    def test_known_uaid_that_registered_nothing_is_kept(self):
        uaid = new_uaid()
        ws = self.ws()
        self.assertEqual(hello(ws, uaid, []), hello_reply(uaid))
        spd.ws_close(ws)
        # Known now, so a non-empty channelIDs does not reset it.
        self.assertEqual(hello(self.ws(), uaid, [new_chid()]), hello_reply(uaid))

    def test_known_uaid_with_channels_is_kept_and_endpoints_stay_valid(self):
        d = self.device(channels=2)
        d.disconnect()
        for chid in d.endpoints:
            self.assertJSONResponse(d.put(chid, version=5), 202, {})
        d.reconnect()
        updates = d.notification()
        self.assertEqual(sorted((u["channelID"], u["version"]) for u in updates),
                         sorted((c, 5) for c in d.endpoints))

    def test_exactly_max_channels_is_kept(self):
        d = self.device(channels=3)
        d.disconnect()
        d.reconnect()
        d.expect_nothing_pending()

    def test_kept_uaid_echoed_in_each_spelling(self):
        # The same uaid written dashed and upper case names the same device; the reply
        # echoes the spelling of this hello.
        d = self.device(channels=1)
        d.disconnect()
        plain = d.uaid
        dashed = "-".join((plain[:8], plain[8:12], plain[12:16], plain[16:20],
                           plain[20:])).upper()
        ws = self.ws()
        self.assertEqual(hello(ws, dashed, list(d.endpoints)), hello_reply(dashed))
        spd.ws_close(ws)
        ws = self.ws()
        self.assertEqual(hello(ws, plain, list(d.endpoints)), hello_reply(plain))

    # --- messageType, extra fields ---------------------------------------------------------

    def test_messagetype_case_insensitive(self):
        for mt in ("HELLO", "Hello", "hElLo"):
            with self.subTest(mt=mt):
                self.assertNewUaid(hello(self.ws(), channelIDs=[], message_type=mt))

    def test_extra_fields_ignored(self):
        reply = hello(self.ws(), channelIDs=[], wakeup_hostport={"ip": "10.0.0.1", "port": 1},
                      mobilenetwork={"mcc": "214", "mnc": "07"},
                      connect={"type": "udp"}, use_webpush=False, junk=[1, {"a": None}])
        self.assertNewUaid(reply)

    def test_channelids_contents_not_validated(self):
        reply = hello(self.ws(), channelIDs=[1, None, "x", {"a": 1}, "\u0001", [], True])
        self.assertNewUaid(reply)

    # --- errors (rules 1, 2) ---------------------------------------------------------------

    def test_channelids_missing_is_401(self):
        self.assertErrorClose(self.ws(), {"messageType": "hello"}, 401, "Invalid Command")
        self.assertErrorClose(self.ws(), {"messageType": "hello", "uaid": new_uaid()}, 401,
                              "Invalid Command")

    def test_channelids_not_array_is_401(self):
        for value in (None, "abc", {"a": 1}, 3, True):
            with self.subTest(channelIDs=value):
                self.assertErrorClose(self.ws(), {"messageType": "hello", "channelIDs": value},
                                      401, "Invalid Command")

    def test_uaid_not_string_is_401(self):
        for value in (123, 1.5, True, False, [], {}, ["abc"]):
            with self.subTest(uaid=value):
                self.assertErrorClose(self.ws(), {"messageType": "hello", "uaid": value,
                                                  "channelIDs": []}, 401, "Invalid Command")

    # --- second hello on a socket (rule 4) -------------------------------------------------

    def test_second_hello_same_or_empty_uaid_is_200_again(self):
        ws = self.ws()
        u = self.assertNewUaid(hello(ws, channelIDs=[]))
        for again in (u, "", None, MISSING):
            with self.subTest(uaid=again):
                self.assertEqual(hello(ws, again, []), hello_reply(u))
        spd.ping(ws)

    def test_second_hello_other_uaid_is_503(self):
        ws = self.ws()
        self.assertNewUaid(hello(ws, channelIDs=[]))
        self.assertErrorClose(ws, {"messageType": "hello", "uaid": new_uaid(),
                                   "channelIDs": []}, 503, "Service Unavailable")

    def test_second_hello_with_kept_uaid(self):
        uaid = new_uaid(dashed=True)
        ws = self.ws()
        self.assertEqual(hello(ws, uaid, []), hello_reply(uaid))
        self.assertEqual(hello(ws, uaid, []), hello_reply(uaid))
        request = {"messageType": "hello", "uaid": new_uaid(dashed=True), "channelIDs": []}
        self.assertErrorClose(ws, request, 503, "Service Unavailable")

    # --- transport (§2) -------------------------------------------------------------------

    def test_subprotocol_echoed(self):
        ws = self.ws()
        self.assertEqual(ws.getsubprotocol(), spd.PROTOCOL)
        self.assertNewUaid(hello(ws, channelIDs=[]))

    def test_without_subprotocol(self):
        ws = self.ws(subprotocol=False)
        self.assertNewUaid(hello(ws, channelIDs=[]))

    def test_any_path(self):
        for path in ("/", "/a", "/a/b/c", "/?x=1", "/push/"):
            with self.subTest(path=path):
                self.assertNewUaid(hello(self.ws(path=path), channelIDs=[]))

    def test_fragmented_hello(self):
        r = self.raw_ws()
        r.send_json({"messageType": "hello", "channelIDs": []}, fragments=5)
        self.assertNewUaid(r.recv_json())

    def test_commands_pipelined_behind_hello(self):
        ws = self.ws()
        chid = new_chid()
        send_json(ws, {"messageType": "hello", "channelIDs": []})
        send_json(ws, {"messageType": "register", "channelID": chid})
        ws.send("{}")
        self.assertNewUaid(recv_json(ws))
        # Then the register reply and the pong, in either order (the register waits for
        # storage, the ping does not).
        rest = sorted((recv_json(ws), recv_json(ws)), key=len)
        self.assertEqual(rest[0], {})
        self.assertEqual((rest[1].get("messageType"), rest[1].get("status"),
                          rest[1].get("channelID")), ("register", 200, chid))

    def test_hello_reply_sent_once_then_quiet(self):
        ws = self.ws()
        self.assertNewUaid(hello(ws, channelIDs=[]))
        spd.expect_silence(ws, 0.5)


if __name__ == "__main__":
    unittest.main()
