"""The optional HTTP listener (``server.http``, loopback by default): ``/healthz`` and Prometheus ``/metrics``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from core.log import event
from core.metrics import Metrics

log = logging.getLogger("lcsync.http")


class HealthServer:
    """Serves ``/healthz`` (200 when every check passes, else 503, with a JSON body) and ``/metrics``."""

    def __init__(self, host: str, port: int, metrics: Metrics, checks: Callable[[], dict[str, str]]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = outer.metrics.render().encode()
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", body)
                elif self.path == "/healthz":
                    results = outer.checks()
                    healthy = all(value == "ok" for value in results.values())
                    body = json.dumps({"status": "ok" if healthy else "failing", "checks": results}).encode()
                    self._send(200 if healthy else 503, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found: try /healthz or /metrics\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the audit log

        self.metrics = metrics
        self.checks = checks
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="http-health", kwargs={"poll_interval": 0.2}
        )
        self._thread.start()
        event(log, "http_listening", host=self.address[0], port=self.address[1])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join()
