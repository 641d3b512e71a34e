"""
Optional TLS on the public listener (SPEC §1: ssl.certfile / ssl.keyfile; endpoint URLs
then default to https://). Skipped when openssl is not installed.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import unittest

import spd
from spd import hello, recv_json


class TestTls(spd.DaemonCase):

    @classmethod
    def setUpClass(cls):
        if not spd.DAEMON:
            raise unittest.SkipTest("SIMPLEPUSHD is not set")
        openssl = shutil.which("openssl")
        if not openssl:
            raise unittest.SkipTest("openssl is not installed")
        cls.certdir = tempfile.mkdtemp(prefix="spd-tls-")
        cert = os.path.join(cls.certdir, "cert.pem")
        key = os.path.join(cls.certdir, "key.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True, timeout=30)
        cls.CONFIG = {"ssl": {"certfile": cert, "keyfile": key}}
        try:
            super().setUpClass()
        except BaseException:
            shutil.rmtree(cls.certdir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.certdir, ignore_errors=True)

    def wss(self):
        ws = spd.ws_connect(self.port, tls=True)
        self.addCleanup(spd.ws_close, ws)
        return ws

    def test_wss_hello_register_and_https_put(self):
        ws = self.wss()
        self.assertEqual(ws.getsubprotocol(), spd.PROTOCOL)
        reply = hello(ws, channelIDs=[])
        self.assertEqual(reply["status"], 200)
        chid = spd.new_chid()
        ep = spd.register(ws, chid)
        prefix = "https://127.0.0.1:%d/update/" % self.port
        self.assertTrue(ep.startswith(prefix), ep)
        self.assertRegex(ep[len(prefix):], spd.TOKEN_RE)
        r = spd.put(ep, version=12, data="over tls")
        self.assertJSONResponse(r, 200, {})
        self.assertEqual(recv_json(ws), {"messageType": "notification", "updates": [
            {"channelID": chid, "version": 12, "data": "over tls"}]})
        spd.ping(ws)

    def test_https_health(self):
        r = spd.http_request(self.port, "GET", "/status/", tls=True)
        body = self.assertJSONResponse(r, 200)
        self.assertEqual(body["status"], "OK")
        self.assertJSONResponse(spd.http_request(self.port, "GET", "/__lbheartbeat__",
                                                 tls=True), 200, {})

    def test_raw_tls_client_frames(self):
        r = spd.RawWS(self.port, tls=True)
        self.addCleanup(r.close)
        r.send_json({"messageType": "hello", "channelIDs": []}, fragments=3)
        self.assertEqual(r.recv_json()["status"], 200)
        r.send_frame(spd.OP_BINARY, b"{}")
        code, msgs = r.expect_close()
        self.assertEqual((code, msgs), (1003, []))

    def test_plain_http_on_tls_port_refused(self):
        s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(3))
        self.addCleanup(s.close)
        s.sendall(b"GET /status/ HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            data = b""
        self.assertNotIn(b'"status":"OK"', data.replace(b" ", b""))
        # The daemon still serves TLS clients.
        self.assertEqual(hello(self.wss(), channelIDs=[])["status"], 200)

    def test_tls_garbage_handshake(self):
        for junk in (b"\x16\x03\x01\x00\x05hello", b"\x16\x03\x03" + b"\xff" * 300,
                     os.urandom(2000)):
            s = socket.create_connection((spd.HOST, self.port), timeout=spd.scaled(3))
            try:
                s.sendall(junk)
                try:
                    s.recv(4096)
                except (ConnectionResetError, socket.timeout):
                    pass
            finally:
                s.close()
        self.assertEqual(hello(self.wss(), channelIDs=[])["status"], 200)


if __name__ == "__main__":
    unittest.main()
