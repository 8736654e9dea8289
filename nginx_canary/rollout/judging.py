"""Judging one check of a rollout: the step's evidence so far, the judge's verdict, counted and recorded."""

from __future__ import annotations

import logging
from typing import Optional, Tuple

from nginx_canary.errors import StateError
from nginx_canary.rollout.checks import Thresholds
from nginx_canary.rollout.judge import CHECK_NAMES, judge
from nginx_canary.rollout.ports import ExtraChecks, TrafficSource
from nginx_canary.rollout.run import Run
from nginx_canary.rollout.step_checks import StepChangeChecks
from nginx_canary.rollout.streak import next_failure_streak
from nginx_canary.rollout.verdict import FAIL, CheckResult, Verdict

log = logging.getLogger("nginx_canary.rollout.machine")


class Judging:
    """Runs one rollout's checks on every request since its step took effect (rollout/judge.py)."""

    def __init__(self, run: Run, traffic: TrafficSource, checks: StepChangeChecks) -> None:
        self.run = run
        self.traffic = traffic
        self.checks = checks
        #: When the evidence of the step under way began (None: not since this process started).
        self.since: Optional[float] = None
        self._final_look_done = False  # the step's one planned look, at the end of its bake time
        # What that look found failing stands for the rest of the step (it is not looked at again), so that a
        # failure_threshold above 1 sees it at every check.
        self._found_at_final_look: Tuple[CheckResult, ...] = ()

    def begin_step(self, at: float) -> None:
        """The weights of a step took effect (or the daemon started judging it) at ``at``: fresh evidence."""
        self.since = at
        self._final_look_done = False
        self._found_at_final_look = ()
        self.traffic.begin_step(at)

    def judge(self, now: float, extra_checks: Optional[ExtraChecks]) -> Verdict:
        """The verdict, counted in the failure streak and (see Journal.wants_check) recorded.

        A failed check restarts the step's bake time (step_checks.py). A save
        that fails is logged, never raised: bookkeeping must not stand
        between a failing canary and its rollback.
        """
        run = self.run
        st = run.state
        analysis = run.settings.analysis
        canary, stable = self.traffic.evidence(now)
        extra: Tuple[CheckResult, ...] = ()
        if extra_checks is not None:
            thresholds = Thresholds.from_settings(analysis)
            extra = tuple(check(canary, stable, thresholds) for check in extra_checks(now))
        elapsed = max(0.0, now - self.since) if self.since is not None else 0.0
        final_look = self.since is not None and not self._final_look_done and elapsed >= run.step_interval
        self._final_look_done = self._final_look_done or final_look
        verdict = judge(canary, stable, analysis, now, elapsed, extra + self._found_at_final_look,
                        final_look=final_look)
        if final_look:
            self._found_at_final_look = tuple(r for r in verdict.failed if r.name in CHECK_NAMES)
        st.last_verdict = verdict.to_dict()
        st.failure_streak = next_failure_streak(st.failure_streak, verdict.verdict)
        if verdict.verdict == FAIL:
            self.checks.failed(st, now)
        if run.journal.wants_check(verdict.verdict, now):
            try:
                run.save(now)
            except StateError as exc:
                log.error("rollout %s: cannot save the check: %s", run.name, exc)
            run.record("check", now, level=logging.WARNING if verdict.verdict == FAIL else logging.DEBUG,
                       verdict=verdict, failure_streak=st.failure_streak,
                       failure_threshold=analysis.failure_threshold)
        return verdict
