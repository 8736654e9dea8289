"""The daemon's metric families: their names, HELP texts, types and labels, built from figures handed over.

:class:`~nginx_canary.integrations.metrics.DaemonMetrics` copies its figures
under its lock into a :class:`Snapshot` and :func:`families` turns them into
prometheus_client metric families, outside the lock.

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

from dataclasses import dataclass
from typing import List, Mapping, Optional, Protocol, Sequence, Tuple

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from nginx_canary.domain import State
from nginx_canary.logs.window import Stats

#: Status classes of ``nginx_canary_upstream_requests_total``.
CODES = ("2xx", "3xx", "4xx", "5xx", "other")
GROUPS = ("canary", "stable")


class GroupFigures(Protocol):
    """One group's traffic as handed over: no other thread changes it any more."""

    def total(self) -> Stats:
        """The group's cumulative stats since the daemon started."""


@dataclass(frozen=True)
class RolloutSnapshot:
    """One rollout's state, canary share (percent) and traffic by group (every name of :data:`GROUPS`)."""

    name: str
    state: str
    canary_percent: float
    groups: Mapping[str, GroupFigures]


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape shows, copied from the live figures under their lock."""

    rollouts: Sequence[RolloutSnapshot]
    rollbacks: Mapping[str, int]
    check_failures: Mapping[Tuple[str, str], int]
    reload_buckets: Sequence[Tuple[str, float]]  # (le, cumulative count), "+Inf" last
    reload_sum: float
    parsed_lines: int
    unparsed_lines: int
    start_time: float
    #: In a fleet: (fleet, host, coordinating, etcd reachable); None for a lone host.
    fleet: Optional[Tuple[str, str, bool, bool]] = None


def families(snapshot: Snapshot, latency_buckets: Sequence[float]) -> List[Metric]:
    """The metric families of ``snapshot`` (what a scrape returns), with ``latency_buckets`` as upper bounds."""
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
    for rollout in snapshot.rollouts:
        name, state = rollout.name, rollout.state
        weight.add_metric((name,), rollout.canary_percent)
        known_states = [s.value for s in State]
        for known in known_states + ([state] if state not in known_states else []):
            state_gauge.add_metric((name, known), 1.0 if known == state else 0.0)
        for group in GROUPS:
            stats = rollout.groups[group].total()
            other = stats.requests - stats.responses_2xx - stats.responses_3xx - stats.errors_4xx - stats.errors_5xx
            for code, value in zip(CODES, (stats.responses_2xx, stats.responses_3xx, stats.errors_4xx,
                                            stats.errors_5xx, max(0, other))):
                requests.add_metric((name, group, code), value)
            sketch = stats.latency
            buckets = [(floatToGoString(b), sketch.count_at_most(b)) for b in latency_buckets]
            buckets.append(("+Inf", sketch.count))
            latency.add_metric((name, group), buckets, sketch.sum)
    rollback_counter = CounterMetricFamily("nginx_canary_rollbacks",
                                           "Automatic rollbacks of the rollout to its start snapshot.",
                                           labels=("rollout",))
    for name, value in sorted(snapshot.rollbacks.items()):
        rollback_counter.add_metric((name,), value)
    failure_counter = CounterMetricFamily("nginx_canary_check_failures", "Failed checks, by check.",
                                          labels=("rollout", "check"))
    for (name, check), value in sorted(snapshot.check_failures.items()):
        failure_counter.add_metric((name, check), value)
    reload = HistogramMetricFamily("nginx_canary_reload_seconds",
                                   "Time from nginx's reload signal to the proof that it took effect.")
    reload.add_metric((), list(snapshot.reload_buckets), snapshot.reload_sum)
    lines = CounterMetricFamily("nginx_canary_log_lines", "Access-log lines read, by whether they fit the format.",
                                labels=("result",))
    lines.add_metric(("parsed",), snapshot.parsed_lines)
    lines.add_metric(("unparsed",), snapshot.unparsed_lines)
    start = GaugeMetricFamily("nginx_canary_start_time_seconds",
                              "When the daemon started, in seconds since the epoch.", value=snapshot.start_time)
    found = [requests, latency, weight, state_gauge, rollback_counter, failure_counter, reload, lines, start]
    if snapshot.fleet is not None:
        fleet, host, coordinating, reachable = snapshot.fleet
        # The host label joins this daemon's series (scraped per host) with the fleet's: which host
        # coordinates, which ones cannot reach etcd.
        for metric, text, value in (
                ("nginx_canary_fleet_coordinator", "1 when this host's daemon coordinates the fleet.", coordinating),
                ("nginx_canary_fleet_etcd_reachable", "1 when this host's daemon reached etcd at its last round.",
                 reachable)):
            gauge = GaugeMetricFamily(metric, text, labels=("fleet", "host"))
            gauge.add_metric((fleet, host), 1.0 if value else 0.0)
            found.append(gauge)
    return found
