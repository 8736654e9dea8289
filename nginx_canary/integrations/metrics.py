"""The daemon's Prometheus endpoint: what the rollouts do, in Prometheus metrics.

One :class:`DaemonMetrics` per daemon. It owns its own ``CollectorRegistry``
(nothing goes to prometheus_client's global one) and is thread-safe: the
daemon's main loop feeds it, the HTTP server's threads read it, and every
figure is computed at scrape time from data the main loop handed over, never
from the main loop's live objects.

API (wiring in the daemon)::

    metrics = DaemonMetrics()
    server = metrics.serve(settings.metrics_listen)   # "host:port"; raises MetricsError; server.port, server.close()
    rollout.listeners.append(metrics.listener(name))  # once per Rollout object
    # about once per second, per rollout, from the main loop:
    metrics.update_rollout(name, state=st.state, canary_percent=float(st.canary_percent),
                           canary=windows.cumulative("group:canary"), stable=windows.cumulative("group:stable"))
    metrics.set_log_lines(parsed, unparsed, source=name)   # absolute totals of that rollout's analyzer
    metrics.observe_reload(seconds)                        # each nginx reload the daemon did
    metrics.remove_rollout(name)                           # a rollout removed from the YAML (SIGHUP)
    server.close()                                         # at shutdown

``update_rollout`` takes ownership of the two :class:`Stats`: pass copies
(``WindowedStats.cumulative`` returns one) and never touch them again. Their
figures are cumulative. A request count lower than the previous update's is
read as a new source (the traffic source was rebuilt, or ``mark()`` was called):
what the previous update held is kept as a base and added to the new figures,
so the counters never go down while the daemon runs. ``set_log_lines`` does
the same per ``source``.

Metrics (``rollout`` is the rollout's name; ``group`` is ``canary`` or ``stable``):

``nginx_canary_upstream_requests_total{rollout,group,code}`` (counter)
    Upstream attempts seen in the access log since the daemon started, by
    status class ``code``: ``2xx``, ``3xx``, ``4xx``, ``5xx``, and ``other``
    (no status logged, or 1xx), so the codes add up to every attempt, the
    denominator of the daemon's own 5xx rate.
``nginx_canary_upstream_response_seconds{rollout,group}`` (histogram)
    Their latencies. Buckets come from the latency sketch: a bucket ``le=B``
    counts every latency ``<= B`` and possibly some within 2 % above B
    (the sketch's bin of B); ``_sum`` and ``_count`` are exact. Attempts
    without a logged latency are in ``_count`` of neither.
``nginx_canary_canary_weight_percent{rollout}`` (gauge)
    The canary's share of the upstream's traffic in percent (0 to 100).
``nginx_canary_rollout_state{rollout,state}`` (gauge)
    1 for the rollout's current state, 0 for every other state of
    :class:`nginx_canary.domain.State`.
``nginx_canary_rollbacks_total{rollout}`` (counter)
    Automatic rollbacks (failed checks, or a step nginx would not take);
    operator aborts are not rollbacks.
``nginx_canary_check_failures_total{rollout,check}`` (counter)
    Failed checks, by check name (``error_rate``, ``p99_latency``, ...).
``nginx_canary_reload_seconds`` (histogram)
    How long each nginx reload took, signal to proof.
``nginx_canary_log_lines_total{result}`` (counter)
    Access-log lines read, ``result="parsed"`` or ``"unparsed"`` (lines that
    did not fit the log format).
``nginx_canary_start_time_seconds`` (gauge)
    When this daemon process started (seconds since the epoch).

Counters of a rollout exist at 0 as soon as the rollout is known (an
``update_rollout`` or a ``listener``), so that ``increase()`` sees their
first step. Whether the daemon is up is Prometheus's own ``up`` series of the
scrape job. Alert rules: ``conf.d/prometheus/nginx-canary-rules.yml``.
"""

from __future__ import annotations

import io
import math
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from nginx_canary.rollout.record import HistoryRecord
from nginx_canary.rollout.analysis import CHECKS
from nginx_canary.daemon.bounded_server import BoundedServer, Limits, Refusal
from nginx_canary.errors import CanaryError
from nginx_canary.logs.window import Stats
from nginx_canary.domain import State

#: The URL path of the metrics.
METRICS_PATH = "/metrics"
#: Upper bounds (seconds) of the upstream latency buckets: 1 ms (nginx logs milliseconds) to a minute.
LATENCY_BUCKETS: Tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                      10.0, 30.0, 60.0)
#: Upper bounds (seconds) of the reload buckets: a proven reload takes ~0.1 s, and gives up after 10 s.
RELOAD_BUCKETS: Tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Status classes of ``nginx_canary_upstream_requests_total``.
CODES = ("2xx", "3xx", "4xx", "5xx", "other")
GROUPS = ("canary", "stable")
#: What the endpoint may hold (see :mod:`nginx_canary.daemon.bounded_server`): 2 workers (a scrape renders in
#: milliseconds), 64 connections being read, 5 s for a request's head, 10 s to send the answer.
LIMITS = Limits(workers=2, max_pending=64, queue=16, request_deadline=5.0, answer_deadline=10.0,
                max_request_bytes=8192)


class MetricsError(CanaryError):
    """The metrics endpoint cannot listen on its address."""


# --- what the main loop hands over -------------------------------------------------------------


def _combined(base: Optional[Stats], current: Stats) -> Stats:
    """``base + current`` without changing either (``current`` itself when there is no base)."""
    if base is None:
        return current
    total = base.copy()
    total.merge(current)
    return total


@dataclass
class _GroupTraffic:
    """One group's cumulative stats. Replaced, never mutated, once handed to a scrape."""

    current: Stats = field(default_factory=Stats)
    base: Optional[Stats] = None  # what earlier sources held (see "new source" in the module docstring)

    def updated(self, stats: Stats) -> "_GroupTraffic":
        if stats.requests < self.current.requests or stats.latency.count < self.current.latency.count:
            return _GroupTraffic(stats, _combined(self.base, self.current))
        return _GroupTraffic(stats, self.base)

    def total(self) -> Stats:
        return _combined(self.base, self.current)


@dataclass
class _RolloutFigures:
    state: str = State.IDLE
    canary_percent: float = 0.0
    groups: Dict[str, _GroupTraffic] = field(default_factory=lambda: {g: _GroupTraffic() for g in GROUPS})


class _Histogram:
    """A plain cumulative histogram (callers hold the lock)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.count += 1
        self.sum += value

    def buckets(self) -> List[Tuple[str, float]]:
        return [(floatToGoString(b), c) for b, c in zip(self.bounds, self.counts)] + [("+Inf", self.count)]


def _check_bounds(bounds: Sequence[float], what: str) -> Tuple[float, ...]:
    result = tuple(float(b) for b in bounds)
    if not result or any(not 0 <= b < math.inf for b in result) or list(result) != sorted(set(result)):
        raise ValueError(f"{what} must be increasing finite non-negative numbers, not {bounds!r}")
    return result


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, not {value!r}")
    return value


class DaemonMetrics:
    """The daemon's metrics and their registry. Thread-safe; see the module docstring for the API."""

    def __init__(self, *, latency_buckets: Sequence[float] = LATENCY_BUCKETS,
                 reload_buckets: Sequence[float] = RELOAD_BUCKETS, check_names: Iterable[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        """``check_names``: checks whose failure counters start at 0 (besides those of ``analysis.CHECKS``).

        Raises ValueError for buckets that are not increasing finite non-negative numbers.
        """
        self._lock = threading.Lock()
        self._latency_buckets = _check_bounds(latency_buckets, "latency_buckets")
        self._reload = _Histogram(_check_bounds(reload_buckets, "reload_buckets"))
        self._check_names = tuple(dict.fromkeys([c.name for c in CHECKS] + list(check_names)))
        self._start_time = clock()
        self._rollouts: Dict[str, _RolloutFigures] = {}
        self._rollbacks: Dict[str, int] = {}
        self._check_failures: Dict[Tuple[str, str], int] = {}
        # source -> [parsed base, unparsed base, parsed last, unparsed last]
        self._log_lines: Dict[str, List[int]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    # -- feeding (main loop) ---------------------------------------------------------------

    def update_rollout(self, name: str, *, state: str, canary_percent: Any, canary: Stats, stable: Stats) -> None:
        """The rollout's state, canary share (percent: float, Fraction or str) and cumulative group stats.

        Takes ownership of ``canary`` and ``stable`` (pass copies). Raises
        ValueError when ``canary_percent`` is not a number.
        """
        percent = float(canary_percent)
        if percent != percent:
            raise ValueError("canary_percent must be a number, not NaN")
        with self._lock:
            figures = self._known(name)
            figures.state = str(state)
            figures.canary_percent = percent
            figures.groups = {"canary": figures.groups["canary"].updated(canary),
                              "stable": figures.groups["stable"].updated(stable)}

    def remove_rollout(self, name: str) -> None:
        """Drop every series of rollout ``name`` (it left the config). Unknown names are ignored."""
        with self._lock:
            self._rollouts.pop(name, None)
            self._rollbacks.pop(name, None)
            for key in [k for k in self._check_failures if k[0] == name]:
                del self._check_failures[key]

    def listener(self, rollout_name: str) -> Callable[[str, Dict[str, Any]], None]:
        """A :attr:`Rollout.listeners` entry counting that rollout's rollbacks and failed checks.

        Counts each ``rollback`` event, and each failed check of a ``check``
        record whose verdict is ``fail`` (the rollout records every failed
        check, so the count is exact).
        """
        with self._lock:
            self._known(rollout_name)

        def on_record(event: str, record: Dict[str, Any]) -> None:
            if event == "rollback":
                with self._lock:
                    self._known(rollout_name)
                    self._rollbacks[rollout_name] += 1
            elif event == "check":
                failed = _failed_checks(record)
                if failed:
                    with self._lock:
                        self._known(rollout_name)
                        for check in failed:
                            key = (rollout_name, check)
                            self._check_failures[key] = self._check_failures.get(key, 0) + 1

        return on_record

    def observe_reload(self, seconds: float) -> None:
        """One nginx reload that took ``seconds``. Raises ValueError for a negative or non-finite value."""
        value = float(seconds)
        if not 0 <= value < math.inf:
            raise ValueError(f"reload seconds must be a finite non-negative number, not {seconds!r}")
        with self._lock:
            self._reload.observe(value)

    def set_log_lines(self, parsed: int, unparsed: int, *, source: str = "") -> None:
        """Absolute totals of access-log lines (parsed, unparsed) read by ``source`` since it started.

        Give each analyzer its own ``source`` (the rollout's name); the metric
        is their sum. A total lower than the last one is a new source: the old
        totals are kept. Raises ValueError for negative or non-integer counts.
        """
        parsed = _count(parsed, "parsed")
        unparsed = _count(unparsed, "unparsed")
        with self._lock:
            entry = self._log_lines.setdefault(source, [0, 0, 0, 0])
            if parsed < entry[2] or unparsed < entry[3]:
                entry[0] += entry[2]
                entry[1] += entry[3]
            entry[2], entry[3] = parsed, unparsed

    def _known(self, name: str) -> _RolloutFigures:
        """The rollout's figures, creating them and its counters at 0 (callers hold the lock)."""
        figures = self._rollouts.get(name)
        if figures is None:
            figures = self._rollouts[name] = _RolloutFigures()
            self._rollbacks.setdefault(name, 0)
            for check in self._check_names:
                self._check_failures.setdefault((name, check), 0)
        return figures

    # -- reading (scrape threads) ----------------------------------------------------------

    def collect(self) -> List[Metric]:
        """The metric families as of now (what a scrape returns)."""
        with self._lock:
            rollouts = [(name, f.state, f.canary_percent, dict(f.groups)) for name, f in sorted(self._rollouts.items())]
            rollbacks = dict(self._rollbacks)
            failures = dict(self._check_failures)
            reload_buckets, reload_sum = self._reload.buckets(), self._reload.sum
            parsed = sum(e[0] + e[2] for e in self._log_lines.values())
            unparsed = sum(e[1] + e[3] for e in self._log_lines.values())
        # The rest works on objects no other thread changes (see _GroupTraffic).
        requests = CounterMetricFamily("nginx_canary_upstream_requests",
                                       "Upstream attempts in the access log, by group and status class.",
                                       labels=("rollout", "group", "code"))
        latency = HistogramMetricFamily("nginx_canary_upstream_response_seconds",
                                        "Upstream response time of the attempts, by group (buckets from a sketch "
                                        "with 1 % relative accuracy).", labels=("rollout", "group"))
        weight = GaugeMetricFamily("nginx_canary_canary_weight_percent",
                                   "The canary's share of the upstream's traffic, in percent.", labels=("rollout",))
        state_gauge = GaugeMetricFamily("nginx_canary_rollout_state",
                                        "1 for the rollout's current state, 0 for the others.",
                                        labels=("rollout", "state"))
        for name, state, percent, groups in rollouts:
            weight.add_metric((name,), percent)
            known_states = [s.value for s in State]
            for known in known_states + ([state] if state not in known_states else []):
                state_gauge.add_metric((name, known), 1.0 if known == state else 0.0)
            for group in GROUPS:
                stats = groups[group].total()
                other = stats.requests - stats.responses_2xx - stats.responses_3xx - stats.errors_4xx - stats.errors_5xx
                for code, value in zip(CODES, (stats.responses_2xx, stats.responses_3xx, stats.errors_4xx,
                                                stats.errors_5xx, max(0, other))):
                    requests.add_metric((name, group, code), value)
                sketch = stats.latency
                buckets = [(floatToGoString(b), sketch.count_at_most(b)) for b in self._latency_buckets]
                buckets.append(("+Inf", sketch.count))
                latency.add_metric((name, group), buckets, sketch.sum)
        rollback_counter = CounterMetricFamily("nginx_canary_rollbacks",
                                               "Automatic rollbacks of the rollout to its start snapshot.",
                                               labels=("rollout",))
        for name, value in sorted(rollbacks.items()):
            rollback_counter.add_metric((name,), value)
        failure_counter = CounterMetricFamily("nginx_canary_check_failures", "Failed checks, by check.",
                                              labels=("rollout", "check"))
        for (name, check), value in sorted(failures.items()):
            failure_counter.add_metric((name, check), value)
        reload = HistogramMetricFamily("nginx_canary_reload_seconds",
                                       "Time from nginx's reload signal to the proof that it took effect.")
        reload.add_metric((), reload_buckets, reload_sum)
        lines = CounterMetricFamily("nginx_canary_log_lines", "Access-log lines read, by whether they fit the format.",
                                    labels=("result",))
        lines.add_metric(("parsed",), parsed)
        lines.add_metric(("unparsed",), unparsed)
        start = GaugeMetricFamily("nginx_canary_start_time_seconds",
                                  "When the daemon started, in seconds since the epoch.", value=self._start_time)
        return [requests, latency, weight, state_gauge, rollback_counter, failure_counter, reload, lines, start]

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (what ``GET /metrics`` answers)."""
        return generate_latest(self.registry)

    # -- the endpoint -----------------------------------------------------------------------------

    def serve(self, listen: str) -> "MetricsServer":
        """Serve ``GET /metrics`` on ``listen`` ("host:port", "[v6]:port"; port 0 picks a free one).

        The server runs in daemon threads, within :data:`LIMITS`. Raises
        MetricsError, one line naming the address, when the address cannot be
        resolved or bound.
        """
        return MetricsServer(listen, self.registry)


class _Collector:
    """Registered in the registry: asks :class:`DaemonMetrics` at each scrape."""

    def __init__(self, metrics: DaemonMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics.collect())


def _failed_checks(record: Mapping[str, Any]) -> List[str]:
    """Names of the failed checks of a ``check`` history record whose verdict failed."""
    return [c.name for c in HistoryRecord.from_data(record).verdict.failed_checks()]


# --- the HTTP server ---------------------------------------------------------------------------------


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
