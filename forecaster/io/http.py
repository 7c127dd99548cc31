"""The daemon's HTTP endpoints: /metrics for Prometheus, /healthz (alive: restart me if not) and /readyz (send me
work) for supervisors.

Plain HTTP by default, bound to 127.0.0.1 by the configuration's default; given a
certificate it serves HTTPS only.
"""

from __future__ import annotations

import errno
import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from forecaster.errors import ConfigError

log = logging.getLogger(__name__)

_CONNECTION_TIMEOUT_S = 10.0  # a client that stalls a handshake or a request holds one thread this long at most


class StatusServer:
    """Serves the registry and health in a background thread; `close()` stops it.

    With `certfile` (and `keyfile` when the key is not in it) every connection is TLS.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, str]],
        certfile: str | None = None,
        keyfile: str | None = None,
        live: Callable[[], tuple[bool, str]] = lambda: (True, "ok"),
    ):
        handler = _handler(registry, ready, live)
        try:
            if certfile is None:
                self._server = ThreadingHTTPServer((host, port), handler)
            else:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(certfile, keyfile)
                self._server = _TLSServer((host, port), handler, context)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                f"metrics.port: port {port} on {host} is in use (another forecaster?); stop that process or set "
                "metrics.port in config.yaml"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        scheme = "https" if isinstance(self._server, _TLSServer) else "http"
        return f"{scheme}://{host}:{port}"

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _TLSServer(ThreadingHTTPServer):
    """HTTPS: each connection's TLS handshake runs in its own thread, so a slow or plain-HTTP client blocks no one."""

    def __init__(self, address, handler, context: ssl.SSLContext):
        self.context = context
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        request.settimeout(_CONNECTION_TIMEOUT_S)
        with self.context.wrap_socket(request, server_side=True) as connection:
            self.RequestHandlerClass(connection, client_address, self)

    def handle_error(self, request, client_address):
        """A failed handshake (plain HTTP, an untrusted client) is the client's problem, not a traceback on stderr."""
        log.debug("connection from %s failed", client_address[0], exc_info=True)


def _handler(
    registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]], live: Callable[[], tuple[bool, str]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = _CONNECTION_TIMEOUT_S

        def do_GET(self):  # noqa: N802 (the http.server API)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                fine, why = (live if path == "/healthz" else ready)()
                self._reply(200 if fine else 503, f"{why}\n".encode())
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # scrapes are not events worth a log line
            pass

    return Handler
