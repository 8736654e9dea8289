"""The wire form of one rollout's ``status``: plain JSON data for the control socket, the CLI and the demo."""

from __future__ import annotations

from typing import Any, Dict, Optional

from nginx_canary.domain import State, percent_number, percent_text
from nginx_canary.rollout.run import Run


def status_view(run: Run, now: Optional[float]) -> Dict[str, Any]:
    """``status`` at ``now`` (None: unknown, no time left is computed).

    ``step`` is the index into ``steps``; percents are numbers;
    ``time_left_in_step`` is the bake time left while progressing (0 when
    it is over and the rollout waits for a conclusive pass), else None.
    ``canary`` / ``stable`` are the group summaries of the last check.
    """
    st = run.state
    settings = run.settings
    steps = list(st.steps) if st.steps else [percent_text(s) for s in settings.steps]
    verdict = st.last_verdict
    time_left = None
    if st.state == State.PROGRESSING and st.step_started_at is not None and now is not None:
        time_left = max(0.0, run.step_interval - (now - st.step_started_at))
    return {
        "name": run.name,
        "upstream": settings.upstream,
        "state": st.state,
        "step": st.step_index,
        "steps": [percent_number(s) for s in steps],
        "canary_percent": percent_number(st.canary_percent),
        "started_at": st.started_at,
        "step_started_at": st.step_started_at,
        "step_interval": run.step_interval,
        "time_left_in_step": time_left,
        "failure_streak": st.failure_streak,
        "failure_threshold": settings.analysis.failure_threshold,
        "on_success": settings.on_success,
        "paused_reason": st.paused_reason,
        "waiting_for_gate": st.gate,
        "snapshot_id": st.snapshot_id,
        "updated_at": st.updated_at,
        "canary": None if verdict is None else verdict.get("canary"),
        "stable": None if verdict is None else verdict.get("stable"),
        "last_check": verdict,
        "message": st.message,
    }
