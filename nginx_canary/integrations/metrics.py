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

The metrics, their names and HELP texts: :mod:`nginx_canary.integrations.metrics_families`;
the HTTP endpoint: :mod:`nginx_canary.integrations.metrics_server`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from nginx_canary.domain import State
from nginx_canary.integrations.metrics_families import GROUPS, RolloutSnapshot, Snapshot, families
from nginx_canary.integrations.metrics_server import MetricsServer
from nginx_canary.logs.window import Stats
from nginx_canary.rollout.judge import CHECK_NAMES
from nginx_canary.rollout.record import HistoryRecord

#: Upper bounds (seconds) of the upstream latency buckets: 1 ms (nginx logs milliseconds) to a minute.
LATENCY_BUCKETS: Tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                      10.0, 30.0, 60.0)
#: Upper bounds (seconds) of the reload buckets: a proven reload takes ~0.1 s, and gives up after 10 s.
RELOAD_BUCKETS: Tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
        """``check_names``: checks whose failure counters start at 0 (besides the judge's, ``judge.CHECK_NAMES``).

        Raises ValueError for buckets that are not increasing finite non-negative numbers.
        """
        self._lock = threading.Lock()
        self._latency_buckets = _check_bounds(latency_buckets, "latency_buckets")
        self._reload = _Histogram(_check_bounds(reload_buckets, "reload_buckets"))
        self._check_names = tuple(dict.fromkeys(list(CHECK_NAMES) + list(check_names)))
        self._start_time = clock()
        self._fleet: Optional[Tuple[str, str, bool, bool]] = None
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

    def set_fleet(self, fleet: str, host: str, *, coordinating: bool, reachable: bool) -> None:
        """This daemon's place in its fleet (see ``nginx_canary_fleet_*`` in docs/CONFIG.md)."""
        with self._lock:
            self._fleet = (fleet, host, coordinating, reachable)

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
            snapshot = Snapshot(
                rollouts=[RolloutSnapshot(name, f.state, f.canary_percent, dict(f.groups))
                          for name, f in sorted(self._rollouts.items())],
                rollbacks=dict(self._rollbacks), check_failures=dict(self._check_failures),
                reload_buckets=self._reload.buckets(), reload_sum=self._reload.sum,
                parsed_lines=sum(e[0] + e[2] for e in self._log_lines.values()),
                unparsed_lines=sum(e[1] + e[3] for e in self._log_lines.values()),
                start_time=self._start_time, fleet=self._fleet)
        # families() works on objects no other thread changes (see _GroupTraffic).
        return families(snapshot, self._latency_buckets)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (what ``GET /metrics`` answers)."""
        return generate_latest(self.registry)

    # -- the endpoint -----------------------------------------------------------------------------

    def serve(self, listen: str) -> "MetricsServer":
        """Serve ``GET /metrics`` on ``listen`` ("host:port", "[v6]:port"; port 0 picks a free one).

        The server runs in daemon threads, within :data:`.metrics_server.LIMITS`. Raises
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
