"""A small HTTP backend for demos and tests: a version, injected errors and latency, all changeable at runtime.

Endpoints (one port):

``GET|HEAD|POST`` any other path
    ``200 "<version>\\n"``, or ``500 "<version> error\\n"`` for an injected error;
    header ``X-Version: <version>`` either way. Delayed by ``latency`` seconds
    plus up to ``latency_jitter`` more plus a long-tailed draw of median
    ``latency_median`` and p99 ``latency_p99``, all times ``latency_scale``
    (see :mod:`nginx_canary.demo.latency`).
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
    ``latency``, ``latency_jitter``, ``latency_median``, ``latency_p99``,
    ``latency_scale``, ``healthy``, plus ``"reset_counters": true``);
    answers like ``GET``, or 400 with ``{"error": ...}``.

The admin endpoint answers 403 unless the peer is a loopback address, the
``Host`` header names a loopback host, and no forwarding header is present (see
:mod:`nginx_canary.demo.admin_access`). Injected errors are deterministic (see
:mod:`nginx_canary.demo.app_settings`); only the latency is random, from a
generator seeded with ``seed``. The HTTP side: :mod:`nginx_canary.demo.app_http`.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from nginx_canary.demo.admin_access import admin_refusal, is_loopback_address
from nginx_canary.demo.app_http import BackendServer
from nginx_canary.demo.app_settings import MAX_LATENCY, ErrorPattern, Settings, apply_changes
from nginx_canary.demo.latency import LatencyModel


class DemoApp:
    """The demo backend, served from background threads; see the module docstring for its endpoints.

    Use ``start()``/``stop()`` or ``with DemoApp(...) as app:``. Settings change
    at runtime with ``update()`` or ``POST /__admin``.
    """

    def __init__(self, version: str = "v1", error_rate: float = 0.0, latency: float = 0.0,
                 latency_jitter: float = 0.0, healthy: bool = True, *, latency_median: float = 0.0,
                 latency_p99: float = 0.0, latency_scale: float = 1.0, host: str = "127.0.0.1",
                 port: int = 0, seed: int = 0, idle_timeout: float = 75.0, verbose: bool = False,
                 admin_peer_allowed: Callable[[str], bool] = is_loopback_address) -> None:
        """Raises ValueError for a bad setting."""
        self._settings = apply_changes(Settings(), {
            "version": version, "error_rate": error_rate, "latency": latency,
            "latency_jitter": latency_jitter, "latency_median": latency_median, "latency_p99": latency_p99,
            "latency_scale": latency_scale, "healthy": healthy})
        self.host = host
        self._requested_port = port
        self.idle_timeout = idle_timeout  # above nginx's default keepalive_timeout (60s) for upstreams
        self.verbose = verbose
        self._admin_peer_allowed = admin_peer_allowed
        self._lock = threading.Lock()
        self._pattern = ErrorPattern(self._settings.error_rate)
        self._latency = LatencyModel(seed)
        self._stopping = threading.Event()
        self._server: Optional[BackendServer] = None
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
        self._server = BackendServer((self.host, self._requested_port), self)
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

    def _reset_counters_locked(self) -> None:
        self._requests = 0
        self._responses: Counter = Counter()
        self._health_checks = 0
        self._admin_requests = 0
        self._in_flight = 0
        self._connections_total = 0

    # -- the HTTP side's calls (app_http.Backend), from handler threads -------------------------

    def begin_request(self) -> Tuple[int, float, str]:
        with self._lock:
            s = self._settings
            status = 500 if self._pattern.next_fails() else 200
            delay = min(MAX_LATENCY, self._latency.draw(s.latency, s.latency_jitter, s.latency_median,
                                                        s.latency_p99, s.latency_scale))
            self._requests += 1
            self._responses[status] += 1
            self._in_flight += 1
            return status, delay, s.version

    def end_request(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def health_check(self) -> Tuple[int, str, str]:
        with self._lock:
            self._health_checks += 1
            s = self._settings
        return (200, "ok\n", s.version) if s.healthy else (503, "unhealthy\n", s.version)

    def admin_check(self, peer: str, headers: Mapping[str, str]) -> Optional[str]:
        with self._lock:
            self._admin_requests += 1
        return admin_refusal(peer, headers, self._admin_peer_allowed)

    def admin_update(self, changes: Dict[str, Any]) -> None:
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

    def connection_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
            self._connections_total += 1
            self._handler_threads.add(threading.current_thread())

    def connection_closed(self, conn: socket.socket) -> None:
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
    p.add_argument("--latency-median", type=float, default=0.0,
                   help="median of a long-tailed (lognormal) delay added on top, seconds; 0 = none")
    p.add_argument("--latency-p99", type=float, default=0.0,
                   help="p99 of that delay, seconds (default: 5x the median)")
    p.add_argument("--latency-scale", type=float, default=1.0, help="multiplies the whole delay (3 = 3x slower)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random part of the latency")
    p.add_argument("--unhealthy", action="store_true", help="start with /health answering 503")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Serve in the foreground until SIGTERM or SIGINT; return 0 then, 2 for bad arguments."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        app = DemoApp(args.app_version, args.error_rate, args.latency, args.latency_jitter,
                      not args.unhealthy, latency_median=args.latency_median, latency_p99=args.latency_p99,
                      latency_scale=args.latency_scale, host=args.host, port=args.port, seed=args.seed,
                      verbose=args.verbose)
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
