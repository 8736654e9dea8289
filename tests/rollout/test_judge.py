"""The sequential judge (rollout/judge.py) on synthetic streams of requests."""

from __future__ import annotations

import random
import re
from typing import Optional, Tuple

import pytest

from nginx_canary.config.model import AnalysisSettings
from nginx_canary.logs.window import Stats
from nginx_canary.rollout.judge import CHECK_NAMES, RISK_SHARES, judge
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, CheckResult, Verdict

TICK = 0.25


def stream(seconds: float, canary_rate: float, canary_5xx: float, stable_5xx: float, *, seed: int,
           slower: float = 1.0, limits: AnalysisSettings = AnalysisSettings(), stop_on_pass: bool = True
           ) -> Tuple[Optional[Verdict], float]:
    """Feed a 10 % step (stable 9x the canary's traffic) tick by tick; the first fail (or pass) and when."""
    rng = random.Random(seed)
    canary, stable = Stats(), Stats()
    at, verdict = 0.0, None
    while at < seconds:
        at += TICK
        for stats, rate, errors, scale in ((canary, canary_rate, canary_5xx, slower),
                                            (stable, 9 * canary_rate, stable_5xx, 1.0)):
            expected = rate * TICK
            for _ in range(int(expected) + (rng.random() < expected % 1)):
                # ~15 ms median, a long tail, logged to the millisecond like nginx does.
                latency = round(min(5.0, 0.015 * scale * rng.lognormvariate(0, 0.6)), 3)
                stats.add(502 if rng.random() < errors else 200, latency)
        verdict = judge(canary, stable, limits, at, at)
        if verdict.verdict == FAIL or (stop_on_pass and verdict.verdict == PASS):
            return verdict, at
    return verdict, at


def test_a_canary_broken_from_its_first_request_is_failed_on_its_first_handful():
    verdict, at = stream(10, 20, 1.0, 0.02, seed=1)
    assert verdict is not None and verdict.verdict == FAIL and at <= 0.5
    failed = {c.name for c in verdict.failed}
    assert "error_rate" in failed
    assert verdict.canary["requests"] is not None and verdict.canary["requests"] <= 10
    assert "is shown above the 5 % limit" in verdict.reason


@pytest.mark.parametrize("seed", range(8))
def test_a_healthy_canary_with_a_realistic_error_rate_is_not_failed(seed):
    verdict, _ = stream(60, 20, 0.02, 0.02, seed=seed, stop_on_pass=False)
    assert verdict is not None and verdict.verdict != FAIL


def test_three_points_more_5xx_over_a_clean_stable_is_caught():
    verdict, at = stream(60, 20, 0.03, 0.0, seed=4)
    assert verdict is not None and verdict.verdict == FAIL and at < 60
    assert [c.name for c in verdict.failed] == ["error_rate_increase"]
    assert "the canary's rate is shown above stable's" in verdict.reason


def test_a_tolerance_lets_a_slightly_worse_canary_through():
    limits = AnalysisSettings(error_rate_tolerance=3.0)  # up to 4 times stable's rate
    verdict, _ = stream(60, 20, 0.03, 0.01, seed=5, limits=limits, stop_on_pass=False)
    assert verdict is not None and verdict.verdict != FAIL


def test_a_canary_three_times_slower_is_failed_on_typical_latency():
    verdict, at = stream(30, 20, 0.0, 0.0, seed=6, slower=3.0)
    assert verdict is not None and verdict.verdict == FAIL and at < 5
    assert "p50_latency_ratio" in {c.name for c in verdict.failed}


@pytest.mark.parametrize("seed", range(6))
def test_the_same_latency_distribution_is_never_failed_whatever_the_rounding(seed):
    verdict, _ = stream(60, 20, 0.0, 0.0, seed=seed, stop_on_pass=False)
    assert verdict is not None and verdict.verdict != FAIL


def test_a_clean_canary_passes_once_the_evidence_is_in():
    verdict, at = stream(120, 20, 0.0, 0.0, seed=7)
    assert verdict is not None and verdict.verdict == PASS, verdict.reason
    assert verdict.canary["requests"] is not None and verdict.canary["requests"] >= 20


def _figures(requests: int, errors: int) -> Stats:
    stats = Stats()
    stats.add(200, 0.015, count=requests - errors)
    if errors:
        stats.add(502, 0.015, count=errors)
    return stats


def test_inconclusive_says_how_many_more_requests_and_how_long():
    # 15 s at 20 canary req/s, both groups at 2 % 5xx: within tolerance so far, undecided.
    verdict = judge(_figures(300, 6), _figures(2700, 54), AnalysisSettings(), 15.0, 15.0)
    assert verdict.verdict == INCONCLUSIVE
    assert "error_rate_increase: canary 5xx 2 % (6 of 300) vs stable 2 % (54 of 2700): within tolerance so far" \
        in verdict.reason
    assert re.search(r"; about (\d+) more canary requests to decide \(about [0-9.]+ (s|min) at the current rate\)$",
                     verdict.reason), verdict.reason


def test_an_estimate_far_beyond_the_requests_seen_is_said_in_words():
    verdict = judge(_figures(300, 9), _figures(2700, 54), AnalysisSettings(), 15.0, 15.0)
    assert verdict.verdict == INCONCLUSIVE
    assert verdict.reason.endswith("too close to the limit to decide soon (at this rate, over 100 times the 300 "
                                   "canary requests seen so far)")


def test_too_few_requests_are_inconclusive_with_the_minimum():
    canary, stable = Stats(), Stats()
    canary.add(200, 0.01, count=5)
    stable.add(200, 0.01, count=50)
    verdict = judge(canary, stable, AnalysisSettings(), 10.0, 2.0)
    assert verdict.verdict == INCONCLUSIVE and verdict.reason.startswith("only 5 canary requests since the step began")


def test_without_stable_traffic_the_relative_checks_are_skipped_not_blocking():
    canary, stable = Stats(), Stats()
    canary.add(200, 0.01, count=3000)
    verdict = judge(canary, stable, AnalysisSettings(), 10.0, 30.0)
    skipped = {c.name for c in verdict.checks if c.skipped}
    assert {"error_rate_increase", "p99_latency_ratio", "p50_latency_ratio"} <= skipped
    assert verdict.verdict == PASS and "skipped without a stable baseline" in verdict.reason


def test_an_extra_check_that_fails_fails_the_verdict():
    canary, stable = Stats(), Stats()
    canary.add(200, 0.01, count=3000)
    stable.add(200, 0.01, count=9000)
    extra = CheckResult("http_checks", FAIL, 1.0, 0.0, 3000, 9000, "http://127.0.0.1:9/health answered 500")
    verdict = judge(canary, stable, AnalysisSettings(), 10.0, 30.0, (extra,))
    assert verdict.verdict == FAIL and [c.name for c in verdict.failed] == ["http_checks"]


def test_the_planned_look_at_the_bake_end_catches_what_the_continuous_test_has_not_yet():
    # 90 of 1,200 canary requests (7.5 %) against the 5 % limit: not yet enough for a test that may look at any time,
    # enough for the one planned look (exact binomial test at half the check's share of the risk).
    canary, stable = _figures(1200, 90), _figures(10800, 540)
    assert judge(canary, stable, AnalysisSettings(), 60.0, 60.0).verdict != FAIL
    verdict = judge(canary, stable, AnalysisSettings(), 60.0, 60.0, final_look=True)
    assert verdict.verdict == FAIL
    assert "error_rate: canary 5xx 7.5 % (90 of 1200) is shown above the 5 % limit at the end of the bake time" \
        in verdict.reason


def test_the_planned_look_does_not_fail_a_canary_as_healthy_as_stable():
    assert judge(_figures(1200, 24), _figures(10800, 216), AnalysisSettings(), 60.0, 60.0,
                 final_look=True).verdict != FAIL


def test_the_checks_shares_of_the_risk_add_up_to_the_whole_and_cover_every_check():
    assert set(RISK_SHARES) == set(CHECK_NAMES)
    assert sum(anytime + planned for anytime, planned in RISK_SHARES.values()) == pytest.approx(1.0)
    assert all(anytime > 0 and planned >= 0 for anytime, planned in RISK_SHARES.values())
