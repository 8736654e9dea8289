"""The rollback decision from a series of verdicts: consecutive failures count, a pass resets,
inconclusive does neither."""

from __future__ import annotations

from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, VERDICTS


def next_failure_streak(streak: int, verdict: str) -> int:
    """The consecutive-failure count after ``verdict``: a fail adds one, a pass resets, inconclusive keeps it.

    Inconclusive neither counts nor resets: a quiet minute between two failures
    is no evidence that the canary recovered, and no evidence that it failed
    again. Raises ValueError for an unknown verdict.
    """
    if verdict == FAIL:
        return streak + 1
    if verdict == PASS:
        return 0
    if verdict == INCONCLUSIVE:
        return streak
    raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")
