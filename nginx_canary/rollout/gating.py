"""Gates a run waits at (``pre_rollout``, ``confirm_step``, ``confirm_promotion``): what the state and history say of them."""

from __future__ import annotations

from typing import Optional, Tuple

from nginx_canary.rollout.ports import GATE_OPEN, GateSource
from nginx_canary.rollout.run import Run


class Gating:
    """One rollout's gates: asked at each check, recorded only when their answer changes."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._last: Optional[Tuple[str, str, str]] = None  # (gate, state, reason) last recorded

    def forget(self) -> None:
        """A new run: its first answer is recorded whatever the last run's was."""
        self._last = None

    def waiting(self, name: str, now: float, gates: Optional[GateSource]) -> Optional[str]:
        """None when gate ``name`` lets the run on (open, or not configured); else its reason, recorded.

        The state shows the gate waited at; the history gets a ``gate`` record
        whenever the gate's state or reason changes, not at every check.
        Raises StateError when the state cannot be saved.
        """
        run = self.run
        st = run.state
        answer = gates(name, now) if gates is not None else None
        if answer is None or answer[0] == GATE_OPEN:
            if st.gate == name:
                st.gate = None
                if answer is not None:
                    run.record("gate", now, gate=name, gate_state=answer[0], reason=answer[1])
            return None
        gate_state, reason = answer
        changed = st.gate != name or self._last != (name, gate_state, reason)
        st.gate = name
        self._last = (name, gate_state, reason)
        if changed:
            st.message = f"{reason} (at {run.label()})" if name != "pre_rollout" else reason
            run.save(now)
            run.record("gate", now, gate=name, gate_state=gate_state, reason=reason)
        return reason
