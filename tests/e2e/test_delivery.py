"""
Notifications and delivery: SPEC §5 rule 6, §6, §7 (200 vs 202); reference §7, §16 items
16, 18, 24, 28, 29.
"""

import time
import unittest

import spd
from spd import new_chid


def pairs(updates):
    return sorted((u["channelID"], u["version"], u.get("data")) for u in updates)


class TestLiveDelivery(spd.DaemonCase):

    def test_put_delivers_live(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertJSONResponse(d.put(chid, version=5), 200, {})
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 5}])

    def test_live_data(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        for data in ("hello", "a b&c=d+e%", "\u00e9\u4e2d\U0001f600", "x" * 4096):
            with self.subTest(data=data[:20]):
                self.assertJSONResponse(d.put(chid, version=6, data=data), 200, {})
                self.assertEqual(d.notification(), [{"channelID": chid, "version": 6,
                                                     "data": data}])

    def test_empty_data_means_no_data_field(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertJSONResponse(d.put(chid, version=7, data=""), 200, {})
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 7}])

    def test_live_delivery_carries_only_the_updated_channel(self):
        d = self.device(channels=2)
        a, b = list(d.endpoints)
        self.assertJSONResponse(d.put(a, version=1), 200, {})
        self.assertEqual(d.notification(), [{"channelID": a, "version": 1}])
        # a stays unacked; the live message for b names b only.
        self.assertJSONResponse(d.put(b, version=2), 200, {})
        self.assertEqual(d.notification(), [{"channelID": b, "version": 2}])

    def test_channelid_spelling_in_notifications(self):
        d = self.device()
        mixed = "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(new_chid()))
        for chid in (new_chid(upper=True), new_chid(upper=True, dashed=False), mixed):
            d.register(chid)
        for chid in d.endpoints:
            with self.subTest(chid=chid):
                self.assertJSONResponse(d.put(chid, version=11), 200, {})
                self.assertEqual(d.notification(), [{"channelID": chid, "version": 11}])
        # And when read back from storage at the next hello.
        d.disconnect()
        d.reconnect()
        self.assertEqual(pairs(d.notification()), sorted((c, 11, None) for c in d.endpoints))

    def test_version_bounds(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        for v in (0, 1, 2 ** 53 + 1, 2 ** 63 - 1):
            with self.subTest(version=v):
                self.assertJSONResponse(d.put(chid, version=v), 200, {})
                self.assertEqual(d.notification(), [{"channelID": chid, "version": v}])

    def test_version_zero_stored_and_sent_as_zero(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=0), 202, {})
        d.reconnect()
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 0}])

    def test_no_notification_when_nothing_pending(self):
        d = self.device(channels=2)
        d.expect_nothing_pending()
        d.disconnect()
        d.reconnect()
        d.expect_nothing_pending()


class TestStoredDelivery(spd.DaemonCase):

    def test_offline_put_is_202_and_delivered_on_hello(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=42), 202, {})
        d.reconnect()
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 42}])

    def test_data_kept_for_offline_device(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=3, data="offline \u00e9"), 202, {})
        d.reconnect()
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 3,
                                             "data": "offline \u00e9"}])

    def test_all_pending_in_one_notification(self):
        d = self.device(channels=3)
        chids = list(d.endpoints)
        d.disconnect()
        for i, chid in enumerate(chids):
            self.assertJSONResponse(d.put(chid, version=100 + i), 202, {})
        d.reconnect()
        self.assertEqual(pairs(d.notification()),
                         sorted((c, 100 + i, None) for i, c in enumerate(chids)))
        d.expect_nothing_pending()

    def test_pending_flushed_with_empty_channelids(self):
        # A known uaid may say hello with an empty list; its pending updates still flow.
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=8), 202, {})
        d.reconnect(channelIDs=[])
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 8}])

    def test_latest_version_wins(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=1, data="old"), 202, {})
        self.assertJSONResponse(d.put(chid, version=2), 202, {})
        d.reconnect()
        # Only v2, and v1's data does not travel with it.
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 2}])
        d.expect_nothing_pending()

    def test_data_follows_latest_version(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=10), 202, {})
        self.assertJSONResponse(d.put(chid, version=12, data="twelve"), 202, {})
        d.reconnect()
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 12,
                                             "data": "twelve"}])

    def test_lower_version_does_not_replace_higher_pending(self):
        # SPEC §6 leaves the order open; docs/protocol.md: the higher pending version stays.
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=12, data="twelve"), 202, {})
        self.assertJSONResponse(d.put(chid, version=10, data="ten"), 202, {})
        d.reconnect()
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 12,
                                             "data": "twelve"}])

    def test_second_hello_resends_pending(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertJSONResponse(d.put(chid, version=21), 200, {})
        live = d.notification()
        self.assertEqual(spd.hello(d.ws, d.uaid, [chid]),
                         {"messageType": "hello", "status": 200, "uaid": d.uaid})
        self.assertEqual(d.notification(), live)

    def test_unacked_redelivered_on_reconnect(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertJSONResponse(d.put(chid, version=5, data="d"), 200, {})
        live = d.notification()
        self.assertEqual(live, [{"channelID": chid, "version": 5, "data": "d"}])
        d.disconnect()
        d.reconnect()
        self.assertEqual(d.notification(), live)
        # Still unacked: again.
        d.disconnect()
        d.reconnect()
        again = d.notification()
        self.assertEqual(again, live)
        d.ack(again)
        d.expect_nothing_pending()
        d.disconnect()
        d.reconnect()
        d.expect_nothing_pending()

    def test_acked_not_redelivered(self):
        d = self.device(channels=2)
        a, b = list(d.endpoints)
        self.assertJSONResponse(d.put(a, version=1), 200, {})
        self.assertJSONResponse(d.put(b, version=1), 200, {})
        first = d.notification()
        second = d.notification()
        d.ack(first)
        d.ping()
        d.disconnect()
        d.reconnect()
        self.assertEqual(d.notification(), second)

    def test_ack_of_old_version_keeps_newer(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertJSONResponse(d.put(chid, version=1), 200, {})
        v1 = d.notification()
        self.assertJSONResponse(d.put(chid, version=2), 200, {})
        v2 = d.notification()
        self.assertEqual(v2, [{"channelID": chid, "version": 2}])
        d.ack(v1)
        d.ping()
        d.disconnect()
        d.reconnect()
        self.assertEqual(d.notification(), v2)
        d.ack(v2)
        d.ping()
        d.disconnect()
        d.reconnect()
        d.expect_nothing_pending()

    def test_ack_of_higher_version_removes(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertJSONResponse(d.put(chid, version=5), 200, {})
        d.notification()
        d.ack([{"channelID": chid, "version": 6}])
        d.ping()
        d.disconnect()
        d.reconnect()
        d.expect_nothing_pending()

    def test_ack_of_other_channel_removes_nothing(self):
        d = self.device(channels=2)
        a, b = list(d.endpoints)
        self.assertJSONResponse(d.put(a, version=5), 200, {})
        pending = d.notification()
        d.ack([{"channelID": b, "version": 5}])
        d.ping()
        d.disconnect()
        d.reconnect()
        self.assertEqual(d.notification(), pending)

    def test_unregister_drops_pending(self):
        d = self.device(channels=2)
        a, b = list(d.endpoints)
        d.disconnect()
        self.assertJSONResponse(d.put(a, version=3), 202, {})
        self.assertJSONResponse(d.put(b, version=4), 202, {})
        d.reconnect()
        self.assertEqual(pairs(d.notification()), sorted([(a, 3, None), (b, 4, None)]))
        d.unregister(a)
        d.disconnect()
        d.reconnect(channelIDs=[b])
        self.assertEqual(d.notification(), [{"channelID": b, "version": 4}])
        d.disconnect()
        d.reconnect(channelIDs=[a, b])
        self.assertEqual(d.notification(), [{"channelID": b, "version": 4}])

    def test_second_hello_on_socket_keeps_delivering(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertEqual(spd.hello(d.ws, d.uaid, list(d.endpoints)),
                         {"messageType": "hello", "status": 200, "uaid": d.uaid})
        self.assertJSONResponse(d.put(chid, version=77), 200, {})
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 77}])

    def test_hello_reply_comes_before_notification(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=9), 202, {})
        d.ws = self.ws()
        spd.send_json(d.ws, {"messageType": "hello", "uaid": d.uaid,
                             "channelIDs": [chid]})
        self.assertEqual(d.recv(), {"messageType": "hello", "status": 200, "uaid": d.uaid})
        self.assertEqual(d.notification(), [{"channelID": chid, "version": 9}])


class TestResend(spd.DaemonCase):
    CONFIG = {"client": {"resend_interval": "2s"}}

    def test_unacked_resent_until_acked(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        self.assertJSONResponse(d.put(chid, version=31, data="r"), 200, {})
        live = d.notification()
        t0 = time.monotonic()
        self.assertEqual(d.notification(timeout=7), live)
        self.assertGreaterEqual(time.monotonic() - t0, 1.0, "re-sent too early")
        d.ack(live)
        spd.expect_silence(d.ws, 5)

    def test_stored_updates_resent_too(self):
        d = self.device(channels=1)
        chid = next(iter(d.endpoints))
        d.disconnect()
        self.assertJSONResponse(d.put(chid, version=32), 202, {})
        d.reconnect()
        first = d.notification()
        self.assertEqual(d.notification(timeout=7), first)
        d.ack(first)
        spd.expect_silence(d.ws, 5)

    def test_nothing_resent_when_all_acked(self):
        d = self.device(channels=1)
        spd.expect_silence(d.ws, 5)


if __name__ == "__main__":
    unittest.main()
