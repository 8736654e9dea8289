"""Checks judged while a step change is under way: the one home of what they mean.

A step change (plan, write, ``nginx -t``, reload, verify) or a restore runs
on the daemon's worker thread and takes from a few hundred milliseconds to
seconds. Meanwhile the daemon's loop keeps judging the checks that fall due
(:meth:`Rollout.observe`), so that a canary failing during the change is
seen with the usual cadence. Such a check:

1. counts like any other: in the failure streak, the status and the history;
2. if it fails, restarts the bake time of the step: at once between
   changes, or, for a step being applied, from the later of the failure and
   the change's end (:meth:`StepChangeChecks.failed` / :meth:`bake_start`);
3. if the step change fails and the rollout falls back to the state before
   it, the streak and last verdict it counted go with it (:meth:`carry_over`);
4. is acted on by the loop's next turn (:meth:`take`): when no fresh check
   is due then, the last observed verdict is acted on at once, not a whole
   interval later; when one is due, the fresh check is run instead, unless
   the observed streak already calls for a rollback (a fresh check that
   happens to pass must not undo it).
"""

from __future__ import annotations

from typing import Optional

from nginx_canary.domain import ACTIVE_STATES
from nginx_canary.rollout.verdict import Verdict
from nginx_canary.rollout.store import RolloutState


class StepChangeChecks:
    """One rollout's checks judged during step changes, and the bake-time restart they owe."""

    def __init__(self) -> None:
        #: The last verdict judged during a change, for the loop's next turn to act on.
        self.pending: Optional[Verdict] = None
        self._failed_at: Optional[float] = None  # when a check failed during the step change under way

    def observed(self, verdict: Verdict) -> None:
        """A verdict judged (and counted) by :meth:`Rollout.observe`, to be acted on by the next turn."""
        self.pending = verdict

    def failed(self, state: RolloutState, now: float) -> None:
        """A check failed at ``now``: the step's bake time starts again (after a change under way, if any)."""
        if state.step_started_at is None:
            self._failed_at = now
        else:
            state.step_started_at = now

    def begin_change(self) -> None:
        """A step change starts: only failures from now on restart the bake time of the step it applies."""
        self._failed_at = None

    def bake_start(self, now: float) -> float:
        """When the bake time of a step whose change ended at ``now`` starts."""
        failed_at, self._failed_at = self._failed_at, None
        return now if failed_at is None else max(now, failed_at)

    @staticmethod
    def carry_over(during: RolloutState, revert_to: RolloutState) -> None:
        """What a failed change's checks counted goes into the state the rollout falls back to, if still active."""
        if revert_to.state in ACTIVE_STATES:
            revert_to.failure_streak = during.failure_streak
            revert_to.last_verdict = during.last_verdict

    def take(self, due: bool, rollback_called: bool) -> Optional[Verdict]:
        """The observed verdict the loop's turn acts on (None: judge afresh if ``due``, or nothing). Clears it."""
        pending, self.pending = self.pending, None
        if pending is not None and (not due or rollback_called):
            return pending
        return None
