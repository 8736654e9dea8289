"""The rollback decision from a series of verdicts: consecutive failures count, a pass resets,
inconclusive does neither."""

from __future__ import annotations

from typing import Union

from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, VERDICTS, Verdict


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


class FailureCounter:
    """Counts consecutive failed verdicts; ``should_roll_back`` once they reach ``failure_threshold``.

    Pure bookkeeping: the rollout engine decides when a new count starts (for
    instance at a new step) and persists ``streak`` in the rollout state.
    """

    def __init__(self, failure_threshold: int, streak: int = 0) -> None:
        """Raises ValueError unless failure_threshold >= 1 and streak >= 0."""
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an integer of at least 1, not {failure_threshold!r}")
        if isinstance(streak, bool) or not isinstance(streak, int) or streak < 0:
            raise ValueError(f"streak must be a non-negative integer, not {streak!r}")
        self._threshold = failure_threshold
        self._streak = streak

    @property
    def failure_threshold(self) -> int:
        return self._threshold

    @property
    def streak(self) -> int:
        return self._streak

    @property
    def should_roll_back(self) -> bool:
        return self._streak >= self._threshold

    def record(self, verdict: Union[Verdict, str]) -> bool:
        """Count one verdict (a :class:`Verdict` or its string); returns ``should_roll_back``.

        Raises ValueError for an unknown verdict string.
        """
        name = verdict.verdict if isinstance(verdict, Verdict) else verdict
        self._streak = next_failure_streak(self._streak, name)
        return self.should_roll_back

    def reset(self) -> None:
        self._streak = 0

    def __repr__(self) -> str:
        return f"FailureCounter(failure_threshold={self._threshold}, streak={self._streak})"
