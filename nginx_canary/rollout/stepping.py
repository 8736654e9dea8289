"""Applying one step of a rollout, and what follows when nginx or the files refuse it.

A step change saves its intent first (``step_started_at`` None, the
hashes the change will leave in ``expected_files``), applies through the
config engine's transaction, then saves the step as done; a crash between
the two is settled by recovery.py from those hashes.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Callable, Dict

from nginx_canary.domain import ACTIVE_STATES, State
from nginx_canary.errors import BusyError, CanaryError
from nginx_canary.rollout.restore import Restorer
from nginx_canary.rollout.run import Run
from nginx_canary.rollout.step_checks import StepChangeChecks
from nginx_canary.rollout.store import RolloutState


class StepMover:
    """Moves one rollout to a step of its run."""

    def __init__(self, run: Run, restorer: Restorer, checks: StepChangeChecks,
                 on_begin: Callable[[float], None]) -> None:
        """``on_begin(at)`` is told when a step change begins: the new step's evidence starts then.

        (The groups are told apart by server, not by weight, so the requests
        served while nginx reloads count for the step being applied; checks
        judged during a slow change see them.)
        """
        self.run = run
        self.restorer = restorer
        self.checks = checks
        self.on_begin = on_begin

    def move(self, now: float, index: int, *, manual: bool, revert_to: RolloutState) -> bool:
        """Apply step ``index`` (intent, apply, done). True when it is applied.

        On failure: BusyError -> back to ``revert_to``; the first step of a
        run -> roll back to the snapshot; a later one -> back to ``revert_to``
        (the step before, which nginx still serves), paused unless ``manual``.
        ``manual`` re-raises the CanaryError afterwards.
        """
        run = self.run
        st = run.state
        percent = Fraction(st.steps[index])
        label = run.label(index)
        from_percent = st.canary_percent
        # What the files hold until the change is done; a failed apply leaves them so.
        files_before = dict(st.expected_files)
        try:
            planned = run.applier.plan(percent)
        except CanaryError as exc:
            return self._failed(now, label, exc, manual, revert_to, files_before)
        st.state = State.PROGRESSING
        st.gate = None
        st.step_index = index
        st.canary_percent = st.steps[index]
        st.expected_files = dict(planned)
        st.step_started_at = None
        st.paused_reason = None
        st.message = f"applying {label}"
        run.save(now)
        self.checks.begin_change()
        self.on_begin(now)
        try:
            applied = run.applier.apply(percent)
        except CanaryError as exc:
            return self._failed(now, label, exc, manual, revert_to, files_before)
        finished = run.journal.finished_at(now)
        st.expected_files = dict(applied)
        st.step_started_at = self.checks.bake_start(now)
        st.message = f"at {label}"
        run.save(now)
        run.record("step", finished, from_percent=from_percent, to_percent=st.canary_percent,
                   manual=manual, files=sorted(applied))
        return True

    def complete(self, now: float, reason: str, *, manual: bool) -> None:
        """End the run promoted: keep the canary's share (``on_success: keep``) or restore the snapshot.

        Raises the restore's CanaryError when ``manual`` (the state then says what followed).
        """
        run = self.run
        if run.settings.on_success == "restore":
            error = self.restorer.restore(now, State.PROMOTED, f"{reason} (on_success: restore)", "promoted")
            if error is not None and manual:
                raise error
            return
        st = run.state
        st.state = State.PROMOTED
        st.snapshot_id = None  # the 100 % files are the new baseline: no restore owed
        st.paused_reason = None
        st.message = f"promoted: {reason}; the canary keeps {st.canary_percent} % (on_success: keep)"
        run.save(now)
        run.record("promoted", now, reason=reason, manual=manual)

    def _failed(self, now: float, label: str, exc: CanaryError, manual: bool, revert_to: RolloutState,
                files_before: Dict[str, str]) -> bool:
        run = self.run
        self.checks.carry_over(run.state, revert_to)
        if isinstance(exc, BusyError):
            run.state = revert_to
            run.state.message = (f"could not apply {label}: {exc}" +
                                 ("" if manual else "; trying again at the next check"))
            run.save(now)
            run.record("busy", now, level=logging.WARNING, target=label, error=str(exc))
        elif revert_to.state not in ACTIVE_STATES or (revert_to.step_started_at is None and revert_to.step_index == 0):
            # The first step of a start (or its redo at recovery): nothing of ours is on the files; the run ends.
            run.state.expected_files = files_before
            run.record("apply_failed", now, level=logging.ERROR, target=label, error=str(exc))
            self.restorer.restore(now, State.ROLLED_BACK, f"could not apply {label}: {exc}", "rollback")
        else:
            # The applier put the files back: nginx still serves the step that passed its checks.
            # Rolling back would meet the same nginx -t, disk or reload trouble; an operator decides.
            in_flight = revert_to.step_started_at is None  # a step change redone at recovery
            run.state = revert_to
            st = run.state
            if in_flight:
                # It describes the failed change; the files (and nginx) hold the step before it.
                st.step_index -= 1
                st.canary_percent = st.steps[st.step_index]
                try:
                    st.expected_files = run.applier.files_now()
                except CanaryError:
                    st.expected_files = files_before
            run.record("apply_failed", now, level=logging.ERROR, target=label, error=str(exc))
            if manual:
                st.message = f"could not apply {label}: {exc}; nothing changed"
                run.save(now)
            else:
                run.pause(now, f"could not apply {label}: {exc}; the canary keeps "
                               f"{st.canary_percent} %; resume tries again, abort restores the snapshot", "pause")
        if manual:
            raise exc
        return False
