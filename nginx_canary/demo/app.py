"""A small HTTP backend for demos and tests: a version, injected errors and latency, all changeable at runtime.

Endpoints (one port):

``GET|HEAD|POST`` any other path
    ``200 "<version>\\n"``, or ``500 "<version> error\\n"`` for an injected error;
    header ``X-Version: <version>`` either way. Delayed by ``latency`` seconds
    plus up to ``latency_jitter`` more.
``GET|HEAD /health``
    ``200 "ok\\n"`` while the ``healthy`` flag is set, else ``503 "unhealthy\\n"``.
    Never delayed, never an injected error: like many real health endpoints it
    says nothing about how the application treats real traffic, which is the
    point of analysing the access log instead.
``GET /__admin``
    Current settings and counters as JSON.
``POST /__admin``
    ``Content-Type: application/json`` body such as
    ``{"error_rate": 1.0, "latency": 0.2}`` (keys: ``version``, ``error_rate``,
    ``latency``, ``latency_jitter``, ``healthy``, plus ``"reset_counters": true``);
    answers like ``GET``, or 400 with ``{"error": ...}``.

The admin endpoint answers 403 unless the peer is a loopback address, the
``Host`` header names a loopback host, and no forwarding header
(``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``, ``Via``) is present: behind
a local reverse proxy every peer is 127.0.0.1, so the peer check alone would let
anyone reach it through the proxy. nginx sends ``Host: <upstream name>`` by
default, which already fails the check; a demo config should also set
``X-Forwarded-For``. Requiring a JSON content type makes a browser send a CORS
preflight (which is never answered) before any cross-site POST.

Injected errors are deterministic, not random: after ``n`` requests since
``error_rate`` was last set, exactly ``floor(n * error_rate)`` have answered 500,
spread evenly (rate 0.5 fails every 2nd request, 0.3 fails the 4th, 7th, 10th,
...; the rate is used as a fraction with a denominator of at most 10**6). Tests
can therefore assert exact counts. Only the latency jitter is random, from a
generator seeded with ``seed``.

Each accepted socket gets ``TCP_NODELAY`` and each response leaves in a single
write (buffered headers and body), so Nagle's algorithm and delayed ACKs do not
add ~40 ms per request on keep-alive connections.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple
from urllib.parse import urlsplit

ADMIN_PATH = "/__admin"
HEALTH_PATH = "/health"
MAX_LATENCY = 60.0
MAX_REQUEST_BODY = 64 * 1024
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "Via")
_VERSION_RE = re.compile(r"[\x21-\x7e]{1,64}")  # visible ASCII: safe in a header and a body line


@dataclass(frozen=True)
class Settings:
    """What the app does with the next request."""

    version: str = "v1"
    error_rate: float = 0.0
    latency: float = 0.0
    latency_jitter: float = 0.0
    healthy: bool = True


SETTING_NAMES = frozenset(f.name for f in fields(Settings))


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, not {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, not {value!r}")
    return value


def apply_changes(base: Settings, changes: Mapping[str, Any]) -> Settings:
    """``base`` with ``changes`` applied, validated.

    Raises ValueError for an unknown key or a bad value (the message names it).
    """
    unknown = sorted(set(changes) - SETTING_NAMES)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(SETTING_NAMES))}")
    clean: Dict[str, Any] = {}
    for name, value in changes.items():
        if name == "version":
            if not isinstance(value, str) or not _VERSION_RE.fullmatch(value):
                raise ValueError(f"version must be 1-64 visible ASCII characters, not {value!r}")
            clean[name] = value
        elif name == "healthy":
            if not isinstance(value, bool):
                raise ValueError(f"healthy must be true or false, not {value!r}")
            clean[name] = value
        elif name == "error_rate":
            clean[name] = _number(name, value, 0.0, 1.0)
        else:
            clean[name] = _number(name, value, 0.0, MAX_LATENCY)
    return replace(base, **clean)


class ErrorPattern:
    """Decides which requests fail so that exactly ``floor(n * rate)`` of the first ``n`` do (not thread-safe)."""

    def __init__(self, rate: float) -> None:
        self._rate = Fraction(rate).limit_denominator(10**6)
        self._seen = 0

    def next_fails(self) -> bool:
        self._seen += 1
        n, num, den = self._seen, self._rate.numerator, self._rate.denominator
        return (n * num) // den > ((n - 1) * num) // den


def is_loopback_address(host: str) -> bool:
    """True for an address in 127.0.0.0/8, ``::1`` or IPv4-mapped loopback; False otherwise (names included)."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _host_header_name(value: str) -> str:
    value = value.strip()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def admin_refusal(peer: str, headers: Mapping[str, str],
                  peer_allowed: Callable[[str], bool] = is_loopback_address) -> Optional[str]:
    """Why an admin request from ``peer`` with ``headers`` is refused, or None when it is allowed.

    ``headers`` should be case-insensitive (``http.client.HTTPMessage``). Raises nothing.
    """
    if not peer_allowed(peer):
        return f"the admin endpoint is loopback-only (peer {peer})"
    for name in FORWARDING_HEADERS:
        if headers.get(name) is not None:
            return f"the admin endpoint refuses proxied requests ({name} header present)"
    host = _host_header_name(headers.get("Host") or "")
    if host.lower() != "localhost" and not is_loopback_address(host):
        return f"the admin endpoint needs a loopback Host header, not {host!r}"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive peers (nginx) hold connections open; stop() closes them itself
    request_queue_size = 128

    def __init__(self, address: Tuple[str, int], app: "DemoApp") -> None:
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
    server: _Server

    def setup(self) -> None:
        self.timeout = self.server.app.idle_timeout
        super().setup()
        self.server.app._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app._connection_closed(self.connection)

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
            status, text, version = app._health()
            self._respond(status, text.encode(), version=version)
        else:
            status, delay, version = app._begin_request()
            try:
                if delay > 0:
                    app._stopping.wait(delay)
                text = f"{version}\n" if status == 200 else f"{version} error\n"
                self._respond(status, text.encode(), version=version)
            finally:
                app._end_request()

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
        refusal = app._admin_check(self.client_address[0], self.headers)
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
                app._admin_update(changes)
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


class DemoApp:
    """The demo backend, served from background threads; see the module docstring for its endpoints.

    Use ``start()``/``stop()`` or ``with DemoApp(...) as app:``. Settings change
    at runtime with ``update()`` or ``POST /__admin``.
    """

    def __init__(self, version: str = "v1", error_rate: float = 0.0, latency: float = 0.0,
                 latency_jitter: float = 0.0, healthy: bool = True, *, host: str = "127.0.0.1",
                 port: int = 0, seed: int = 0, idle_timeout: float = 75.0, verbose: bool = False,
                 admin_peer_allowed: Callable[[str], bool] = is_loopback_address) -> None:
        """Raises ValueError for a bad setting."""
        self._settings = apply_changes(Settings(), {
            "version": version, "error_rate": error_rate, "latency": latency,
            "latency_jitter": latency_jitter, "healthy": healthy})
        self.host = host
        self._requested_port = port
        self.idle_timeout = idle_timeout  # above nginx's default keepalive_timeout (60s) for upstreams
        self.verbose = verbose
        self._admin_peer_allowed = admin_peer_allowed
        self._lock = threading.Lock()
        self._pattern = ErrorPattern(self._settings.error_rate)
        self._rng = random.Random(seed)
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._connections: Set[socket.socket] = set()
        self._handler_threads: Set[threading.Thread] = set()
        self._reset_counters_locked()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> int:
        """Bind and serve in a background thread; return the port. Raises OSError if binding fails."""
        if self._server is not None:
            raise RuntimeError("DemoApp already started")
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), self)
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"demo-app-{self.port}", daemon=True)
        self._thread.start()
        return self.port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close kept-alive connections, and wait up to ``timeout`` seconds for threads."""
        server = self._server
        if server is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()  # wakes requests sleeping out their latency
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        with self._lock:
            threads = list(self._handler_threads)
        for thread in [self._thread, *threads]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._server = None
        self._thread = None

    def __enter__(self) -> "DemoApp":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (raises RuntimeError before start())."""
        if self._server is None:
            raise RuntimeError("DemoApp not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # -- settings and counters ---------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    def update(self, **changes: Any) -> Settings:
        """Change settings for the next requests; setting ``error_rate`` restarts the error pattern.

        Raises ValueError for an unknown key or a bad value (nothing changes then).
        """
        with self._lock:
            self._settings = apply_changes(self._settings, changes)
            if "error_rate" in changes:
                self._pattern = ErrorPattern(self._settings.error_rate)
            return self._settings

    def reset_counters(self) -> None:
        with self._lock:
            self._reset_counters_locked()

    def stats(self) -> Dict[str, Any]:
        """Settings and counters as a JSON-ready dict.

        ``requests`` counts application requests (not /health, not /__admin) and
        ``responses`` splits them by status code (string keys), counted when the
        answer is decided.
        """
        with self._lock:
            return {
                "settings": asdict(self._settings),
                "requests": self._requests,
                "responses": {str(code): n for code, n in sorted(self._responses.items())},
                "health_checks": self._health_checks,
                "admin_requests": self._admin_requests,
                "in_flight": self._in_flight,
                "connections_total": self._connections_total,
                "connections_open": len(self._connections),
                "uptime": round(time.monotonic() - self._started_at, 3) if self._server else 0.0,
            }

    # -- called from handler threads -----------------------------------------------------------

    def _reset_counters_locked(self) -> None:
        self._requests = 0
        self._responses: Counter = Counter()
        self._health_checks = 0
        self._admin_requests = 0
        self._in_flight = 0
        self._connections_total = 0

    def _begin_request(self) -> Tuple[int, float, str]:
        with self._lock:
            s = self._settings
            status = 500 if self._pattern.next_fails() else 200
            delay = s.latency + (self._rng.uniform(0.0, s.latency_jitter) if s.latency_jitter else 0.0)
            self._requests += 1
            self._responses[status] += 1
            self._in_flight += 1
            return status, delay, s.version

    def _end_request(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _health(self) -> Tuple[int, str, str]:
        with self._lock:
            self._health_checks += 1
            s = self._settings
        return (200, "ok\n", s.version) if s.healthy else (503, "unhealthy\n", s.version)

    def _admin_check(self, peer: str, headers: Mapping[str, str]) -> Optional[str]:
        with self._lock:
            self._admin_requests += 1
        return admin_refusal(peer, headers, self._admin_peer_allowed)

    def _admin_update(self, changes: Dict[str, Any]) -> None:
        changes = dict(changes)
        reset = changes.pop("reset_counters", False)
        if not isinstance(reset, bool):
            raise ValueError(f"reset_counters must be true or false, not {reset!r}")
        with self._lock:
            new = apply_changes(self._settings, changes)  # validate everything before changing anything
            self._settings = new
            if "error_rate" in changes:
                self._pattern = ErrorPattern(new.error_rate)
            if reset:
                self._reset_counters_locked()
                self._admin_requests = 1  # this one

    def _connection_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
            self._connections_total += 1
            self._handler_threads.add(threading.current_thread())

    def _connection_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
            self._handler_threads.discard(threading.current_thread())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nginx_canary.demo.app",
                                description="Demo backend: a version string, injected errors and latency, "
                                            "changeable at runtime with POST /__admin.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default: %(default)s)")
    p.add_argument("--version", dest="app_version", default="v1", help="version to report (default: %(default)s)")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of requests answering 500, 0..1")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    p.add_argument("--latency-jitter", type=float, default=0.0, help="up to this many more seconds, at random")
    p.add_argument("--seed", type=int, default=0, help="seed for the latency jitter")
    p.add_argument("--unhealthy", action="store_true", help="start with /health answering 503")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Serve in the foreground until SIGTERM or SIGINT; return 0 then, 2 for bad arguments."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        app = DemoApp(args.app_version, args.error_rate, args.latency, args.latency_jitter,
                      not args.unhealthy, host=args.host, port=args.port, seed=args.seed, verbose=args.verbose)
    except ValueError as exc:
        parser.error(str(exc))
    # Blocked before any thread starts, so every thread inherits the mask and sigwait() receives them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        app.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"demo app {app.settings.version} listening on {app.url}", flush=True)
    received = signal.sigwait(stop_signals)
    app.stop()
    if args.verbose:
        print(f"stopped on {signal.Signals(received).name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
