"""One host's part in the fleet's rollout: bring its own nginx to the plan, report it, publish its figures.

The agent changes nginx only through the rollout's :class:`SplitApplier` (the
config engine's transaction: validation, ``nginx -t``, reload, proof of
reload, byte-identical restore on failure), and restores only its own
snapshot, taken when it joined the run. What it did is kept in a small JSON
file in the state dir (written atomically before it is reported), so a
daemon restarted mid-run knows its snapshot and the step it applied.

Cut off from etcd, the agent still judges its own traffic: a canary that
fails on this host is rolled back here at once (the safe direction is always
allowed) and reported when etcd answers again; no step is ever taken on a
plan read before the cut.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Callable, Optional

from nginx_canary.config.model import RolloutSettings
from nginx_canary.domain import State
from nginx_canary.errors import CanaryError, StateError
from nginx_canary.fleet.plan import (APPLIED, FAILED, PROMOTED, REPORT_STATUSES, RESTORE_FAILED, RESTORED, RESTORING,
                                     HostFigures, HostReport, Plan)
from nginx_canary.fsutil import atomic_write
from nginx_canary.rollout.ports import SplitApplier, TrafficSource
from nginx_canary.rollout.verdict import FAIL, Verdict

log = logging.getLogger(__name__)

Judge = Callable[..., Verdict]


@dataclass
class LocalRun:
    """What this host did in the fleet's run ``run``: its snapshot, the plan ``seq`` it acted on, and how."""

    run: str
    snapshot: str
    seq: int = 0
    status: str = ""
    percent: Optional[str] = None
    since: Optional[float] = None
    detail: str = ""
    at: float = 0.0
    reported: bool = False


class HostAgent:
    """Converges one rollout on this host to the fleet's plan."""

    def __init__(self, host: str, settings: RolloutSettings, applier: SplitApplier, traffic: TrafficSource,
                 state_path: str, judge: Judge) -> None:
        """``state_path``: this rollout's fleet file in the state dir. Raises StateError when it is unreadable."""
        self.host = host
        self.settings = settings
        self.applier = applier
        self.traffic = traffic
        self.state_path = state_path
        self.judge = judge
        self.local: Optional[LocalRun] = self._load()

    # -- following the plan ---------------------------------------------------------------------------

    def converge(self, plan: Optional[Plan], now: float) -> Optional[HostReport]:
        """Act on ``plan`` (None: the fleet never ran this rollout); the report to publish, if any is new.

        Raises StateError when the agent's file cannot be written (nginx is then as the report would say,
        but nothing is reported: the caller stops taking part rather than report what it cannot remember).
        """
        if plan is None:
            return None
        local = self.local
        if local is None or local.run != plan.run:
            if plan.state not in (State.PROGRESSING, State.PAUSED):
                return None  # a run this host never took part in, already over: nothing of ours to undo
            # An earlier run this host did not see end (it was away) is left as it is: the new run's steps
            # rewrite the weights anyway, and its snapshot (taken now) is what a rollback restores.
            try:
                snapshot = self.applier.begin(self.settings.name)
            except CanaryError as exc:
                return self._settle(LocalRun(plan.run, ""), FAILED, None, now, f"cannot snapshot: {exc}",
                                    seq=plan.seq)
            local = LocalRun(plan.run, snapshot)
            self.local = local
            self._save()
        if local.seq == plan.seq:
            return self._unreported()
        if plan.state in RESTORING or (plan.state == State.PROMOTED and self.settings.on_success == "restore"):
            return self._restore(local, now, plan.seq, plan.reason)
        if local.status == RESTORED:
            # Rolled back on our own while cut off: stay restored; the coordinator rolls the fleet back.
            return self._settle(local, RESTORED, None, now, local.detail, seq=plan.seq)
        target = plan.percent
        if local.percent is None or Fraction(local.percent) != target:
            try:
                self.applier.apply(target)
            except CanaryError as exc:
                # The transaction left the files as they were: this host still serves its previous split.
                return self._settle(local, FAILED, local.percent, now, str(exc), seq=plan.seq)
        if plan.state == State.PROMOTED:
            return self._settle(local, PROMOTED, str(target), now, plan.reason, seq=plan.seq)
        self.traffic.begin_step(now)
        local.since = now
        return self._settle(local, APPLIED, str(target), now, "", seq=plan.seq)

    def unsettled(self) -> Optional[LocalRun]:
        """The run this host applied a step of and never saw end (its split is still the run's), or None."""
        local = self.local
        return local if local is not None and local.status in (APPLIED, FAILED) and local.snapshot else None

    def figures(self, now: float) -> Optional[HostFigures]:
        """This host's figures for the step it applied, or None when it has not applied one of a live run."""
        local = self.local
        if local is None or local.status != APPLIED or local.since is None:
            return None
        canary, stable = self.traffic.evidence(now)
        return HostFigures(self.host, local.run, local.seq, local.since, now, canary, stable)

    def judge_alone(self, now: float) -> Optional[HostReport]:
        """Cut off from etcd: roll this host back on its own if its canary fails here. The report, if it did."""
        local = self.local
        figures = self.figures(now)
        if local is None or figures is None:
            return None
        verdict = self.judge(figures.canary, figures.stable, self.settings.analysis, now, now - figures.since)
        if verdict.verdict != FAIL:
            return None
        log.warning("rollout %s: etcd unreachable and the canary fails on this host: restoring it here (%s)",
                    self.settings.name, verdict.reason)
        return self._restore(local, now, local.seq, f"rolled back alone while cut off from etcd: {verdict.reason}")

    # -- inside -------------------------------------------------------------------------------------------

    def _restore(self, local: LocalRun, now: float, seq: int, reason: str) -> HostReport:
        if local.status == RESTORED:
            return self._settle(local, RESTORED, local.percent, now, local.detail, seq=seq)
        if not local.snapshot:
            # The snapshot could not be taken, so nothing was applied here: nginx is as it was.
            return self._settle(local, RESTORED, None, now, reason, seq=seq)
        try:
            self.applier.restore(local.snapshot)
        except CanaryError as exc:
            return self._settle(local, RESTORE_FAILED, local.percent, now, f"restore failed: {exc}", seq=seq)
        return self._settle(local, RESTORED, None, now, reason, seq=seq)

    def _settle(self, local: LocalRun, status: str, percent: Optional[str], now: float, detail: str, *,
                seq: Optional[int] = None) -> HostReport:
        local.seq = local.seq if seq is None else seq
        local.status, local.percent, local.detail, local.at, local.reported = status, percent, detail, now, False
        if status != APPLIED:
            local.since = None
        self.local = local
        self._save()
        return HostReport(self.host, local.run, local.seq, status, percent or "", now, detail)

    def _unreported(self) -> Optional[HostReport]:
        local = self.local
        if local is None or local.reported or not local.status:
            return None
        return HostReport(self.host, local.run, local.seq, local.status, local.percent or "", local.at, local.detail)

    def reported(self, report: HostReport) -> None:
        """``report`` reached etcd: it need not be sent again."""
        local = self.local
        if local is not None and local.run == report.run and local.seq == report.seq:
            local.reported = True

    def _load(self) -> Optional[LocalRun]:
        try:
            with open(self.state_path, "rb") as fh:
                data = json.loads(fh.read().decode("utf-8"))
            local = _checked(LocalRun(**data))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, ZeroDivisionError) as exc:
            raise StateError(f"fleet state {self.state_path}: unreadable ({exc})") from None
        local.reported = False  # say it again after a restart: etcd may have lost it with our lease
        return local

    def _save(self) -> None:
        if self.local is None:
            return
        try:
            atomic_write(self.state_path, json.dumps(asdict(self.local), sort_keys=True).encode("utf-8"),
                         mode=0o600)
        except OSError as exc:
            raise StateError(f"fleet state {self.state_path}: cannot write ({exc})") from None


def _checked(local: LocalRun) -> LocalRun:
    """``local`` as read from its file. Raises ValueError naming the first field of the wrong type or value."""
    number = (int, float)
    for name, kind in (("run", str), ("snapshot", str), ("seq", int), ("status", str), ("percent", (str, type(None))),
                       ("since", (*number, type(None))), ("detail", str), ("at", number), ("reported", bool)):
        value = getattr(local, name)
        if not isinstance(value, kind) or (name != "reported" and isinstance(value, bool)):
            raise ValueError(f"{name}: {value!r}")
    if local.status not in ("",) + REPORT_STATUSES:
        raise ValueError(f"status: {local.status!r}")
    if local.percent is not None:
        Fraction(local.percent)  # raises ValueError for text that is no percent
    return local


def state_file(state_dir: str, rollout: str) -> str:
    return os.path.join(state_dir, f"fleet-{rollout}.json")
