"""
systemd's notify protocol (SPEC §12): READY=1 once the listeners are bound, STATUS= with the
client count, WATCHDOG=1 from the event loop at half the watchdog interval, STOPPING=1 at a
stop. The test plays systemd: it binds the datagram socket named by $NOTIFY_SOCKET.
"""
import os
import signal
import socket
import tempfile
import time
import unittest

import spd


class NotifySocket:
    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.name = "@spd-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + self.name[1:])
        else:
            self.dir = tempfile.mkdtemp(prefix="spd-notify-")
            self.name = os.path.join(self.dir, "notify")
            self.sock.bind(self.name)

    def messages(self, timeout):
        """Every datagram that arrives within timeout seconds."""
        out = []
        deadline = time.monotonic() + spd.scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            self.sock.settimeout(left)
            try:
                out.append(self.sock.recv(4096).decode())
            except socket.timeout:
                return out

    def wait_for(self, key, timeout=5):
        """The first datagram holding the line key (e.g. "READY=1"), and those before it."""
        seen = []
        deadline = time.monotonic() + spd.scaled(timeout)
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            seen.append(msg)
            if key in msg.split("\n"):
                return msg, seen
        raise AssertionError("no %s within %ss; got %r" % (key, timeout, seen))

    def close(self):
        self.sock.close()
        if hasattr(self, "dir"):
            os.unlink(self.name)
            os.rmdir(self.dir)


class TestNotify(unittest.TestCase):
    def start(self, abstract=False, watchdog_usec=None):
        ns = NotifySocket(abstract)
        self.addCleanup(ns.close)
        env = {"NOTIFY_SOCKET": ns.name}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        d = spd.Daemon(name=self.id(), env=env)
        d.start()
        self.addCleanup(d.stop)
        return ns, d

    def status_clients(self, msg):
        for line in msg.split("\n"):
            if line.startswith("STATUS="):
                for word in line.split():
                    if word.startswith("clients="):
                        return int(word.split("=", 1)[1])
        return None

    def test_ready_after_listening_with_status(self):
        ns, d = self.start()
        msg, _ = ns.wait_for("READY=1")
        # READY comes once the ports are bound: the listening line is already in the log.
        self.assertTrue(spd.LISTENING_RE.search(d.log()))
        self.assertEqual(self.status_clients(msg), 0, msg)

    def test_abstract_socket(self):
        ns, d = self.start(abstract=True)
        ns.wait_for("READY=1")

    def test_watchdog_pings_from_the_loop(self):
        ns, d = self.start(watchdog_usec=400000)  # pings every 200 ms
        ns.wait_for("READY=1")
        msgs = ns.messages(1.5)
        pings = [m for m in msgs if "WATCHDOG=1" in m.split("\n")]
        self.assertGreaterEqual(len(pings), 3, msgs)

    def test_no_watchdog_without_watchdog_usec(self):
        ns, d = self.start()
        ns.wait_for("READY=1")
        msgs = ns.messages(1.0)
        self.assertFalse([m for m in msgs if "WATCHDOG=1" in m], msgs)

    def test_status_counts_clients(self):
        ns, d = self.start(watchdog_usec=200000)  # status goes out with each ping
        ns.wait_for("READY=1")
        ws = spd.ws_connect(d.public_port)
        self.addCleanup(ws.close)
        self.assertEqual(spd.hello(ws)["status"], 200)
        deadline = time.monotonic() + spd.scaled(3)
        clients = None
        while time.monotonic() < deadline and clients != 1:
            for m in ns.messages(0.3):
                c = self.status_clients(m)
                if c is not None:
                    clients = c
        self.assertEqual(clients, 1)

    def test_reloading_then_ready_around_sighup(self):
        ns, d = self.start()
        ns.wait_for("READY=1")
        d.signal(signal.SIGHUP)
        _, before = ns.wait_for("READY=1")
        self.assertTrue(any("RELOADING=1" in m.split("\n") for m in before), before)

    def test_stopping_at_sigterm(self):
        ns, d = self.start()
        ns.wait_for("READY=1")
        d.signal(signal.SIGTERM)
        ns.wait_for("STOPPING=1")
        self.assertEqual(d.wait_exit(10), 0)


if __name__ == "__main__":
    unittest.main()
