"""What the daemon's loop tells the outside world as it turns: systemd's STATUS= and watchdog, the metrics' figures."""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping, Optional

from nginx_canary.daemon.runtime import RolloutRuntime
from nginx_canary.daemon.sd_notify import Notifier
from nginx_canary.domain import ACTIVE_STATES
from nginx_canary.fleet.node import FleetNode
from nginx_canary.integrations.metrics import DaemonMetrics
from nginx_canary.logs.analyze import GROUP

#: How often the metrics get fresh copies of the figures (scrapes read the latest copy).
METRICS_EVERY = 1.0


def summary(runtimes: Mapping[str, RolloutRuntime]) -> str:
    """One line for systemd's STATUS=: each rollout's state and canary share."""
    parts = []
    for name, runtime in runtimes.items():
        st = runtime.rollout.state
        text = f"{name}: {st.state}"
        if st.state in ACTIVE_STATES and st.steps:
            text += f" {st.canary_percent} % (step {st.step_index + 1}/{len(st.steps)})"
        parts.append(text)
    return "; ".join(parts) or "no rollouts configured"


class Publisher:
    """Feeds systemd (when run under it) and the metrics (when served), each at its own pace; never blocks."""

    def __init__(self, notifier: Notifier, metrics: Optional[DaemonMetrics]) -> None:
        """``fleet`` (set once the daemon joined one) replaces each rollout's idle machine in the metrics."""
        self.fleet: Optional[FleetNode] = None
        self.notifier = notifier
        self.metrics = metrics
        #: When systemd's watchdog must next hear from the loop (monotonic seconds).
        self.next_watchdog = 0.0
        self._next_metrics = 0.0
        self._last_summary = ""

    def ready(self, runtimes: Mapping[str, RolloutRuntime]) -> None:
        self._last_summary = summary(runtimes)
        self.notifier.ready(self._last_summary)

    def turn(self, mono: float, runtimes: Mapping[str, RolloutRuntime]) -> None:
        """Once per turn of the loop: the watchdog and a changed STATUS=, then the metrics if due."""
        self._notify(mono, runtimes)
        if self.metrics is not None and mono >= self._next_metrics:
            self._next_metrics = mono + METRICS_EVERY
            self._publish_metrics(self.metrics, runtimes, self.fleet)

    def _notify(self, mono: float, runtimes: Mapping[str, RolloutRuntime]) -> None:
        if not self.notifier.enabled:
            return
        if self.notifier.watchdog_seconds is not None and mono >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = mono + self.notifier.watchdog_seconds
        text = summary(runtimes)
        if text != self._last_summary:
            self._last_summary = text
            self.notifier.status(text)

    @staticmethod
    def _publish_metrics(metrics: DaemonMetrics, runtimes: Mapping[str, RolloutRuntime],
                         fleet: Optional[FleetNode] = None) -> None:
        """Hand copies of every rollout's cumulative figures to the metrics (read by the scrape thread).

        In a fleet, a rollout's state is the fleet's plan and its share what this host applied.
        """
        if fleet is not None:
            metrics.set_fleet(fleet.store.prefix.rstrip("/").rsplit("/", 1)[-1], fleet.host,
                              coordinating=fleet.coordinator, reachable=fleet.cut_off_since is None)
        for name, runtime in runtimes.items():
            traffic = runtime.traffic.traffic
            st = runtime.rollout.state
            state, percent = st.state, Fraction(st.canary_percent)
            if fleet is not None and name in fleet.agents:
                plan, local = fleet.plans.get(name), fleet.agents[name].local
                state = plan.state if plan is not None else state
                percent = Fraction(local.percent) if local is not None and local.percent else Fraction(0)
            metrics.update_rollout(name, state=state, canary_percent=float(percent),
                                   canary=traffic.windows.cumulative(GROUP + "canary"),
                                   stable=traffic.windows.cumulative(GROUP + "stable"))
            analyzer = traffic.analyzer
            metrics.set_log_lines(analyzer.lines - analyzer.unparsed, analyzer.unparsed, source=name)
