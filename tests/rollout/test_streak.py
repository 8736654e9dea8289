"""The failure streak: consecutive failures roll back, a pass resets, inconclusive does neither."""

from __future__ import annotations

from typing import List

import pytest
from hypothesis import given, settings, strategies as st

from nginx_canary.rollout.streak import next_failure_streak
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS


def streak_of(history: List[str], start: int = 0) -> int:
    streak = start
    for verdict in history:
        streak = next_failure_streak(streak, verdict)
    return streak


def test_consecutive_failures_count():
    assert streak_of([FAIL]) == 1
    assert streak_of([FAIL, FAIL]) == 2
    assert streak_of([FAIL], start=2) == 3  # a persisted streak goes on


def test_pass_resets_and_inconclusive_neither_counts_nor_resets():
    assert streak_of([FAIL, INCONCLUSIVE]) == 1
    assert streak_of([FAIL, INCONCLUSIVE, FAIL]) == 2  # fail, quiet, fail: two failures in a row
    assert streak_of([FAIL, INCONCLUSIVE, FAIL, PASS]) == 0
    assert streak_of([INCONCLUSIVE] * 10) == 0


def test_an_unknown_verdict_is_refused():
    with pytest.raises(ValueError, match="unknown verdict 'FAIL'"):
        next_failure_streak(0, "FAIL")
    with pytest.raises(ValueError):
        next_failure_streak(0, "skipped")


def reference_should_roll_back(history: List[str], threshold: int) -> bool:
    """The rule stated differently: drop the inconclusive verdicts; roll back when
    the last ``threshold`` of the rest are all failures."""
    decisive = [v for v in history if v != INCONCLUSIVE]
    return len(decisive) >= threshold and all(v == FAIL for v in decisive[-threshold:])


@settings(max_examples=300, deadline=None)
@given(history=st.lists(st.sampled_from([PASS, FAIL, INCONCLUSIVE]), max_size=40), threshold=st.integers(1, 5))
def test_the_streak_matches_the_reference_model(history, threshold):
    for n in range(1, len(history) + 1):
        assert (streak_of(history[:n]) >= threshold) == reference_should_roll_back(history[:n], threshold)
