"""
The no-loss soak (SPEC §9): three nodes on one memcached; devices with several channels
each move between random nodes (closing cleanly, or vanishing with their old socket left
open), app servers PUT increasing versions of random channels to random nodes, and
memcached is paused once in the middle. At the end every device says hello once more and
must have received, for every channel, the latest version any PUT accepted (200 or 202).
Bounded: about SOAK_SECONDS of traffic (default 25) plus the final check.
"""
import os
import random
import re
import signal
import threading
import time
import unittest

import spd
from test_cluster import ClusterCase

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "25"))
DEVICES = 30
CHANNELS = 3
PUTTERS = 3


class SoakDevice:
    """One device, run by a thread of its own: it reads and acks what arrives, and moves."""

    def __init__(self, test, nodes, rng):
        self.test = test
        self.nodes = nodes
        self.rng = rng
        self.uaid = None
        self.chids = [spd.new_chid(upper=rng.random() < 0.3) for _ in range(CHANNELS)]
        self.endpoints = {}
        self.seen = {}  # chid -> highest version received
        self.ws = None
        self.abandoned = []  # sockets left open when the device "vanished"
        self.moves = 0
        self.errors = []
        self.ready = threading.Event()

    def connect(self):
        """Connects to a random node and says hello, retrying while storage is away."""
        while True:
            node = self.rng.choice(self.nodes)
            try:
                ws = spd.ws_connect(node.public_port, timeout=5)
                reply = spd.hello(ws, self.uaid if self.uaid else spd.MISSING,
                                  list(self.endpoints))
            except (OSError, AssertionError, spd.websocket.WebSocketException):
                time.sleep(0.2)
                continue
            if reply.get("status") == 200:
                if self.uaid is not None and reply["uaid"] != self.uaid:
                    self.errors.append("uaid changed: %r" % reply)
                self.uaid = reply["uaid"]
                self.ws = ws
                return
            spd.ws_close(ws)  # 503 while memcached is paused
            time.sleep(0.2)

    def handle_notifications(self, msgs):
        for msg in msgs:
            updates = msg["updates"]
            for u in updates:
                if u["version"] > self.seen.get(u["channelID"], -1):
                    self.seen[u["channelID"]] = u["version"]
            spd.send_json(self.ws, {"messageType": "ack", "updates": [
                {"channelID": u["channelID"], "version": u["version"]} for u in updates]})

    def register_all(self):
        for chid in self.chids:
            while chid not in self.endpoints:
                try:
                    self.endpoints[chid] = spd.register(self.ws, chid)
                except (AssertionError, OSError, spd.websocket.WebSocketException):
                    self.drop()
                    self.connect()

    def drop(self):
        if self.ws is not None:
            try:
                spd.ws_close(self.ws)
            except Exception:
                pass
        self.ws = None

    def move(self):
        self.moves += 1
        if self.rng.random() < 0.5:
            self.drop()
        else:
            # The phone loses its network: the old socket stays open, unread.
            self.abandoned.append(self.ws)
            self.ws = None
        self.connect()

    def read_for(self, seconds):
        """Reads (and acks) until seconds pass; reconnects if the socket fails."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                msg = spd.recv_json(self.ws, timeout=max(0.05, deadline - time.monotonic()))
            except spd.NoMessage:
                continue
            except (AssertionError, OSError, spd.websocket.WebSocketException):
                self.drop()
                self.connect()
                continue
            if msg.get("messageType") == "notification":
                try:
                    self.handle_notifications([msg])
                except (OSError, spd.websocket.WebSocketException):
                    self.drop()
                    self.connect()

    def run(self, stop):
        try:
            self.connect()
            self.register_all()
            self.ready.set()
            while not stop.is_set():
                self.read_for(self.rng.uniform(0.5, 4))
                if not stop.is_set():
                    self.move()
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))
            self.ready.set()

    def finish(self):
        """A last hello, then reads until nothing more comes."""
        self.drop()
        self.connect()
        self.read_for(spd.scaled(2))

    def close_all(self):
        self.drop()
        for ws in self.abandoned:
            try:
                ws.close(timeout=0.1)
            except Exception:
                pass


class TestSoak(ClusterCase):
    NODES = 3
    # A vanished socket is found dead by the WebSocket ping if no kick closes it.
    EXTRA = {"client": {"pong_interval": "10s"}}

    def test_nothing_accepted_is_lost(self):
        seed = int(os.environ.get("SOAK_SEED", "0")) or random.randrange(1, 1 << 30)
        rng = random.Random(seed)
        seed_note = "SOAK_SEED=%d replays the random choices" % seed
        devices = [SoakDevice(self, self.nodes, random.Random(rng.random()))
                   for _ in range(DEVICES)]
        stop = threading.Event()
        threads = [threading.Thread(target=d.run, args=(stop,), daemon=True) for d in devices]
        for t in threads:
            t.start()
        for d in devices:
            self.assertTrue(d.ready.wait(spd.scaled(20)), "device did not start")
        for d in devices:
            self.addCleanup(d.close_all)

        accepted = {}  # chid -> highest version answered 200/202
        statuses = {}
        lock = threading.Lock()
        next_version = [1000]
        putting = threading.Event()
        putting.set()

        def putter(prng):
            while putting.is_set():
                d = prng.choice(devices)
                chid = prng.choice(d.chids)
                node = prng.choice(self.nodes)
                with lock:
                    next_version[0] += 1
                    version = next_version[0]
                ep = re.sub(r":\d+/update/", ":%d/update/" % node.public_port,
                            d.endpoints[chid])
                try:
                    r = spd.put(ep, version=version)
                except (OSError, AssertionError):
                    continue
                with lock:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.status in (200, 202):
                        accepted[chid] = max(accepted.get(chid, 0), version)
                time.sleep(prng.uniform(0, 0.02))

        putters = [threading.Thread(target=putter, args=(random.Random(rng.random()),),
                                    daemon=True) for _ in range(PUTTERS)]
        for t in putters:
            t.start()

        # memcached pauses once, in the middle.
        time.sleep(SOAK_SECONDS * 0.4)
        os.kill(self.mc.proc.pid, signal.SIGSTOP)
        time.sleep(2)
        os.kill(self.mc.proc.pid, signal.SIGCONT)
        time.sleep(SOAK_SECONDS * 0.6)

        putting.clear()
        for t in putters:
            t.join(30)
        stop.set()
        for t in threads:
            t.join(30)
        for d in devices:
            self.assertEqual(d.errors, [], "device errors (%s)" % seed_note)
        finishers = [threading.Thread(target=d.finish, daemon=True) for d in devices]
        for t in finishers:
            t.start()
        for t in finishers:
            t.join(spd.scaled(30))

        lost = {}
        for d in devices:
            for chid in d.chids:
                want = accepted.get(chid)
                if want is not None and d.seen.get(chid, -1) < want:
                    lost[chid] = (want, d.seen.get(chid))
        self.assertGreater(statuses.get(200, 0), 100, statuses)
        self.assertGreater(sum(d.moves for d in devices), DEVICES, "devices hardly moved")
        self.assertEqual(lost, {}, "channel -> (accepted, received); PUT statuses %r; %s"
                         % (statuses, seed_note))
        if os.environ.get("SOAK_VERBOSE"):
            print("PUT statuses %r, moves %d, %s" % (statuses, sum(d.moves for d in devices),
                                                   seed_note))


if __name__ == "__main__":
    unittest.main()
