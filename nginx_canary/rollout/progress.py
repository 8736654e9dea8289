"""What a step's verdict moves: to the next step (or promotion) once it passed, or a pause when it never decides."""

from __future__ import annotations

from typing import Optional

from nginx_canary.rollout.gating import Gating
from nginx_canary.rollout.judging import Judging
from nginx_canary.rollout.ports import GateSource
from nginx_canary.rollout.run import Run, copy_state
from nginx_canary.rollout.stepping import StepMover
from nginx_canary.rollout.verdict import Verdict


class Progress:
    """Moves one rollout on from a step whose bake time is over."""

    def __init__(self, run: Run, mover: StepMover, gating: Gating, judging: Judging) -> None:
        self.run = run
        self.mover = mover
        self.gating = gating
        self.judging = judging

    def advance(self, now: float, verdict: Verdict, gates: Optional[GateSource]) -> None:
        """The step passed: the next step, or the promotion, unless drift or a gate holds it.

        Raises StateError when the state cannot be saved.
        """
        run = self.run
        st = run.state
        if run.paused_for_drift(now, "before the next step", "drift"):
            return
        last = st.step_index + 1 >= len(st.steps)
        if self.gating.waiting("confirm_promotion" if last else "confirm_step", now, gates) is not None:
            return
        if not last:
            self.mover.move(now, st.step_index + 1, manual=False, revert_to=copy_state(st))
        else:
            self.mover.complete(now, f"{run.label()} passed its bake time of {run.step_interval:g} s: "
                                f"{verdict.reason}", manual=False)

    def give_up_waiting(self, now: float, verdict: Verdict) -> None:
        """Pause a step that has waited ``max_step_wait`` for a decision the evidence does not give."""
        wait = self.run.settings.analysis.max_step_wait
        since = self.judging.since
        if wait is None or since is None or now - since < wait:
            return
        self.run.pause(now, f"no decision after max_step_wait ({wait:g} s): {verdict.reason}; resume waits "
                            "again, promote goes on, abort restores the snapshot", "pause")
