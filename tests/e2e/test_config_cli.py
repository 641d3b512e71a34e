"""
Command line and configuration: -t, -V, --genkey, bad configs, pushgo 1.x flat keys, and
SIGHUP reload (SPEC §8 keys, §11, §12).
"""

import base64
import os
import re
import shutil
import signal
import tempfile
import time
import unittest

import spd
from spd import expect_close, hello, recv_text


def b64key():
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


class TestCli(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not spd.DAEMON:
            raise unittest.SkipTest("SIMPLEPUSHD is not set")
        cls.dir = tempfile.mkdtemp(prefix="spd-cli-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def write(self, text, name="config.ini"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check_t(self, text):
        path = self.write(text)
        p = spd.run_cli(["-t", "-c", path])
        self.assertIsNone(spd.sanitizer_report(p.stdout + p.stderr), p.stderr)
        return path, p

    def assertValid(self, text):
        path, p = self.check_t(text)
        self.assertEqual(p.returncode, 0, "%s\n%s%s" % (text, p.stdout, p.stderr))
        return path, p

    def assertInvalid(self, text, line):
        path, p = self.check_t(text)
        self.assertEqual(p.returncode, 1, "%s\n%s%s" % (text, p.stdout, p.stderr))
        self.assertIn("%s:%d" % (path, line), p.stdout + p.stderr)
        return path, p

    def test_t_good_file(self):
        self.assertValid(spd.render_config(spd.merge_config(spd.BASE_CONFIG)))

    def test_t_full_file(self):
        self.assertValid("""[server]
host = 127.0.0.1
port = 0
max_connections = 5
drain_seconds = 3
[internal]
host = 127.0.0.1
port = 0
[client]
hello_timeout = 1s
min_ping_interval = 2s
resend_interval = 2s
pong_interval = 5m
max_message_size = 262144
max_pending_bytes = 65536
[endpoint]
url_template = https://push.example.com/update/<token>
token_keys = %s,%s
max_data_len = 1024
cors = yes
[storage]
max_channels = 3
timeout_live = 3h
timeout_del = 86400
[log]
level = debug
format = json
""" % (b64key(), b64key()))

    def test_t_value_forms(self):
        forms = [("client", "hello_timeout", v) for v in ("1500ms", "20s", "5m", "30", "1s")]
        forms += [("client", "pong_interval", "3h"), ("storage", "timeout_live", "250000ms")]
        forms += [("client", "min_ping_interval", "0"), ("client", "resend_interval", "0"),
                  ("client", "pong_interval", "0")]
        forms += [("endpoint", "cors", v) for v in ("1", "0", "true", "false", "yes", "no",
                                                    "on", "off")]
        forms += [("storage", "max_channels", "3"), ("server", "max_connections", "5")]
        for section, key, value in forms:
            with self.subTest(key="%s.%s" % (section, key), value=value):
                conf = spd.merge_config(spd.BASE_CONFIG, {section: {key: value}})
                self.assertValid(spd.render_config(conf))

    def test_t_unknown_key_names_file_and_line(self):
        self.assertInvalid("[client]\nhelo_timeout = 1s\n", 2)
        self.assertInvalid("[server]\nhost = 127.0.0.1\n\n[nosuchsection]\nkey = 1\n", 5)
        self.assertInvalid("# comment\nnosuchkey = 1\n", 2)

    def test_t_bad_values_name_file_and_line(self):
        bad = [("server", "port", "99999"), ("server", "port", "abc"),
               ("server", "port", "-1"), ("client", "hello_timeout", "abc"),
               ("client", "hello_timeout", "-1s"), ("client", "hello_timeout", "10x"),
               ("client", "max_message_size", "abc"), ("endpoint", "max_data_len", "-5"),
               ("endpoint", "max_data_len", "1e3"), ("endpoint", "cors", "maybe"),
               ("endpoint", "token_keys", "short"), ("endpoint", "token_keys", "!" * 43),
               ("endpoint", "token_keys", b64key() + ",bad"), ("log", "level", "loud"),
               ("log", "format", "xml"), ("storage", "max_channels", "abc"),
               ("server", "max_connections", "-3"), ("storage", "max_channels", "-1")]
        for section, key, value in bad:
            with self.subTest(key="%s.%s" % (section, key), value=value):
                self.assertInvalid("# line 1\n[%s]\n%s = %s\n" % (section, key, value), 3)

    def test_t_missing_file(self):
        path = os.path.join(self.dir, "does-not-exist.ini")
        p = spd.run_cli(["-t", "-c", path])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(path, p.stdout + p.stderr)

    def test_t_pushgo_flat_keys(self):
        path, p = self.assertValid(
            "host = 127.0.0.1\nport = 0\nclient.hello_timeout = 30s\n"
            "client.min_ping_interval = 20s\ndb.max_channels = 200\ntoken_key = %s\n"
            "internal.port = 0\ngcm.api_key = abcdef\nshard.use_aws_host = 0\n" % b64key())
        out = p.stdout + p.stderr
        # Keys without a meaning here are accepted with a warning naming file:line.
        self.assertIn("%s:8" % path, out)
        self.assertIn("%s:9" % path, out)

    def test_bad_config_daemon_exits_1(self):
        path = self.write("[client]\nhello_timeout = forever\n", "bad.ini")
        p = spd.run_cli(["-c", path])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("%s:2" % path, p.stdout + p.stderr)
        self.assertNotIn("listening", p.stderr)
        self.assertIsNone(spd.sanitizer_report(p.stderr), p.stderr)

    def test_version(self):
        p = spd.run_cli(["-V"])
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout + p.stderr
        self.assertIn("simplepushd", out)
        self.assertRegex(out, r"\d+\.\d+")
        for lib in (r"websockets|lws", r"jansson", r"openssl", r"libuv|\buv\b"):
            self.assertRegex(out.lower(), lib, out)
        self.assertIsNone(spd.sanitizer_report(out), out)

    def test_genkey(self):
        keys = []
        for _ in range(2):
            p = spd.run_cli(["--genkey"])
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.count("\n"), 1, p.stdout)
            key = p.stdout.strip()
            self.assertRegex(key, spd.KEY_RE)
            self.assertEqual(len(base64.urlsafe_b64decode(key + "=")), 32)
            keys.append(key)
        self.assertNotEqual(keys[0], keys[1])
        conf = spd.merge_config(spd.BASE_CONFIG, {"endpoint": {"token_keys": ",".join(keys)}})
        self.assertValid(spd.render_config(conf))

    def test_unknown_option(self):
        p = spd.run_cli(["--no-such-option"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIsNone(spd.sanitizer_report(p.stdout + p.stderr))


class TestStartup(spd.DaemonCase):
    PER_TEST = True

    def test_no_key_warns(self):
        lines = [ln for ln in self.daemon.log().splitlines() if "key" in ln.lower()]
        self.assertTrue(any(ln.startswith("<4>") or "warn" in ln.lower() for ln in lines),
                        self.daemon.log_tail())

    def test_pushgo_flat_config_takes_effect(self):
        self.daemon.stop()
        key = b64key()
        self.daemon = spd.Daemon(name="flat", raw_config=(
            "host = 127.0.0.1\nport = 0\ninternal.host = 127.0.0.1\ninternal.port = 0\n"
            "client.hello_timeout = 1s\ndb.max_channels = 3\ntoken_key = %s\n" % key))
        self.addCleanup(self.daemon.stop)
        self.daemon.start()
        code, _ = expect_close(self.ws(), timeout=5)
        self.assertEqual(code, 1000)
        d = self.device(channels=3)
        req = {"messageType": "register", "channelID": spd.new_chid()}
        spd.send_json(d.ws, req)
        self.assertEqual(spd.recv_json(d.ws)["status"], 413)


class TestReload(spd.DaemonCase):
    PER_TEST = True

    def fast_pings_close(self):
        d = self.device()
        d.ws.send("{}")
        self.assertEqual(recv_text(d.ws), "{}")
        d.ws.send("{}")
        try:
            self.assertEqual(recv_text(d.ws, timeout=2), "{}")
        except spd.Closed as e:
            self.assertEqual(e.code, 4774)
            return True
        d.disconnect()
        return False

    def test_sighup_applies_client_limits(self):
        self.assertFalse(self.fast_pings_close())
        self.daemon.write_config(config={"client": {"min_ping_interval": "2s"}})
        self.daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + spd.scaled(5)
        while not self.fast_pings_close():
            self.assertLess(time.monotonic(), deadline, "reload not applied")
            time.sleep(0.2)
        self.daemon.check()

    def test_sighup_applies_max_connections(self):
        self.daemon.write_config(config={"server": {"max_connections": "2"}})
        self.daemon.signal(signal.SIGHUP)
        time.sleep(1)
        a, b = self.device(), self.device()
        code, msgs = expect_close(self.ws())
        self.assertEqual(code, 1008, msgs)
        a.ping()
        b.ping()

    def test_sighup_invalid_config_keeps_old(self):
        self.daemon.write_config(raw_config="[client]\nmin_ping_interval = 2s\nbogus = 1\n")
        self.daemon.signal(signal.SIGHUP)
        time.sleep(1)
        self.daemon.check()
        self.assertFalse(self.fast_pings_close(), "the invalid config was applied")
        self.assertIn("%s:3" % self.daemon.config_path, self.daemon.log())
        # A valid config afterwards is still taken.
        self.daemon.write_config(config={"client": {"min_ping_interval": "2s"}})
        self.daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + spd.scaled(5)
        while not self.fast_pings_close():
            self.assertLess(time.monotonic(), deadline, "reload not applied")
            time.sleep(0.2)

    def test_repeated_sighup(self):
        for _ in range(10):
            self.daemon.signal(signal.SIGHUP)
            time.sleep(0.05)
        time.sleep(0.5)
        self.daemon.check()
        self.device(channels=1).ping()


    def test_sighup_rotates_token_keys(self):
        key_a = spd.run_cli(["--genkey"]).stdout.strip()
        key_b = spd.run_cli(["--genkey"]).stdout.strip()
        self.daemon.write_config(config={"endpoint": {"token_keys": key_a}})
        self.daemon.signal(signal.SIGHUP)
        time.sleep(0.5)
        d = self.device()
        old_chid = d.register()
        # B first (encrypts), A second (still decrypts): old endpoints keep working.
        self.daemon.write_config(config={"endpoint": {"token_keys": key_b + "," + key_a}})
        self.daemon.signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertJSONResponse(d.put(old_chid, version=1), 200, {})
        self.assertEqual(d.notification()[0]["version"], 1)
        new_chid = d.register()
        # A dropped: endpoints made with A are gone, those made with B stay.
        self.daemon.write_config(config={"endpoint": {"token_keys": key_b}})
        self.daemon.signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertError(d.put(old_chid, version=2), 404)
        self.assertJSONResponse(d.put(new_chid, version=3), 200, {})
        self.assertEqual(d.notification()[0]["version"], 3)

    def test_sighup_restart_only_key_is_logged_not_applied(self):
        self.daemon.write_config(config={"storage": {"max_channels": "1"}})
        self.daemon.signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertIn("storage.max_channels changed; it takes effect at the next restart",
                      self.daemon.log())
        d = self.device()
        d.register()
        d.register()  # would be 413 had the new max_channels been applied


if __name__ == "__main__":
    unittest.main()
