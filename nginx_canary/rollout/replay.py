"""``nginx-canary replay``: a rollout's analysis over a recorded access log, as if it were live.

The real :class:`~nginx_canary.rollout.machine.Rollout` runs, with its state in
a temporary directory (deleted afterwards), on a simulated clock driven by the
log's own timestamps: the run starts at the first request, and every
``analysis.interval`` of log time the lines stamped up to then are fed and
the rollout's checks are judged (``tick``), until it is rolled back or
promoted, or the log ends. Steps are "applied" at the simulated times by a
:class:`~nginx_canary.rollout.replay_inputs.SimulatedApplier`: a recorded log
cannot show what a weight change would have done, so the canary's share of
the replayed traffic is whatever it was when the log was written.

What the replay cannot see: gates (treated as open) and HTTP checks (not
run); each is said in :attr:`ReplayResult.warnings`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from nginx_canary.config.model import RolloutSettings
from nginx_canary.domain import FINAL_STATES
from nginx_canary.errors import BadInputError
from nginx_canary.logs.analyze import AddressBook
from nginx_canary.logs.format import FormatSpec, compile_format
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.rollout.machine import Rollout
from nginx_canary.rollout.replay_inputs import LogLines, ReplayTraffic, SimulatedApplier
from nginx_canary.rollout.store import StateStore

#: The events that end a run: the decision the replay looks for.
DECISIONS = ("rollback", "promoted", "abort")


@dataclass(frozen=True)
class ReplayEvent:
    """One history record of the replayed run, at ``time`` (log time; ``offset`` seconds after the first request)."""

    time: float
    offset: float
    event: str
    state: str
    step: int  # 1-based
    steps: int
    canary_percent: str
    verdict: Optional[str]
    reason: str

    def to_dict(self) -> Dict[str, Any]:
        return {"offset": round(self.offset, 3), "time": self.time, "event": self.event, "state": self.state,
                "step": self.step, "steps": self.steps, "canary_percent": self.canary_percent,
                "verdict": self.verdict, "reason": self.reason}

    def line(self) -> str:
        """One line of the text timeline."""
        verdict = f" {self.verdict}" if self.verdict else ""
        return (f"+{self.offset:9.3f}s  {self.state:<12} step {self.step}/{self.steps} ({self.canary_percent} %)  "
                f"{self.event}{verdict}: {self.reason}")


@dataclass
class ReplayResult:
    """Where the replayed run ended. ``decided_at`` is the offset of the rollback or promotion (None: undecided).

    ``lines``: the lines replayed (up to the decision); ``unstamped``: lines
    read that did not fit the format or held no usable time (skipped).
    """

    state: str
    step: int
    steps: int
    canary_percent: str
    decision: Optional[str]
    decided_at: Optional[float]
    log_start: float
    log_end: float
    lines: int
    unstamped: int
    events: List[ReplayEvent] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """The ``--json`` summary line."""
        return {"summary": True, "state": self.state, "step": self.step, "steps": self.steps,
                "canary_percent": self.canary_percent, "decision": self.decision,
                "decided_at": None if self.decided_at is None else round(self.decided_at, 3),
                "log_start": self.log_start, "log_seconds": round(self.log_end - self.log_start, 3),
                "lines": self.lines, "unstamped": self.unstamped}

    def line(self) -> str:
        """The text summary."""
        if self.decided_at is None:
            how = f"undecided when the log ended ({self.log_end - self.log_start:.3f} s)"
        else:
            how = f"{self.decision} at +{self.decided_at:.3f}s"
        return (f"replay: {self.state} at step {self.step}/{self.steps}, canary {self.canary_percent} %, {how}; "
                f"{self.lines} lines replayed, {self.unstamped} skipped without a usable time")


def replay_warnings(rollout: RolloutSettings) -> List[str]:
    """What of ``rollout``'s settings the replay cannot play."""
    found = []
    gates = [name for name in ("pre_rollout", "confirm_step", "confirm_promotion")
             if getattr(rollout.gates, name) is not None]
    if gates:
        found.append(f"gates {', '.join(gates)} are not replayed: treated as open")
    if rollout.analysis.http_checks:
        found.append("http_checks are not replayed: the verdicts come from the log alone")
    return found


def replay(rollout: RolloutSettings, config: Optional[NginxConfig], spec: FormatSpec, paths: Sequence[str], *,
           speed: Optional[float] = None, emit: Callable[[ReplayEvent], None] = lambda event: None,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> ReplayResult:
    """Replay ``rollout`` over the logs at ``paths`` (in format ``spec``); call ``emit`` with each event as it happens.

    ``speed`` None plays as fast as it can; N plays N times real time
    (``sleep`` / ``clock`` pace it). Nothing is written but a temporary
    directory, removed before returning.

    Raises:
        BadInputError: a file cannot be read, the format has no time or lacks
            what the analysis needs, ``speed`` is not positive, or no line of
            the logs holds a request with a time.
    """
    if speed is not None and not (speed > 0 and math.isfinite(speed)):
        raise BadInputError(f"--speed must be a positive number, not {speed!r}")
    compiled = compile_format(spec)
    lines = LogLines(paths, compiled)
    book = AddressBook.from_config(config, upstream=rollout.upstream, canary=rollout.canary)
    traffic = ReplayTraffic(compiled, book, rollout.upstream, iter(lines))
    first = traffic.first_stamp
    if first is None:
        raise BadInputError(f"no request with a usable time in {', '.join(paths)} ({lines.lines} lines, log format "
                            f"{spec.name!r})")
    events: List[ReplayEvent] = []

    def listener(event: str, record: Dict[str, Any]) -> None:
        found = _event(record, event, first, len(machine.state.steps))
        events.append(found)
        emit(found)

    with tempfile.TemporaryDirectory(prefix="nginx-canary-replay-") as state_dir, _machine_log_quiet():
        machine = Rollout(rollout, StateStore(state_dir), SimulatedApplier(rollout.upstream), traffic)
        machine.listeners.append(listener)
        begun = clock()
        now = first
        traffic.advance(now)
        machine.start(now)
        while machine.state.state not in FINAL_STATES:
            if traffic.exhausted and now >= (traffic.last_stamp or now):
                break
            now += rollout.analysis.interval
            if speed is not None:
                sleep(max(0.0, begun + (now - first) / speed - clock()))
            traffic.advance(now)
            machine.tick(now)
        st = machine.state
        decided = next((e for e in reversed(events) if e.event in DECISIONS), None)
        return ReplayResult(
            state=str(st.state), step=st.step_index + 1, steps=len(st.steps), canary_percent=st.canary_percent,
            decision=None if decided is None else decided.event,
            decided_at=None if decided is None else decided.offset, log_start=first,
            log_end=traffic.last_stamp or first, lines=traffic.fed, unstamped=lines.unstamped, events=events,
            warnings=replay_warnings(rollout) + traffic.analyzer.warnings)


@contextlib.contextmanager
def _machine_log_quiet() -> Iterator[None]:
    """The replayed run's log lines would repeat its events (and are not the daemon's): silenced meanwhile."""
    logger = logging.getLogger("nginx_canary.rollout.machine")
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def _event(record: Dict[str, Any], event: str, first: float, steps: int) -> ReplayEvent:
    detail = record.get("detail") or {}
    verdict = detail.get("verdict")
    if event == "check" and isinstance(verdict, dict):
        reason, verdict_name = str(verdict.get("reason", "")), str(verdict.get("verdict"))
    else:
        reason = str(detail.get("reason") or detail.get("error") or detail.get("message") or "")
        verdict_name = None
    at = float(record["time"])
    return ReplayEvent(time=at, offset=at - first, event=event, state=str(record.get("state")),
                       step=int(record.get("step") or 0) + 1, steps=steps,
                       canary_percent=str(record.get("canary_percent")), verdict=verdict_name, reason=reason)
