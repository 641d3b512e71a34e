"""
The benchmark's load generator (bench/spload) against a real daemon, checked for
correctness only: 2,000 devices connect, say hello and register; pings and PUTs at a modest
rate; every PUT is answered 200/202 and every version reaches its device. No timing is
asserted (the box is shared and CI may run an ASan build); bench/run measures, this checks
that what it measures is right.

spload is found next to the daemon: <build>/bench/spload, where <build> is the directory of
$SIMPLEPUSHD.
"""

import json
import os
import resource
import subprocess
import unittest

import spd

DEVICES = 2000


def spload_path():
    return os.path.join(os.path.dirname(os.path.abspath(spd.DAEMON)), "bench", "spload")


class TestBenchSmoke(unittest.TestCase):
    def setUp(self):
        if not spd.DAEMON:
            self.skipTest("SIMPLEPUSHD is not set")
        self.spload = spload_path()
        self.assertTrue(os.access(self.spload, os.X_OK),
                        "spload is not built at %s (cmake --build <build> --target spload)"
                        % self.spload)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < DEVICES + 200:
            self.skipTest("the open-files hard limit (%d) is below %d" % (hard, DEVICES + 200))
        self.daemon = spd.Daemon(config={"server": {"max_connections": str(DEVICES + 100)}},
                                 name="bench").start()
        self.addCleanup(self.daemon.stop)

    def run_spload(self, *args):
        cmd = [self.spload, "--port", str(self.daemon.public_port), "--quiet",
               "--server-pid", str(self.daemon.pid())] + list(args)
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=spd.scaled(45))
        self.assertIn(proc.returncode, (0, 3), "spload failed (%d):\n%s"
                      % (proc.returncode, proc.stderr))
        self.assertNotIn("Sanitizer", proc.stderr, proc.stderr)
        self.assertNotIn("runtime error", proc.stderr, proc.stderr)
        try:
            report = json.loads(proc.stdout)
        except ValueError as e:
            self.fail("spload's stdout is not one JSON object (%s):\n%s" % (e, proc.stdout[:2000]))
        return report, proc

    def test_devices_puts_and_pings(self):
        report, proc = self.run_spload(
            "--devices", str(DEVICES), "--settle", "0.5", "--ping-interval", "5",
            "--put-rate", "0,200", "--duration", "3", "--http-conns", "8",
            "--drain", str(spd.scaled(5)), "--seed", "42")
        why = proc.stderr
        devices = report["devices"]
        self.assertEqual(devices["requested"], DEVICES, why)
        self.assertEqual(devices["started"], DEVICES, why)
        self.assertEqual(devices["ready_after_connect"], DEVICES, why)
        self.assertEqual(devices["ready_at_end"], DEVICES, why)
        self.assertEqual(devices["failed_before_ready"], {}, why)
        self.assertEqual(devices["failed_after_ready"], {}, why)
        self.assertEqual(devices["close_codes"], {}, why)
        self.assertEqual(report["connect"]["hello_latency_us"]["count"], DEVICES, why)

        idle, busy = report["steps"]
        # The idle step: every ping answered, nothing else happened.
        self.assertGreater(idle["pings"], 0, why)
        self.assertEqual(idle["pongs"], idle["pings"], why)
        self.assertEqual(idle["puts"], 0, why)
        self.assertEqual(idle["notifications"], 0, why)

        # The PUT step: every PUT answered 200/202, every version delivered once and acked.
        puts = busy["puts"]
        self.assertGreater(puts, 0, why)
        self.assertEqual(busy["put_ok"], puts, why)
        self.assertLessEqual(set(busy["put_status"]), {"200", "202"}, why)
        self.assertEqual(sum(busy["put_status"].values()), puts, why)
        for key in ("put_bad", "put_conn_errors", "put_skipped", "put_dropped", "put_unsent",
                    "lost", "superseded", "unanswered", "unmatched", "unexpected",
                    "pings_unanswered", "errors"):
            self.assertEqual(busy[key], 0, "%s: %s" % (key, why))
        self.assertEqual(busy["delivered"], puts, why)
        self.assertEqual(busy["updates"], puts, why)
        self.assertEqual(busy["acks"], busy["notifications"], why)
        self.assertEqual(busy["latency_us"]["count"], puts, why)
        self.assertEqual(busy["pongs"], busy["pings"], why)

        self.assertEqual(report["totals"]["lost"], 0, why)
        self.assertEqual(report["protocol_errors"], 0, why)
        self.assertEqual(report["errors"], 0, why)
        self.assertFalse(report["interrupted"], why)
        self.assertTrue(report["ok"], why)
        self.assertEqual(proc.returncode, 0, why)
        # The server was sampled (its figures are not judged here).
        self.assertIn("rss_kb_connected", report["server"], why)

    def test_hello_only(self):
        report, proc = self.run_spload("--devices", "200", "--no-register", "--settle", "0",
                                       "--duration", "0")
        self.assertEqual(report["devices"]["ready_after_connect"], 200, proc.stderr)
        self.assertEqual(report["errors"], 0, proc.stderr)
        self.assertTrue(report["ok"], proc.stderr)

    def test_refused_connections_are_reported(self):
        # A port nobody listens on: spload must say so in its report, not hang or crash.
        port = spd.free_port()
        proc = subprocess.run([self.spload, "--port", str(port), "--devices", "5", "--quiet",
                               "--settle", "0", "--duration", "0", "--connect-timeout", "5"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=spd.scaled(30))
        self.assertEqual(proc.returncode, 3, proc.stderr)
        report = json.loads(proc.stdout)
        self.assertEqual(report["devices"]["failed_before_ready"], {"connect": 5})
        self.assertEqual(report["devices"]["connect_errno"], {"ECONNREFUSED": 5})
        self.assertFalse(report["ok"])

    def test_bad_options(self):
        for args in (["--devices", "0", "--port", "1"], ["--put-rate", "x", "--port", "1"],
                     ["--port", "70000"], ["--no-register", "--put-rate", "5", "--port", "1"],
                     ["--devices", "10"]):
            proc = subprocess.run([self.spload] + args, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=spd.scaled(10))
            self.assertEqual(proc.returncode, 2, "%s: %s" % (args, proc.stderr))
            self.assertIn("spload:", proc.stderr)


if __name__ == "__main__":
    unittest.main()
