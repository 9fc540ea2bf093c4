"""HTTP tests against the real server on a free loopback port."""

import json
import threading
import unittest
import urllib.error
import urllib.request

from inventory.server import InventoryServer


class HttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = InventoryServer(("127.0.0.1", 0))
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()
        cls.base = f"http://127.0.0.1:{cls.server.server_address[1]}"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.thread.join(timeout=10)

    def get(self, path):
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def test_health(self):
        self.assertEqual(self.get("/healthz"), (200, b"ok\n"))

    def test_looks_up_an_item(self):
        status, body = self.get("/items/sku-0048")
        self.assertEqual(status, 200)
        answer = json.loads(body)
        self.assertEqual(answer["sku"], "sku-0048")
        self.assertIn("available", answer)

    def test_unknown_items_are_not_found(self):
        status, body = self.get("/items/sku-9999")
        self.assertEqual(status, 404)
        self.assertIn("unknown sku", json.loads(body)["error"])

    def test_unknown_paths_are_not_found(self):
        self.assertEqual(self.get("/nope")[0], 404)

    def test_metrics_count_answered_requests(self):
        self.get("/items/sku-0007")
        status, body = self.get("/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        self.assertIn('http_requests_total{method="GET",route="/items/{sku}",status="200"}', text)
        self.assertIn('http_request_duration_seconds_count{route="/items/{sku}"}', text)
        self.assertIn("# TYPE http_request_duration_seconds histogram", text)


if __name__ == "__main__":
    unittest.main()
