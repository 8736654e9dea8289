"""The failure streak: consecutive failures roll back, a pass resets, inconclusive does neither."""

from __future__ import annotations

from typing import List

import pytest
from hypothesis import given, settings, strategies as st

from nginx_canary.rollout.analysis import evaluate
from nginx_canary.rollout.checks import Thresholds
from nginx_canary.rollout.streak import FailureCounter, next_failure_streak
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS
from tests.rollout.figures import stats


def test_consecutive_failures_roll_back():
    counter = FailureCounter(2)
    assert counter.record(FAIL) is False and counter.streak == 1
    assert counter.record(FAIL) is True and counter.should_roll_back


def test_pass_resets_and_inconclusive_neither_counts_nor_resets():
    counter = FailureCounter(2)
    counter.record(FAIL)
    counter.record(INCONCLUSIVE)
    assert counter.streak == 1 and not counter.should_roll_back
    assert counter.record(FAIL) is True  # fail, quiet, fail: two failures in a row
    counter.record(PASS)
    assert counter.streak == 0 and not counter.should_roll_back
    for _ in range(10):
        counter.record(INCONCLUSIVE)
    assert counter.streak == 0


def test_counter_takes_verdict_objects_and_a_persisted_streak():
    counter = FailureCounter(3, streak=2)
    failing = evaluate(stats(100, errors_5xx=100), stats(100), Thresholds(), 1_700_000_000.0)
    assert counter.record(failing) is True and counter.streak == 3
    counter.reset()
    assert counter.streak == 0 and counter.failure_threshold == 3


def test_counter_refuses_nonsense():
    with pytest.raises(ValueError):
        FailureCounter(0)
    with pytest.raises(ValueError):
        FailureCounter(2, streak=-1)
    with pytest.raises(ValueError, match="unknown verdict 'FAIL'"):
        FailureCounter(2).record("FAIL")
    with pytest.raises(ValueError):
        next_failure_streak(0, "skipped")


def reference_should_roll_back(history: List[str], threshold: int) -> bool:
    """The rule stated differently: drop the inconclusive verdicts; roll back when
    the last ``threshold`` of the rest are all failures."""
    decisive = [v for v in history if v != INCONCLUSIVE]
    return len(decisive) >= threshold and all(v == FAIL for v in decisive[-threshold:])


@settings(max_examples=300, deadline=None)
@given(history=st.lists(st.sampled_from([PASS, FAIL, INCONCLUSIVE]), max_size=40), threshold=st.integers(1, 5))
def test_counter_matches_the_reference_model(history, threshold):
    counter = FailureCounter(threshold)
    for n, verdict in enumerate(history, 1):
        answer = counter.record(verdict)
        assert answer == counter.should_roll_back == reference_should_roll_back(history[:n], threshold)
    decisive = [v for v in history if v != INCONCLUSIVE]
    trailing_fails = len(decisive) - (max(i for i, v in enumerate(decisive) if v == PASS) + 1) \
        if PASS in decisive else len(decisive)
    assert counter.streak == trailing_fails
