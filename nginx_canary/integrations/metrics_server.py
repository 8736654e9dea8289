"""The metrics endpoint: ``GET /metrics`` over HTTP, served within bounds by a :class:`BoundedServer`.

prometheus_client's WSGI app answers (content negotiation, gzip); this module
binds the address, parses request heads into a WSGI environ and refuses what
the bounds do not allow.
"""

from __future__ import annotations

import io
import socket
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from prometheus_client import CollectorRegistry, make_wsgi_app

from nginx_canary.daemon.bounded_server import BoundedServer, Limits, Refusal
from nginx_canary.errors import CanaryError

#: The URL path of the metrics.
METRICS_PATH = "/metrics"
#: What the endpoint may hold (see :mod:`nginx_canary.daemon.bounded_server`): 2 workers (a scrape renders in
#: milliseconds), 64 connections being read, 5 s for a request's head, 10 s to send the answer.
LIMITS = Limits(workers=2, max_pending=64, queue=16, request_deadline=5.0, answer_deadline=10.0,
                max_request_bytes=8192)


class MetricsError(CanaryError):
    """The metrics endpoint cannot listen on its address."""


def split_listen(listen: str) -> Tuple[str, int]:
    """``"127.0.0.1:9145"`` -> ``("127.0.0.1", 9145)``, ``"[::1]:9145"`` -> ``("::1", 9145)``.

    Raises MetricsError for anything else (settings.py has validated the address already).
    """
    host, sep, port = str(listen).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsError(f"metrics_listen {listen!r} is not host:port")
    return host, int(port)


class _HttpProtocol:
    """GET /metrics over HTTP/1.x for :class:`BoundedServer`: one request per connection, answered with
    ``Connection: close`` by the WSGI app."""

    def __init__(self, app: Callable[..., Any], host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port

    def accepted(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request_end(self, data: bytes) -> int:
        # The head's end; a GET has no body, and one that came anyway is ignored.
        for mark in (b"\r\n\r\n", b"\n\n"):
            end = data.find(mark)
            if end >= 0:
                return end + len(mark)
        return -1

    def refusal(self, why: Refusal, context: Any) -> bytes:
        status = _REFUSALS.get(why)
        if status is None:
            return b""
        return _response(status, [("Retry-After", "1")] if why is Refusal.BUSY else [],
                         f"{why.value}: the metrics are at {METRICS_PATH}\n".encode())

    def serve(self, conn: socket.socket, request: bytes, context: Any) -> None:
        environ = self._environ(request)
        if environ is None:
            conn.sendall(_response("400 Bad Request", [], b"bad request\n"))
            return
        answer: List[Any] = []

        def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> None:
            answer[:] = [status, headers]

        body = b"".join(self._app(environ, start_response))
        status, headers = answer
        conn.sendall(_response(status, headers, b"" if environ["REQUEST_METHOD"] == "HEAD" else body,
                               length=len(body)))

    def _environ(self, request: bytes) -> Optional[Dict[str, Any]]:
        """The WSGI environ of an HTTP request head, or None when it is not one."""
        lines = request.decode("latin-1").splitlines()
        parts = lines[0].split() if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return None
        method, target, version = parts
        path, _, query = target.partition("?")
        environ: Dict[str, Any] = {
            "REQUEST_METHOD": method, "PATH_INFO": urllib.parse.unquote(path, "latin-1"), "QUERY_STRING": query,
            "SERVER_NAME": self._host, "SERVER_PORT": str(self._port), "SERVER_PROTOCOL": version,
            "SCRIPT_NAME": "", "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
            "wsgi.errors": io.StringIO(), "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep and name.strip():
                environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
        return environ


_REFUSALS = {Refusal.SLOW: "408 Request Timeout", Refusal.TOO_LONG: "431 Request Header Fields Too Large",
             Refusal.BUSY: "503 Service Unavailable"}


def _response(status: str, headers: List[Tuple[str, str]], body: bytes, *, length: Optional[int] = None) -> bytes:
    """An HTTP/1.1 response that closes the connection (``length``: the Content-Length, default ``len(body)``)."""
    kept = [(k, v) for k, v in headers if k.lower() not in ("content-length", "connection")]
    if not any(k.lower() == "content-type" for k, _ in kept):
        kept.append(("Content-Type", "text/plain; charset=utf-8"))
    kept += [("Content-Length", str(len(body) if length is None else length)), ("Connection", "close")]
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kept) + "\r\n"
    return head.encode("latin-1") + body


def _routes(metrics_app: Callable[..., Any]) -> Callable[..., Any]:
    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == METRICS_PATH:
            return metrics_app(environ, start_response)
        if path == "/":
            body = b"nginx-canary: metrics at /metrics\n"
            status = "200 OK"
        else:
            body = b"not found: the metrics are at /metrics\n"
            status = "404 Not Found"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class MetricsServer:
    """The running endpoint: ``host``, ``port`` (the bound one), ``url``, and ``close()``.

    Served by a :class:`~nginx_canary.daemon.bounded_server.BoundedServer` within :data:`LIMITS` (fitted to the
    open-file limit): a client cannot make it hold more threads or descriptors than those.
    """

    def __init__(self, listen: str, registry: CollectorRegistry, *, limits: Optional[Limits] = None) -> None:
        """Raises MetricsError, one line naming the address, when it cannot be resolved or bound, or when
        the server's threads cannot be started."""
        host, port = split_listen(listen)
        self.listen = listen
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
            listener = socket.socket(family, socket.SOCK_STREAM)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(address[:2] if family == socket.AF_INET else address)
                listener.listen(socket.SOMAXCONN)
            except OSError:
                listener.close()
                raise
        except OSError as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise MetricsError(f"cannot serve metrics on {listen}: {reason}") from None
        self.host = host
        self.port: int = listener.getsockname()[1]
        protocol = _HttpProtocol(_routes(make_wsgi_app(registry)), host, self.port)
        self._server = BoundedServer(listener, protocol, (limits or LIMITS).fit(), name=f"metrics {listen}")
        try:
            self._server.start()
        except RuntimeError as exc:
            raise MetricsError(f"cannot serve metrics on {listen}: {exc}") from None
        self._closed = False

    @property
    def limits(self) -> Limits:
        """The limits in force (:data:`LIMITS` fitted to the open-file limit)."""
        return self._server.limits

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics`` with the bound port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{METRICS_PATH}"

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.close()

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
