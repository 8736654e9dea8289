"""The control socket's commands, run on the daemon's loop: ``status``, ``start``, ``pause``, ``resume``,
``promote``, ``abort``, ``history``, ``report``, ``ping``.

Each handler takes the request's ``args`` (JSON from the client: nothing in
them is trusted) and returns plain JSON data. They read and act on the
daemon only through :class:`CommandHost`, so tests run them in-process on
rollouts built from fakes.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Tuple

from nginx_canary.daemon.fleet_link import fleet_command, fleet_status
from nginx_canary.daemon.runtime import RolloutRuntime
from nginx_canary.domain import check_step_interval, validate_name
from nginx_canary.errors import BadInputError, UnknownRolloutError
from nginx_canary.fleet.node import FleetNode
from nginx_canary.inputs import parse_percent
from nginx_canary.logs.sketch import LatencySketch
from nginx_canary.report.run import last_run
from nginx_canary.rollout.machine import Rollout
from nginx_canary.rollout.store import StateStore


class CommandHost(Protocol):
    """What the commands see of the daemon."""

    runtimes: Mapping[str, RolloutRuntime]
    store: StateStore
    config_path: str
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    started_at: Optional[float]
    check_lateness: LatencySketch
    fleet: Optional[FleetNode]

    def metrics_url(self) -> Optional[str]: ...


class CommandHandlers:
    """Runs one command at a time on the loop's thread (see :meth:`execute`)."""

    def __init__(self, host: CommandHost) -> None:
        self.host = host
        self._handlers: Dict[str, Callable[[Dict[str, Any]], Any]] = {
            "status": self.status, "start": self.start, "pause": self.pause, "resume": self.resume,
            "promote": self.promote, "abort": self.abort, "history": self.history, "report": self.report,
            "ping": self.ping,
        }

    def execute(self, command: str, args: Dict[str, Any]) -> Any:
        """Run one control command and return its JSON result.

        Raises BadInputError (unknown command or arguments), UnknownRolloutError,
        or the CanaryError of the rollout command.
        """
        handler = self._handlers.get(command)
        if handler is None:
            raise BadInputError(f"unknown command {command!r}")
        return handler(args)

    def _runtime(self, args: Dict[str, Any]) -> Tuple[str, RolloutRuntime]:
        name = validate_name(args.get("name"))
        runtime = self.host.runtimes.get(name)
        if runtime is None:
            known = ", ".join(self.host.runtimes) or "none"
            raise UnknownRolloutError(f"no rollout named {name!r} in {self.host.config_path} (configured: {known})")
        return name, runtime

    def _status_of(self, runtime: RolloutRuntime, now: float) -> Dict[str, Any]:
        status = runtime.rollout.status(now)
        status["access_log"] = runtime.traffic.traffic.reading()
        since = runtime.rollout.judging.since
        # The span the figures cover: every request since the step took effect.
        status["window_seconds"] = max(0.0, now - since) if since is not None else None
        status["canary_servers"] = list(runtime.rollout.settings.canary)
        if self.host.fleet is not None:
            return fleet_status(self.host.fleet, runtime.rollout.name, status)
        return status

    def status(self, args: Dict[str, Any]) -> Dict[str, Any]:
        host = self.host
        now = host.clock()
        if args.get("name") is not None:
            _, runtime = self._runtime(args)
            rollouts = [self._status_of(runtime, now)]
        else:
            rollouts = [self._status_of(r, now) for r in host.runtimes.values()]
        lateness = host.check_lateness
        late = {"checks": lateness.count, "p50": lateness.quantile(0.5), "p99": lateness.quantile(0.99),
                "max": lateness.max}
        return {"daemon": {"pid": os.getpid(), "started_at": host.started_at, "config": host.config_path,
                           "now": now, "metrics": host.metrics_url(), "check_lateness_seconds": late},
                "rollouts": rollouts}

    def start(self, args: Dict[str, Any]) -> Dict[str, Any]:
        _, runtime = self._runtime(args)
        steps = args.get("steps")
        parsed: Optional[List[Fraction]] = None
        if steps is not None:
            if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
                raise BadInputError("steps must be a list of percents")
            parsed = [parse_percent(s) for s in steps]
        interval = args.get("step_interval")
        if interval is not None:
            interval = check_step_interval(interval)
        now = self.host.clock()
        if self.host.fleet is not None:
            fleet_command(self.host.fleet, "start", runtime.rollout.name, now, args, parsed)
            return self._status_of(runtime, now)
        try:
            runtime.rollout.start(now, steps=parsed, step_interval=interval)
            # Only this run's lines count (a first step waiting at a gate has not begun one yet).
            runtime.traffic.restart_unparsed()
        finally:
            runtime.next_check = self.host.monotonic() + runtime.rollout.settings.analysis.interval
            if runtime.rollout.state.started_at == now:
                runtime.start_series(now)
        return self._status_of(runtime, now)

    def pause(self, args: Dict[str, Any]) -> Dict[str, Any]:
        reason = args.get("reason")
        return self._act("pause", args, lambda rollout, now: rollout.pause(
            now, reason if isinstance(reason, str) and reason else None))

    def resume(self, args: Dict[str, Any]) -> Dict[str, Any]:
        _, runtime = self._runtime(args)

        def act(rollout: Rollout, now: float) -> None:
            rollout.resume(now)
            # The lines read while paused (the misfits that paused it, until the format was fixed) must not pause
            # the resumed rollout again.
            runtime.traffic.restart_unparsed()
        return self._act("resume", args, act)

    def promote(self, args: Dict[str, Any]) -> Dict[str, Any]:
        return self._act("promote", args, lambda rollout, now: rollout.promote(now, full=bool(args.get("full"))))

    def abort(self, args: Dict[str, Any]) -> Dict[str, Any]:
        return self._act("abort", args, lambda rollout, now: rollout.abort(now))

    def _act(self, verb: str, args: Dict[str, Any], action: Callable[[Rollout, float], None]) -> Dict[str, Any]:
        """Run ``action`` on the named rollout now (in a fleet: ``verb`` on the fleet's); its status after.

        Raises what the lookup or action raises.
        """
        _, runtime = self._runtime(args)
        now = self.host.clock()
        if self.host.fleet is not None:
            fleet_command(self.host.fleet, verb, runtime.rollout.name, now, args, None)
        else:
            action(runtime.rollout, now)
        return self._status_of(runtime, now)

    def history(self, args: Dict[str, Any]) -> Dict[str, Any]:
        limit = args.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise BadInputError(f"limit must be a positive number, not {limit!r}")
        names = [self._runtime(args)[0]] if args.get("name") is not None else list(self.host.runtimes)
        records: List[Dict[str, Any]] = []
        for name in names:
            for record in self.host.store.history(name, limit):
                records.append({"rollout": name, **record})
        records.sort(key=lambda r: (r.get("time") or 0.0))
        if limit is not None:
            records = records[-limit:]
        return {"records": records}

    def report(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """The last run's history and time series, for ``nginx-canary report``."""
        name, runtime = self._runtime(args)
        return {"history": last_run(self.host.store.history(name)), "points": runtime.series.points()}

    def ping(self, args: Dict[str, Any]) -> Dict[str, Any]:
        return {"pid": os.getpid(), "started_at": self.host.started_at, "metrics": self.host.metrics_url()}


def for_rollout(args: Dict[str, Any]) -> str:
    """`` for rollout NAME`` when the command's arguments name one (shortened: it comes from the client)."""
    name = args.get("name") if isinstance(args, dict) else None
    return f" for rollout {str(name)[:80]!r}" if name is not None else ""
