"""The HTTP surface: GET /items/{sku}, GET /healthz, GET /metrics.

An exception in a handler is answered with 500 and its traceback goes to stderr, the way a
production framework reports it, so the failure can be localised from the logs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from inventory import __version__, catalog
from inventory.metrics import UNMATCHED_ROUTE, Metrics

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
METRICS = "text/plain; version=0.0.4; charset=utf-8"


def json_body(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


class InventoryServer(ThreadingHTTPServer):
    """A threaded HTTP server holding the catalogue and the metrics."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], items: dict | None = None) -> None:
        super().__init__(address, Handler)
        self.items = catalog.seed() if items is None else items
        self.metrics = Metrics()


class Handler(BaseHTTPRequestHandler):
    server: InventoryServer
    protocol_version = "HTTP/1.1"
    server_version = f"inventory-service/{__version__}"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self.answer("/healthz", lambda: (200, TEXT, b"ok\n"))
        elif path == "/metrics":
            self.answer("/metrics", lambda: (200, METRICS, self.server.metrics.render().encode()))
        elif path.startswith("/items/"):
            self.answer("/items/{sku}", lambda: self.get_item(path[len("/items/") :]))
        else:
            self.answer(UNMATCHED_ROUTE, lambda: (404, JSON, json_body({"error": "not found"})))

    def do_POST(self) -> None:
        self.answer(UNMATCHED_ROUTE, lambda: (405, JSON, json_body({"error": "method not allowed"})))

    do_PUT = do_POST
    do_DELETE = do_POST

    def answer(self, route: str, handler) -> None:
        """Runs one handler, answers, and records the request under its route."""
        started = time.perf_counter()
        try:
            status, content_type, body = handler()
        except Exception:
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            status, content_type, body = 500, JSON, json_body({"error": "internal error"})
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.metrics.observe(route, self.command, status, time.perf_counter() - started)

    def get_item(self, sku: str) -> tuple[int, str, bytes]:
        item = self.server.items.get(sku)
        if item is None:
            return 404, JSON, json_body({"error": f"unknown sku {sku}"})
        return 200, JSON, json_body(catalog.availability(item))

    def log_message(self, format: str, *args) -> None:
        # One access line per request would drown the tracebacks; metrics count requests.
        pass


def main() -> None:
    """Serves on BIND:PORT (default 127.0.0.1:8080; PORT=0 picks a free port) until SIGTERM."""
    raw_port = os.environ.get("PORT", "8080")
    try:
        port = int(raw_port)
    except ValueError:
        sys.exit(f"inventory-service: invalid PORT {raw_port!r}")
    bind = os.environ.get("BIND", "127.0.0.1")
    try:
        server = InventoryServer((bind, port))
    except OSError as error:
        sys.exit(f"inventory-service: cannot bind {bind}:{port}: {error}")
    host, bound = server.server_address[:2]
    print(
        f"inventory-service {__version__} listening on http://{host}:{bound} (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    stop = lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
