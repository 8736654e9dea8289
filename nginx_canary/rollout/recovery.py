"""Reconciling a rollout's saved state with its files after the daemon starts (docs/ROLLOUT-DESIGN.md, "Crash safety").

A crash can leave a step change in flight (``step_started_at`` None), a
restore owed (a terminal state holding a ``snapshot_id``), or files edited
while the daemon was down; each is recognised from the typed state and the
files' hashes, and finished, redone or paused, never guessed at.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Dict, Optional

from nginx_canary.domain import ACTIVE_STATES, TERMINAL_STATES, State
from nginx_canary.errors import CanaryError
from nginx_canary.rollout.restore import Restorer
from nginx_canary.rollout.run import Run, changed_files, copy_state
from nginx_canary.rollout.stepping import StepMover


class Recovery:
    """After-start reconciliation of one rollout; also settles a step change a BusyError left in flight."""

    def __init__(self, run: Run, mover: StepMover, restorer: Restorer) -> None:
        self.run = run
        self.mover = mover
        self.restorer = restorer

    def recover(self, now: float) -> Optional[str]:
        """Reconcile once, after the transaction journal's recovery.

        Returns a one-line account of what was done, or None when there was
        nothing to do. Raises StateError when the state cannot be saved.
        """
        run = self.run
        st = run.state
        if st.state in ACTIVE_STATES:
            before = st.to_dict()
            if st.snapshot_id is None:
                self.restorer.failed(now, f"{st.state} at {run.label()}", None, CanaryError(
                    "the saved state records no snapshot for this run"))
            elif st.state == State.PROGRESSING and st.step_started_at is None:
                self.settle_step_change(now)
            elif not run.paused_for_drift(now, "after a restart", "recovered") and st.state == State.PROGRESSING:
                st.step_started_at = now
                st.message = f"at {run.label()}: resumed after a restart, bake time restarted"
                run.save(now)
                run.record("recovered", now, level=logging.WARNING, outcome="files as expected, step resumed")
            return None if st.to_dict() == before and run.state is st else run.state.message
        if st.state in TERMINAL_STATES and st.snapshot_id is not None:
            self.restorer.settle(now)
            return run.state.message
        return None

    def settle_step_change(self, now: float) -> None:
        """Finish a step change the saved state has in flight (``step_started_at`` None)."""
        run = self.run
        st = run.state
        try:
            files = run.applier.files_now()
        except CanaryError as exc:
            run.pause(now, f"cannot read the config files after a restart: {exc}", "recovered")
            return
        if files == st.expected_files:
            st.step_started_at = now
            st.message = f"at {run.label()}: applied before the restart, bake time restarted"
            run.save(now)
            run.record("recovered", now, level=logging.WARNING, outcome="step change had finished")
            return
        try:
            planned: Optional[Dict[str, str]] = run.applier.plan(Fraction(st.canary_percent))
        except CanaryError:
            planned = None
        if planned == st.expected_files:
            run.record("recovered", now, level=logging.WARNING,
                       outcome="step change had not happened, applying it again")
            self.mover.move(now, st.step_index, manual=False, revert_to=copy_state(st))
            return
        run.pause(now, run.drift_reason(files, changed_files(st.expected_files, files)), "recovered")
