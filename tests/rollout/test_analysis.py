"""The judge: check results -> one verdict with reasons."""

from __future__ import annotations

import json
from typing import Callable

import pytest
from hypothesis import given, settings, strategies as st

from nginx_canary.logs.window import Stats
from nginx_canary.rollout.analysis import evaluate
from nginx_canary.rollout.checks import CHECKS, Thresholds
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, Verdict
from tests.rollout.figures import stats

DEFAULT = Thresholds()
AT = 1_700_000_000.0


# --- thin data: canary and stable --------------------------------------------------------


def test_no_canary_requests_at_all():
    verdict = evaluate(Stats(), stats(1000), DEFAULT, AT)
    assert verdict.verdict == INCONCLUSIVE
    assert verdict.reason == "no canary requests in the window, need 20"
    assert all(c.verdict == INCONCLUSIVE and not c.skipped for c in verdict.checks)


def test_too_few_canary_requests_are_inconclusive_not_fail_even_when_all_errors():
    verdict = evaluate(stats(5, errors_5xx=5), stats(1000), DEFAULT, AT)
    assert verdict.verdict == INCONCLUSIVE
    assert verdict.reason == "only 5 canary requests in the window, need 20"


def test_min_requests_is_inclusive():
    assert evaluate(stats(20), stats(1000), DEFAULT, AT).verdict == PASS
    assert evaluate(stats(19), stats(1000), DEFAULT, AT).verdict == INCONCLUSIVE


@pytest.mark.parametrize("stable_requests", [0, 1, 19])
def test_thin_stable_skips_relative_checks_and_absolute_ones_decide(stable_requests):
    stable = stats(stable_requests, latency=0.01)
    healthy = evaluate(stats(500, errors_5xx=20), stable, DEFAULT, AT)  # 4 %: within 5 %, +4 points vs 0
    by_name = {c.name: c for c in healthy.checks}
    assert healthy.verdict == PASS
    for name in ("error_rate_increase", "p99_latency_ratio"):
        assert by_name[name].verdict == INCONCLUSIVE and by_name[name].skipped and by_name[name].value is None
        assert "stable requests" in by_name[name].reason
    assert by_name["error_rate"].verdict == PASS and by_name["p99_latency"].verdict == PASS
    assert healthy.reason.startswith("2 of 4 checks passed; skipped without a stable baseline: error_rate_increase: ")
    broken = evaluate(stats(500, errors_5xx=100), stable, DEFAULT, AT)
    assert broken.verdict == FAIL and [c.name for c in broken.failed] == ["error_rate"]


def test_canary_without_latency_samples_is_inconclusive_and_holds_the_verdict():
    verdict = evaluate(stats(100, latency=None), stats(1000), DEFAULT, AT)
    by_name = {c.name: c for c in verdict.checks}
    assert by_name["error_rate"].verdict == PASS
    for name in ("p99_latency", "p99_latency_ratio"):
        assert by_name[name].verdict == INCONCLUSIVE and not by_name[name].skipped
    assert verdict.verdict == INCONCLUSIVE
    assert verdict.reason == "none of the 100 canary requests has a latency in the log"


# --- failures and reasons ----------------------------------------------------------------


def test_a_failure_outweighs_missing_evidence():
    verdict = evaluate(stats(100, errors_5xx=50, latency=None), stats(1000), DEFAULT, AT)
    assert verdict.verdict == FAIL


def test_all_failing_checks_are_named():
    verdict = evaluate(stats(100, errors_5xx=50, latency=2.0), stats(1000, latency=0.1), DEFAULT, AT)
    assert verdict.verdict == FAIL
    assert [c.name for c in verdict.failed] == [c.name for c in CHECKS]
    assert verdict.reason.startswith("4 of 4 checks failed: error_rate: canary 5xx rate 50.0 %")
    assert "p99_latency_ratio: canary p99 latency 2.0 s is 20.0x stable's 0.1 s" in verdict.reason


def test_pass_reason():
    verdict = evaluate(stats(100), stats(1000), DEFAULT, AT)
    assert verdict.verdict == PASS and verdict.reason == "all 4 checks passed"
    assert verdict.at == AT
    assert verdict.canary == stats(100).summary() and verdict.stable["requests"] == 1000


def test_thresholds_are_applied():
    strict = Thresholds(min_requests=5, max_error_rate=0.0)
    assert evaluate(stats(5, errors_5xx=1), stats(100), strict, AT).verdict == FAIL
    assert evaluate(stats(5), stats(100), strict, AT).verdict == PASS


# --- property tests: evaluate -------------------------------------------------------


@st.composite
def windows(draw: Callable) -> Stats:
    requests = draw(st.integers(0, 400))
    errors = draw(st.integers(0, requests))
    latency = draw(st.one_of(st.none(), st.sampled_from([0.0, 0.001, 0.05, 0.4, 1.2, 7.0])))
    slow = draw(st.integers(0, requests))
    return stats(requests, errors_5xx=errors, latency=latency, slow=slow if latency is not None else 0,
                 slow_latency=draw(st.sampled_from([0.2, 0.9, 2.5])))


thresholds_strategy = st.builds(
    Thresholds,
    min_requests=st.integers(1, 60),
    max_error_rate=st.sampled_from([0.0, 0.01, 0.05, 0.5, 1.0]),
    max_error_rate_increase=st.sampled_from([0.0, 0.02, 0.1]),
    max_p99_latency=st.sampled_from([0.1, 1.0, 5.0]),
    max_p99_latency_ratio=st.sampled_from([1.0, 2.0, 10.0]),
)


@settings(max_examples=200, deadline=None)
@given(canary=windows(), stable=windows(), thresholds=thresholds_strategy)
def test_verdict_follows_from_the_checks(canary, stable, thresholds):
    verdict = evaluate(canary, stable, thresholds, AT)
    kinds = [c.verdict for c in verdict.checks]
    assert [c.name for c in verdict.checks] == [c.name for c in CHECKS]
    if canary.requests < thresholds.min_requests:
        assert kinds == [INCONCLUSIVE] * len(CHECKS) and verdict.verdict == INCONCLUSIVE
    elif FAIL in kinds:
        assert verdict.verdict == FAIL
    elif any(c.verdict == INCONCLUSIVE and not c.skipped for c in verdict.checks):
        assert verdict.verdict == INCONCLUSIVE
    else:
        assert verdict.verdict == PASS
    # a skipped check is always a relative one, for want of stable evidence (or of samples for a p99 ratio)
    for c in verdict.checks:
        if c.skipped:
            assert c.name in ("error_rate_increase", "p99_latency_ratio") and c.verdict == INCONCLUSIVE
            assert stable.requests < thresholds.min_requests or not stable.latency.count or \
                stable.summary()["p99"] == 0.0 or (c.name == "p99_latency_ratio" and "0 s over" in c.reason)
    if canary.requests >= thresholds.min_requests:
        rate_failed = canary.errors_5xx / canary.requests > thresholds.max_error_rate + 1e-12
        assert (verdict.checks[0].verdict == FAIL) == rate_failed
    assert Verdict.from_dict(json.loads(json.dumps(verdict.to_dict(), allow_nan=False))) == verdict
