"""
The demo page (server.demo): /demo/ serves clients/demo/index.html and /demo/simplepush.js
the JavaScript client, both built into the daemon; with server.demo off they are 404 like
any unknown path. (The page itself is driven in a real browser by tests/browser.)
"""
import os
import unittest

import spd

REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def read(rel):
    with open(os.path.join(REPO, rel), "rb") as f:
        return f.read()


class TestDemoOn(spd.DaemonCase):
    CONFIG = {"server": {"demo": "1"}}

    def test_page_and_library_served(self):
        for path, rel, ctype in (("/demo/", "clients/demo/index.html", "text/html"),
                                 ("/demo", "clients/demo/index.html", "text/html"),
                                 ("/demo/index.html", "clients/demo/index.html", "text/html"),
                                 ("/demo/simplepush.js", "clients/js/simplepush.js",
                                  "text/javascript")):
            with self.subTest(path=path):
                r = self.http("GET", path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.content_type(), ctype)
                self.assertEqual(r.body, read(rel))

    def test_other_methods_and_paths(self):
        self.assertEqual(self.http("PUT", "/demo/").status, 405)
        self.assertEqual(self.http("GET", "/demo/nope.js").status, 404)
        self.assertEqual(self.http("GET", "/demo/", internal=True).status, 404)


class TestDemoOff(spd.DaemonCase):
    def test_not_served(self):
        for path in ("/demo/", "/demo/simplepush.js"):
            r = self.http("GET", path)
            self.assertEqual(r.status, 404, r)
            self.assertEqual(r.content_type(), "application/json")


if __name__ == "__main__":
    unittest.main()
