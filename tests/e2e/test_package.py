"""
Packaging (operations issue): the Debian package that `cpack -G DEB` makes holds the daemon,
/etc/simplepushd/config.ini as a conffile, the systemd unit and both man pages, and the unit
passes `systemd-analyze verify` without a warning. Also the systemd credential that carries
the token keys.
"""
import os
import shutil
import subprocess
import tempfile
import unittest

import spd

BUILD_DIR = os.path.dirname(spd.DAEMON) if spd.DAEMON else None


class TestPackage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BUILD_DIR or not os.path.exists(os.path.join(BUILD_DIR, "CPackConfig.cmake")):
            raise unittest.SkipTest("no CMake build directory next to SIMPLEPUSHD")
        cls.dir = tempfile.mkdtemp(prefix="spd-pkg-")
        r = subprocess.run(["cpack", "-G", "DEB", "-B", cls.dir], cwd=BUILD_DIR,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            shutil.rmtree(cls.dir, ignore_errors=True)
            raise AssertionError("cpack failed:\n%s\n%s" % (r.stdout, r.stderr))
        debs = [f for f in os.listdir(cls.dir) if f.endswith(".deb")]
        assert len(debs) == 1, debs
        cls.deb = os.path.join(cls.dir, debs[0])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def dpkg_deb(self, *args):
        r = subprocess.run(["dpkg-deb"] + list(args), capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_contents(self):
        files = {line.split()[-1].lstrip(".") for line in self.dpkg_deb("-c", self.deb)
                 .splitlines()}
        for path in ("/usr/sbin/simplepushd", "/etc/simplepushd/config.ini",
                     "/usr/lib/systemd/system/simplepushd.service",
                     "/usr/share/man/man8/simplepushd.8", "/usr/share/man/man5/simplepushd.ini.5"):
            self.assertIn(path, files)

    def test_config_is_a_conffile(self):
        ctl = os.path.join(self.dir, "control")
        self.dpkg_deb("-e", self.deb, ctl)
        with open(os.path.join(ctl, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/simplepushd/config.ini"])
        fields = self.dpkg_deb("-f", self.deb, "Depends")
        self.assertIn("libwebsockets-evlib-uv", fields)

    def test_packaged_config_is_valid(self):
        root = os.path.join(self.dir, "root-config")
        self.dpkg_deb("-x", self.deb, root)
        r = subprocess.run([os.path.join(root, "usr/sbin/simplepushd"), "-t", "-c",
                            os.path.join(root, "etc/simplepushd/config.ini")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # Production: no demo page.
        with open(os.path.join(root, "etc/simplepushd/config.ini")) as f:
            self.assertIn("\ndemo = 0\n", f.read())

    def test_unit_verifies(self):
        if not shutil.which("systemd-analyze"):
            self.fail("systemd-analyze is missing (Debian package systemd)")
        root = os.path.join(self.dir, "root-unit")
        self.dpkg_deb("-x", self.deb, root)
        with open(os.path.join(root, "usr/lib/systemd/system/simplepushd.service")) as f:
            unit = f.read()
        self.assertIn("Type=notify", unit)
        self.assertIn("WatchdogSec=", unit)
        self.assertIn("LoadCredential=token_keys:", unit)
        # Point the unit at the extracted binary, so that verify can check the commands.
        path = os.path.join(self.dir, "simplepushd.service")
        with open(path, "w") as f:
            f.write(unit.replace("/usr/sbin/simplepushd",
                                 os.path.join(root, "usr/sbin/simplepushd")))
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", path],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.strip(), "", "systemd-analyze warned")

    def test_man_pages_render(self):
        if not shutil.which("man"):
            self.skipTest("man is not installed")
        root = os.path.join(self.dir, "root-man")
        self.dpkg_deb("-x", self.deb, root)
        for page in ("usr/share/man/man8/simplepushd.8", "usr/share/man/man5/simplepushd.ini.5"):
            r = subprocess.run(["man", "--warnings", "-l", os.path.join(root, page)],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("simplepushd", r.stdout)
            self.assertEqual(r.stderr.strip(), "", r.stderr)


class TestCredential(unittest.TestCase):
    def test_token_keys_from_credentials_directory(self):
        key = spd.run_cli(["--genkey"]).stdout.strip()
        creds = tempfile.mkdtemp(prefix="spd-creds-")
        self.addCleanup(shutil.rmtree, creds, True)
        with open(os.path.join(creds, "token_keys"), "w") as f:
            f.write(key + "\n")
        a = spd.Daemon(name="cred-a", env={"CREDENTIALS_DIRECTORY": creds}).start()
        self.addCleanup(a.stop)
        b = spd.Daemon(name="cred-b", env={"CREDENTIALS_DIRECTORY": creds}).start()
        self.addCleanup(b.stop)
        self.assertNotIn("token_keys is empty", a.log())
        ws = spd.ws_connect(a.public_port)
        self.addCleanup(ws.close)
        self.assertEqual(spd.hello(ws)["status"], 200)
        endpoint = spd.register(ws, spd.new_chid())
        # The same key on both daemons: b accepts a's endpoint (stored: 202), and a
        # daemon with another key would not.
        other = endpoint.replace(":%d/" % a.public_port, ":%d/" % b.public_port)
        r = spd.put(other, version=1)
        self.assertEqual(r.status, 202, r)


if __name__ == "__main__":
    unittest.main()
