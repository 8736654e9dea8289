"""The demo app over HTTP/1.1: the threaded server and the request handler that routes to its backend.

Each accepted socket gets ``TCP_NODELAY`` and each response leaves in a single
write (buffered headers and body), so Nagle's algorithm and delayed ACKs do not
add ~40 ms per request on keep-alive connections. A ``POST /__admin`` needs a
JSON content type, which makes a browser send a CORS preflight (never answered)
before any cross-site POST.
"""

from __future__ import annotations

import json
import socket
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Mapping, Optional, Protocol, Tuple
from urllib.parse import urlsplit

ADMIN_PATH = "/__admin"
HEALTH_PATH = "/health"
MAX_REQUEST_BODY = 64 * 1024


class Backend(Protocol):
    """What the handler needs of the app; every call comes from a handler thread."""

    verbose: bool
    idle_timeout: float

    def stats(self) -> Dict[str, Any]:
        """Settings and counters as a JSON-ready dict (the answer of ``/__admin``)."""

    def begin_request(self) -> Tuple[int, float, str]:
        """An application request begins: its status, its delay in seconds and the version to report."""

    def end_request(self) -> None:
        """The application request begun last by this thread has been answered."""

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the app stops."""

    def health_check(self) -> Tuple[int, str, str]:
        """A ``/health`` request: its status, body text and version."""

    def admin_check(self, peer: str, headers: Mapping[str, str]) -> Optional[str]:
        """Why an admin request is refused, or None."""

    def admin_update(self, changes: Dict[str, Any]) -> None:
        """Apply a ``POST /__admin`` body. Raises ValueError for a bad one (nothing changes then)."""

    def connection_opened(self, conn: socket.socket) -> None:
        """A connection was accepted (called from the thread that serves it)."""

    def connection_closed(self, conn: socket.socket) -> None:
        """The connection is done (called from the thread that served it)."""


class BackendServer(ThreadingHTTPServer):
    """Serves a :class:`Backend` from one thread per connection (daemon threads, not joined at close)."""

    daemon_threads = True
    block_on_close = False  # keep-alive peers (nginx) hold connections open; DemoApp.stop() closes them
    request_queue_size = 128

    def __init__(self, address: Tuple[str, int], app: Backend) -> None:
        """Binds ``address`` (IPv6 when the host has a colon). Raises OSError when it cannot."""
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a reverse DNS lookup nobody here needs.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]

    def get_request(self) -> Tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Peers hanging up mid-response are normal under load and at stop().
        if self.app.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx-canary-demo"
    sys_version = ""
    wbufsize = 64 * 1024  # headers and body leave in one write, flushed after each request
    server: BackendServer

    def setup(self) -> None:
        self.timeout = self.server.app.idle_timeout
        super().setup()
        self.server.app.connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app.connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        app = self.server.app
        if path == ADMIN_PATH:
            self._admin(body)
        elif path == HEALTH_PATH and self.command != "POST":
            status, text, version = app.health_check()
            self._respond(status, text.encode(), version=version)
        else:
            status, delay, version = app.begin_request()
            try:
                if delay > 0:
                    app.pause(delay)
                text = f"{version}\n" if status == 200 else f"{version} error\n"
                self._respond(status, text.encode(), version=version)
            finally:
                app.end_request()

    def _read_body(self) -> Optional[bytes]:
        """The request body (b"" when there is none), or None after answering an unreadable one."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._respond(411, b"Content-Length required\n")
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BODY:
            self.close_connection = True
            self._respond(413 if length > 0 else 400, b"bad or too large request body\n")
            return None
        return self.rfile.read(length) if length else b""

    def _admin(self, body: bytes) -> None:
        app = self.server.app
        refusal = app.admin_check(self.client_address[0], self.headers)
        if refusal is not None:
            self._json(403, {"error": refusal})
            return
        if self.command == "POST":
            ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                self._json(415, {"error": "POST /__admin needs Content-Type: application/json"})
                return
            try:
                changes = json.loads(body.decode("utf-8"))
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object")
                app.admin_update(changes)
            except (ValueError, UnicodeDecodeError) as exc:
                self._json(400, {"error": str(exc)})
                return
        self._json(200, app.stats())

    def _json(self, status: int, payload: Dict[str, Any]) -> None:
        self._respond(status, (json.dumps(payload, sort_keys=True) + "\n").encode(), "application/json")

    def _respond(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                 version: Optional[str] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if version is not None:
            self.send_header("X-Version", version)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
