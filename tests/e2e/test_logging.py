"""
Logging and statsd (operations issue): stderr lines with journald priorities or as MozLog
JSON; the optional Heka sink, one MozLog JSON object per UDP datagram, never blocking, drops
counted; statsd counters with pushgo's names. The tests play Heka and statsd with UDP
sockets of their own.
"""
import json
import os
import re
import signal
import socket
import time
import unittest

import spd


def udp_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((spd.HOST, 0))
    return s


def datagrams(sock, timeout, until=None):
    """Datagrams arriving within timeout seconds (or until until(list) holds)."""
    out = []
    deadline = time.monotonic() + spd.scaled(timeout)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (until and until(out)):
            return out
        sock.settimeout(left)
        try:
            out.append(sock.recv(65536))
        except socket.timeout:
            return out


class TestStderr(unittest.TestCase):
    def test_text_lines_carry_journald_priorities(self):
        d = spd.Daemon(name=self.id()).start()
        self.addCleanup(d.stop)
        lines = [ln for ln in d.log().splitlines() if ln]
        self.assertTrue(lines)
        for ln in lines:
            self.assertRegex(ln, r"^<[0-7]>[a-z]+: ")

    def test_json_lines_are_mozlog(self):
        d = spd.Daemon({"log": {"format": "json"}}, name=self.id()).start()
        self.addCleanup(d.stop)
        lines = [ln for ln in d.log().splitlines() if ln.startswith("{")]
        self.assertTrue(lines, d.log())
        for ln in lines:
            obj = json.loads(ln)
            self.assertEqual(obj["EnvVersion"], "2.0")
            self.assertEqual(obj["Pid"], d.pid())
            self.assertIn("msg", obj["Fields"])


class TestHeka(unittest.TestCase):
    def test_one_mozlog_object_per_datagram(self):
        heka = udp_listener()
        self.addCleanup(heka.close)
        port = heka.getsockname()[1]
        d = spd.Daemon({"heka": {"use": "1", "server_addr": "127.0.0.1:%d" % port,
                                 "logger_name": "push-test"},
                        "log": {"level": "info"}}, name=self.id()).start()
        self.addCleanup(d.stop)
        got = datagrams(heka, 5, until=lambda out: any(b"listening public=" in g for g in out))
        self.assertTrue(got, "no datagram")
        now_ns = time.time_ns()
        for g in got:
            obj = json.loads(g.decode())
            self.assertEqual(set(obj), {"Timestamp", "Type", "Logger", "Hostname", "EnvVersion",
                                        "Severity", "Pid", "Fields"}, obj)
            self.assertIsInstance(obj["Timestamp"], int)
            self.assertLess(abs(now_ns - obj["Timestamp"]), 120 * 10**9, obj)
            self.assertEqual(obj["Logger"], "push-test")
            self.assertEqual(obj["EnvVersion"], "2.0")
            self.assertIn(obj["Severity"], range(0, 8))
            self.assertEqual(obj["Pid"], d.pid())
            self.assertIsInstance(obj["Fields"]["msg"], str)
        self.assertTrue(any("listening public=" in json.loads(g)["Fields"]["msg"] for g in got))

    def test_unreachable_heka_never_blocks_and_drops_are_counted(self):
        # Nobody listens on this port: every datagram is refused and counted, the daemon
        # goes on serving.
        s = udp_listener()
        port = s.getsockname()[1]
        s.close()
        d = spd.Daemon({"heka": {"use": "1", "server_addr": "127.0.0.1:%d" % port},
                        "log": {"level": "debug"}}, name=self.id()).start()
        self.addCleanup(d.stop)
        for _ in range(5):
            ws = spd.ws_connect(d.public_port)
            self.assertEqual(spd.hello(ws)["status"], 200)
            spd.ws_close(ws)
        r = spd.http_request(d.internal_port, "GET", "/metrics")
        self.assertEqual(r.status, 200)
        m = re.search(rb"^simplepushd_log_datagrams_dropped_total (\d+)$", r.body, re.M)
        self.assertTrue(m, r.body[:300])
        self.assertGreater(int(m.group(1)), 0)


class TestStatsd(unittest.TestCase):
    def test_pushgo_names_flushed(self):
        statsd = udp_listener()
        self.addCleanup(statsd.close)
        port = statsd.getsockname()[1]
        d = spd.Daemon({"metrics": {"statsd_server": "127.0.0.1:%d" % port, "prefix": "sp"}},
                       name=self.id()).start()
        self.addCleanup(d.stop)
        ws = spd.ws_connect(d.public_port)
        self.assertEqual(spd.hello(ws)["status"], 200)
        endpoint = spd.register(ws, spd.new_chid())
        self.assertEqual(spd.put(endpoint, version=3).status, 200)
        spd.ws_close(ws)
        # The daemon flushes every 10 s and once more when it stops.
        d.signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(10), 0)
        packets = datagrams(statsd, 2)
        self.assertTrue(packets)
        lines = set()
        for p in packets:
            self.assertLessEqual(len(p), 512)
            for ln in p.decode().split("\n"):
                self.assertRegex(ln, r"^sp\.[a-z_.]+:\d+\|(c|g)$")
                lines.add(ln)
        for want in ("sp.updates.client.hello:1|c", "sp.updates.client.register:1|c",
                     "sp.updates.appserver.incoming:1|c", "sp.updates.appserver.received:1|c",
                     "sp.updates.sent:1|c", "sp.client.socket.connect:1|c"):
            self.assertIn(want, lines)
        self.assertTrue([ln for ln in lines if ln.startswith("sp.update.client.connections:")])


if __name__ == "__main__":
    unittest.main()
