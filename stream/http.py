"""The worker's HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` (liveness: the
consume loop advances) and ``/readyz`` (readiness: model loaded, partitions assigned).

>>> from prometheus_client import CollectorRegistry
>>> import urllib.request
>>> health = Health(stall_after_s=60)
>>> server = serve(CollectorRegistry(), health, "127.0.0.1", 0)
>>> urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz").status
200
>>> server.close()
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["Health", "MetricsServer", "serve"]

log = logging.getLogger(__name__)


class Health:
    """Liveness and readiness as the worker reports them."""

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self._last_beat = time.monotonic()
        self.model_loaded = False
        self.assigned_partitions = 0
        self.broker_connected = True

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        idle = time.monotonic() - self._last_beat
        if idle > self.stall_after_s:
            return False, f"the consume loop has not advanced for {idle:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.model_loaded:
            return False, "the model is loading"
        if not self.broker_connected:
            return False, "no contact with the Kafka group coordinator"
        if self.assigned_partitions == 0:
            return False, "no partitions assigned"
        return True, "ok"


class MetricsServer:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="lorastream-http", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # a client speaking plain HTTP to the TLS port, or hanging up: not the worker's error
        log.debug("metrics endpoint: dropped a bad request from %s", client_address, exc_info=True)


def serve(
    registry: CollectorRegistry,
    health: Health,
    host: str,
    port: int,
    tls: tuple[Path, Path] | None = None,
) -> MetricsServer:
    """Start serving on ``host:port`` (port 0 picks a free one) in a daemon thread; over
    HTTPS when ``tls`` gives (certificate file, key file)."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that stalls (or never finishes a TLS handshake) is dropped

        def setup(self) -> None:
            super().setup()
            if isinstance(self.request, ssl.SSLSocket):
                self.request.do_handshake()  # here, in the request's thread

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = health.live() if path == "/healthz" else health.ready()
                self._reply(200 if ok else 503, (why + "\n").encode(), "text/plain")
            else:
                self._reply(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the worker's log

    server = _QuietServer((host, port), Handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        # the handshake happens in the request thread, so a stalled client blocks only itself
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    return MetricsServer(server)
