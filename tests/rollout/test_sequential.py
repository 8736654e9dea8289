"""The always-valid tests under the judge (rollout/sequential.py): validity under the null, power, bounds."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from nginx_canary.logs.sketch import LatencySketch
from nginx_canary.rollout.sequential import (
    log_evidence_above,
    log_evidence_below,
    log_evidence_share_above,
    log_tail_at_least,
    lower_bound,
    quantile_upper_bound,
    trials_needed,
    upper_bound,
)


def _crossed_ever(rng: random.Random, p: float, p0: float, alpha: float, trials: int, every: int, above: bool) -> bool:
    goal = -math.log(alpha)
    bad = 0
    for n in range(1, trials + 1):
        bad += rng.random() < p
        if n % every == 0:
            evidence = log_evidence_above(n, bad, p0) if above else log_evidence_below(n, bad, p0)
            if evidence >= goal:
                return True
    return False


@pytest.mark.parametrize("above", [True, False])
def test_looking_after_every_batch_keeps_false_alarms_below_alpha(above):
    # At the null's edge (p == p0), looked at every 5 trials for 3000 trials: the worst case for a repeated test.
    rng = random.Random(20261203)
    alpha, runs = 0.05, 300
    alarms = sum(_crossed_ever(rng, 0.05, 0.05, alpha, 3000, 5, above) for _ in range(runs))
    assert alarms / runs <= alpha


def test_a_plain_test_repeated_at_every_look_would_not_have_been_valid():
    # The same streams judged by a fixed-sample one-sided z-test at every look: the trap the e-values avoid.
    rng = random.Random(20261203)
    alarms = 0
    for _ in range(100):
        bad = 0
        for n in range(1, 3001):
            bad += rng.random() < 0.05
            if n % 5 == 0 and (bad / n - 0.05) / math.sqrt(0.05 * 0.95 / n) > 1.645:
                alarms += 1
                break
    assert alarms / 100 > 0.2


def test_a_canary_broken_from_its_first_request_is_refuted_in_three():
    goal = -math.log(0.01 / 5)
    assert [log_evidence_above(k, k, 0.05) >= goal for k in (1, 2, 3)] == [False, False, True]
    assert log_evidence_share_above(4, 0, 4, 36) >= goal  # four 5xx, all the canary's, at a 10 % share


def test_the_share_test_is_valid_when_both_groups_fail_alike():
    rng = random.Random(7)
    goal = -math.log(0.05)
    alarms = 0
    for _ in range(200):
        canary_n = stable_n = canary_bad = stable_bad = 0
        for _ in range(400):  # 400 looks, 5 canary and 45 stable requests between two looks, both at 2 %
            canary_n += 5
            stable_n += 45
            canary_bad += sum(rng.random() < 0.02 for _ in range(5))
            stable_bad += sum(rng.random() < 0.02 for _ in range(45))
            if log_evidence_share_above(canary_bad, stable_bad, canary_n, stable_n) >= goal:
                alarms += 1
                break
    assert alarms / 200 <= 0.05


def test_edges():
    assert log_evidence_above(0, 0, 0.3) == 0.0 and log_evidence_below(0, 0, 0.3) == 0.0
    assert log_evidence_above(5, 1, 0.0) == math.inf and log_evidence_above(5, 0, 0.0) == 0.0
    assert log_evidence_below(5, 4, 1.0) == math.inf and log_evidence_below(5, 5, 1.0) == 0.0
    assert log_evidence_share_above(3, 0, 0, 10) == 0.0
    with pytest.raises(ValueError):
        log_evidence_above(3, 4, 0.1)
    with pytest.raises(ValueError):
        log_evidence_below(3, 1, 1.5)
    with pytest.raises(ValueError):
        log_evidence_share_above(1, 1, 1, 1, ratio=0.0)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), data=st.data(), a=st.floats(0.001, 0.998), b=st.floats(0.001, 0.998))
def test_evidence_moves_with_p0_the_way_bounds_need(n, data, a, b):
    k = data.draw(st.integers(0, n))
    low, high = sorted((a, b))
    assert log_evidence_above(n, k, low) >= log_evidence_above(n, k, high)
    assert log_evidence_below(n, k, low) <= log_evidence_below(n, k, high)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 20000), data=st.data())
def test_bounds_hold_the_estimate(n, data):
    k = data.draw(st.integers(0, n))
    assert lower_bound(n, k, 0.05) <= k / n <= upper_bound(n, k, 0.05)


def test_bounds_cover_the_rate_at_every_look():
    rng = random.Random(11)
    misses = 0
    for _ in range(200):
        bad = 0
        for n in range(1, 1001):
            bad += rng.random() < 0.1
            if n % 50 == 0 and not lower_bound(n, bad, 0.025) <= 0.1 <= upper_bound(n, bad, 0.025):
                misses += 1
                break
    assert misses / 200 <= 0.05
    assert upper_bound(0, 0, 0.05) == 1.0 and lower_bound(0, 0, 0.05) == 0.0


def test_the_quantile_bound_is_above_the_true_quantile():
    rng = random.Random(3)
    misses = 0
    true_p99 = math.exp(-4 + 0.8 * 2.3263)  # lognormal(-4, 0.8)
    for _ in range(40):
        sketch = LatencySketch()
        for _ in range(3000):
            sketch.add(rng.lognormvariate(-4, 0.8))
        high = quantile_upper_bound(sketch, 0.99, 0.05)
        assert high is not None and sketch.quantile(0.99) <= high
        misses += high < true_p99
    assert misses <= 2
    thin = LatencySketch()
    thin.add(0.1)
    assert quantile_upper_bound(thin, 0.99, 0.05) is None and quantile_upper_bound(LatencySketch(), 0.5, 0.05) is None


def test_trials_needed_is_where_the_test_decides():
    goal = -math.log(0.025)
    total = trials_needed(300, 6, 0.039, 0.025, below=True)
    assert total is not None and total > 300
    assert log_evidence_below(total, round(total * 0.02), 0.039) >= goal
    assert log_evidence_below(total - total // 50 - 1, round((total - total // 50 - 1) * 0.02), 0.039) < goal
    assert trials_needed(300, 15, 0.039, 0.025, below=True) is None  # 5 % is not below 3.9 %
    assert trials_needed(0, 0, 0.039, 0.025, below=True) is None
    assert trials_needed(5000, 0, 0.05, 0.025, below=True) == 5000  # already decided


@pytest.mark.parametrize("n, k, p0", [(10, 3, 0.1), (1200, 96, 0.05), (636, 96, 0.1), (5, 5, 0.5), (300, 20, 0.02),
                                      (1000, 1, 0.0005), (50, 0, 0.3)])
def test_the_binomial_tail_is_exact(n, k, p0):
    p = Fraction(p0).limit_denominator(10**9)
    exact = sum(math.comb(n, j) * p**j * (1 - p)**(n - j) for j in range(k, n + 1))
    expected = math.log(exact.numerator) - math.log(exact.denominator)
    assert log_tail_at_least(n, k, p0) == pytest.approx(expected, abs=1e-9)
