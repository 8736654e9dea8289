"""One configured rollout as the daemon runs it: its rollout, its live traffic, its report series and integrations.

Also what building one needs: the config engine's settings for the daemon, the
check that a rollout fits nginx's config, the files it manages, its access log.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from nginx_canary.config.model import DaemonSettings, RolloutSettings
from nginx_canary.daemon.config_watch import ConfigWatcher
from nginx_canary.domain import ACTIVE_STATES
from nginx_canary.errors import BadInputError, StateError
from nginx_canary.integrations.gates import GateChecker, HttpChecker
from nginx_canary.integrations.webhooks import WebhookSender
from nginx_canary.logs.live import LogTraffic
from nginx_canary.logs.sources import format_for_file, log_for_upstream, named_format
from nginx_canary.logs.window import Stats
from nginx_canary.nginx import operations
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.paths import main_conf_path
from nginx_canary.nginx.sticky import require_consistent_hash
from nginx_canary.report.series import SeriesRecorder
from nginx_canary.rollout.machine import Rollout
from nginx_canary.rollout.store import GATES

log = logging.getLogger(__name__)

#: The report's series goes on this long after a run ends, and fills at most this many missed seconds.
SERIES_AFTER_RUN = 5.0
SERIES_CATCH_UP = 10


def operation_settings(settings: DaemonSettings) -> operations.Settings:
    """The config engine's settings for the daemon's nginx and state directory."""
    nginx = settings.nginx
    return operations.Settings(
        nginx_conf=main_conf_path(nginx.conf, nginx.prefix),
        nginx_bin=shutil.which(nginx.binary) or nginx.binary,
        nginx_prefix=os.path.abspath(nginx.prefix) if nginx.prefix else None,
        state_dir=os.path.abspath(settings.state_dir),
    )


def check_rollout_against_config(rollout: RolloutSettings, config: NginxConfig) -> None:
    """The rollout's upstream exists in http {}, and each canary address is one of its servers.

    A stream upstream is refused: the analysis reads http access logs
    (``$upstream_addr`` of each request), which nginx does not write for stream's TCP/UDP sessions.

    Raises BadInputError naming the rollout and what is missing; ConfigError
    when the upstream is defined twice in one context.
    """
    try:
        upstream = config.upstream(rollout.upstream, rollout.context)
    except BadInputError as exc:
        raise BadInputError(f"rollout {rollout.name!r}: {exc.message}") from None
    if upstream.context != "http":
        raise BadInputError(
            f"rollout {rollout.name!r}: upstream {rollout.upstream!r} is in {upstream.context} {{}} "
            f"({upstream.location}); rollouts judge http access logs and cannot analyse {upstream.context} "
            f"sessions: steer it by hand with set-weight --context {upstream.context}")
    if rollout.sticky:
        try:
            require_consistent_hash(upstream)
        except BadInputError as exc:
            raise BadInputError(f"rollout {rollout.name!r}: {exc.message}") from None
    addresses = {s.address for s in upstream.servers}
    missing = [a for a in rollout.canary if a not in addresses]
    if missing:
        raise BadInputError(f"rollout {rollout.name!r}: canary {', '.join(missing)} is not a server of upstream "
                            f"{rollout.upstream!r} (servers: {', '.join(sorted(addresses))})")


def upstream_files(config: NginxConfig, upstream: str) -> List[str]:
    """The files holding the ``server`` lines of every upstream called ``upstream`` (none if there is no such)."""
    return list(dict.fromkeys(server.file for u in config.upstreams if u.name == upstream for server in u.servers))


def open_traffic(rollout: RolloutSettings, config: NginxConfig, ops: operations.Settings) -> LogTraffic:
    """A :class:`LogTraffic` on the rollout's access log, in its format.

    Raises BadInputError (LogFormatError, LogReadError) naming the rollout.
    """
    nginx = ops.nginx()
    try:
        path = rollout.access_log or log_for_upstream(config, nginx, rollout.upstream)
        if rollout.log_format:
            spec = named_format(config, rollout.log_format)
        else:
            spec = format_for_file(config, nginx, path)
        return LogTraffic(config, rollout.upstream, rollout.canary, path, spec, watch_writes=False)
    except BadInputError as exc:
        raise type(exc)(f"rollout {rollout.name!r}: {exc}") from exc


class RunTraffic:
    """The rollout's :class:`TrafficSource`: the step's evidence from the live access log.

    Each step's evidence starts empty, so a rollback's failing requests never
    count against the next run started seconds later.
    """

    def __init__(self, traffic: LogTraffic) -> None:
        self.traffic = traffic

    def begin_step(self, at: float) -> None:
        """Evidence for the step that took effect at ``at`` starts empty (see :meth:`LogTraffic.begin_step`)."""
        self.traffic.begin_step(at)

    def evidence(self, now: float) -> Tuple[Stats, Stats]:
        """``(canary, stable)`` since the last ``begin_step``, as read up to ``now`` (independent copies)."""
        return self.traffic.evidence(now)

    def unparsed_reason(self) -> Optional[str]:
        """Why the step cannot be judged when the access log mostly fails to parse (see :meth:`LogTraffic.unparsed_reason`)."""
        return self.traffic.unparsed_reason()

    def restart_unparsed(self) -> None:
        """Judge whether the log mostly fails to parse on the lines read from now on only (a resume, a start)."""
        self.traffic.unparsed.reset()


@dataclass
class RolloutRuntime:
    """One configured rollout as the loop runs it."""

    rollout: Rollout
    traffic: RunTraffic
    series: SeriesRecorder
    next_check: float = 0.0  # monotonic time of the next check
    series_second: Optional[int] = None  # the last whole second put in the series
    series_until: Optional[float] = None  # record until then after a run ends (its last seconds)
    webhooks: Optional[WebhookSender] = None
    gates: Optional[GateChecker] = None
    http_checks: Optional[HttpChecker] = None
    watcher: Optional[ConfigWatcher] = None  # edits of the upstream's files, reported by watchdog

    def attach_integrations(self) -> None:
        """(Re)build webhooks, gates and HTTP checks from the rollout's current settings."""
        self.close_integrations()
        rollout = self.rollout
        settings = rollout.settings
        if settings.webhooks:
            self.webhooks = WebhookSender(settings.name, settings.webhooks)
            rollout.listeners.append(self.webhooks.listener)
        gate_urls = settings.gates
        if any(getattr(gate_urls, name) for name in GATES):
            self.gates = GateChecker()
        rollout.gates = self._gate if self.gates is not None else None
        if settings.analysis.http_checks:
            self.http_checks = HttpChecker(settings.analysis.http_checks, settings.analysis.interval)
        rollout.extra_checks = self._extra_checks if self.http_checks is not None else None

    def _gate(self, name: str, now: float) -> Optional[Tuple[str, str]]:
        url = getattr(self.rollout.settings.gates, name, None)
        if url is None or self.gates is None:
            return None
        status = self.gates.check(name, url, now)
        return status.state, status.reason

    def _extra_checks(self, now: float) -> Tuple[Any, ...]:
        assert self.http_checks is not None
        self.http_checks.poll(now)
        return (self.http_checks.check(now),)

    @property
    def run_state(self) -> str:
        """The rollout's state, as the SIGHUP reload reports it."""
        return str(self.rollout.state.state)

    def reconfigure(self, settings: RolloutSettings) -> None:
        """Take new settings (SIGHUP); see :meth:`Rollout.reconfigure`."""
        self.rollout.reconfigure(settings)

    # -- the report's series -------------------------------------------------------------

    def start_series(self, now: float) -> None:
        """A new run began (even one rolled back at its first step): a new series."""
        try:
            self.series.start_run(now)
        except StateError as exc:
            log.warning("rollout %s: cannot start the time series: %s", self.rollout.name, exc)
        self.series_second = int(now)
        self.series_until = now + SERIES_AFTER_RUN

    def record_series(self, now: float) -> None:
        """One point per whole second per group for the report, while a run is active and a little after."""
        st = self.rollout.state
        if st.state in ACTIVE_STATES:
            self.series_until = now + SERIES_AFTER_RUN
        elif self.series_until is None:
            return
        second = int(now)
        last = second - 1 if self.series_second is None else self.series_second
        # Seconds a stalled loop missed are filled in (a few at most): windows keep them.
        for stamp in range(max(last + 1, second - SERIES_CATCH_UP), second + 1):
            # The whole second before `stamp` (the current one is still filling up).
            canary, stable = self.traffic.traffic.groups(1.0, stamp - 0.5)
            self.series.record(stamp, canary=canary.summary(), stable=stable.summary(),
                               canary_percent=st.canary_percent, state=st.state)
        self.series_second = second
        if st.state not in ACTIVE_STATES and now >= self.series_until:
            self.series_until = None
            self.flush_series()

    def flush_series(self) -> None:
        """Make the series durable; a failure is logged (the report loses its last points, nothing else)."""
        try:
            self.series.flush()
        except StateError as exc:
            log.warning("rollout %s: cannot save the time series: %s", self.rollout.name, exc)

    def close(self) -> None:
        """Stop everything the runtime runs beside the loop (integrations, watcher, log tailer)."""
        self.close_integrations()
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        self.traffic.traffic.close()

    def close_integrations(self) -> None:
        if self.webhooks is not None:
            if self.webhooks.listener in self.rollout.listeners:
                self.rollout.listeners.remove(self.webhooks.listener)
            self.webhooks.close(2.0)
            self.webhooks = None
        for poller in (self.gates, self.http_checks):
            if poller is not None:
                poller.close()
        self.gates = self.http_checks = None
