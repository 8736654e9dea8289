"""The fixed-threshold checks.

Every check in ``checks.CHECKS`` has a triggering fixture and a must-not-trigger
fixture in ``FIXTURES`` (gixy-style); ``test_every_check_has_both_fixtures``
fails the suite when a check is added without them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Dict, Tuple

import pytest

from nginx_canary.logs.window import Stats
from nginx_canary.rollout import checks
from nginx_canary.rollout.analysis import evaluate
from nginx_canary.rollout.checks import CHECKS, Thresholds
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, CheckResult
from tests.rollout.figures import stats

DEFAULT = Thresholds()
AT = 1_700_000_000.0


@dataclass(frozen=True)
class Fixture:
    canary: Stats
    stable: Stats
    why: str
    thresholds: Thresholds = DEFAULT


# name -> (triggering, must-not-trigger). The must-not-trigger fixture sits close
# to the triggering one, so that it shows what the check must tell apart.
FIXTURES: Dict[str, Tuple[Fixture, Fixture]] = {
    "error_rate": (
        Fixture(stats(240, errors_5xx=29), stats(2000, errors_5xx=240), "12 % 5xx, even though stable is as bad"),
        Fixture(stats(240, errors_5xx=12, errors_4xx=100), stats(2000),
                "5.0 % 5xx is at the limit, and 4xx are the client's errors"),
    ),
    "error_rate_increase": (
        Fixture(stats(200, errors_5xx=8), stats(2000, errors_5xx=20), "4 % against 1 %: within 5 % but +3 points"),
        Fixture(stats(200, errors_5xx=8), stats(2000, errors_5xx=60), "4 % against 3 %: +1 point"),
    ),
    "p99_latency": (
        Fixture(stats(100, slow=2, slow_latency=1.5), stats(1000), "p99 1.5 s over a 1 s limit"),
        Fixture(stats(100, slow=1, slow_latency=30.0), stats(1000), "one slow request is the max, not the p99"),
    ),
    "p99_latency_ratio": (
        Fixture(stats(100, latency=0.05, slow=2, slow_latency=0.5), stats(1000, latency=0.05, slow=20, slow_latency=0.2),
                "p99 0.5 s against 0.2 s: 2.5x"),
        Fixture(stats(100, latency=0.05, slow=2, slow_latency=0.9), stats(1000, latency=0.05, slow=20, slow_latency=0.8),
                "slow, but as slow as stable"),
    ),
}


CHECK_BY_NAME = {check.name: check for check in CHECKS}


def result_of(name: str, fixture: Fixture) -> CheckResult:
    return CHECK_BY_NAME[name](fixture.canary, fixture.stable, fixture.thresholds)


# --- the meta-test and the fixtures -------------------------------------------


def test_every_check_has_both_fixtures():
    names = [check.name for check in CHECKS]
    assert len(names) == len(set(names)), "check names must be unique"
    missing = sorted(set(names) - set(FIXTURES))
    stale = sorted(set(FIXTURES) - set(names))
    assert not missing, f"checks without a (triggering, must-not-trigger) fixture pair: {missing}"
    assert not stale, f"fixtures for checks that do not exist: {stale}"
    for name, pair in FIXTURES.items():
        assert len(pair) == 2 and all(isinstance(f, Fixture) for f in pair), name


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_triggering_fixture_fails_the_check(check):
    triggering, _ = FIXTURES[check.name]
    result = result_of(check.name, triggering)
    assert result.name == check.name
    assert result.verdict == FAIL, (triggering.why, result.reason)
    assert not result.skipped
    verdict = evaluate(triggering.canary, triggering.stable, triggering.thresholds, AT)
    assert verdict.verdict == FAIL
    assert check.name in verdict.reason and result.reason in verdict.reason


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_must_not_trigger_fixture_passes_the_check(check):
    _, clean = FIXTURES[check.name]
    result = result_of(check.name, clean)
    assert result.name == check.name
    assert result.verdict == PASS, (clean.why, result.reason)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_every_check_is_inconclusive_below_min_requests(check):
    triggering, _ = FIXTURES[check.name]
    few = stats(19, errors_5xx=19, slow=19, slow_latency=50.0)
    result = check(few, triggering.stable, DEFAULT)
    assert result.verdict == INCONCLUSIVE and not result.skipped
    assert result.value is None
    assert result.reason == "only 19 canary requests in the window, need 20"
    assert (result.canary_requests, result.stable_requests) == (19, triggering.stable.requests)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_every_check_reports_its_threshold_and_counts(check):
    triggering, _ = FIXTURES[check.name]
    result = result_of(check.name, triggering)
    assert result.threshold == getattr(DEFAULT, "max_" + check.name)
    assert result.canary_requests == triggering.canary.requests
    assert result.stable_requests == triggering.stable.requests
    assert result.value is not None


# --- reasons carry the numbers ----------------------------------------------------


def test_error_rate_reason():
    result = result_of("error_rate", FIXTURES["error_rate"][0])
    assert result.reason == "canary 5xx rate 12.08 % over 240 requests exceeds 5.0 %"
    assert result.value == pytest.approx(29 / 240)
    assert checks.check_error_rate(stats(240, errors_5xx=12), stats(0), DEFAULT).reason == (
        "canary 5xx rate 5.0 % over 240 requests is within 5.0 %"
    )


def test_error_rate_increase_reason():
    fail = result_of("error_rate_increase", FIXTURES["error_rate_increase"][0])
    assert fail.reason == (
        "canary 5xx rate 4.0 % over 200 requests is 3.0 points above stable's 1.0 % over 2000 requests, "
        "more than the 2.0 points allowed"
    )
    assert fail.value == pytest.approx(0.03)
    better = checks.check_error_rate_increase(stats(200), stats(2000, errors_5xx=20), DEFAULT)
    assert better.verdict == PASS
    assert "is 1.0 points below stable's 1.0 %" in better.reason
    same = checks.check_error_rate_increase(stats(200, errors_5xx=2), stats(2000, errors_5xx=20), DEFAULT)
    assert "is equal to stable's 1.0 %" in same.reason and same.verdict == PASS


def test_p99_latency_reason():
    result = result_of("p99_latency", FIXTURES["p99_latency"][0])
    assert result.reason == "canary p99 latency 1.5 s over 100 requests exceeds 1.0 s"


def test_p99_latency_ratio_ignores_millisecond_noise():
    # 2 ms against 1 ms is "2x", but nginx logs whole milliseconds.
    result = checks.check_p99_latency_ratio(stats(200, latency=0.002), stats(1000, latency=0.001), DEFAULT)
    assert result.verdict == PASS and result.value == pytest.approx(2.0, rel=0.02)
    assert "within the 0.025 s a ratio ignores" in result.reason
    # Just past the floor, the ratio is judged again.
    result = checks.check_p99_latency_ratio(stats(200, latency=0.03), stats(1000, latency=0.004), DEFAULT)
    assert result.verdict == FAIL


def test_p99_latency_ratio_with_few_samples_compares_the_quantile_they_can_tell():
    # 50 canary samples, one of them slow: its p99 is that one request; p98 is not.
    result = checks.check_p99_latency_ratio(stats(50, latency=0.001, slow=1, slow_latency=0.5),
                                              stats(1000, latency=0.001), DEFAULT)
    assert result.verdict == PASS and "canary p98 latency" in result.reason
    # A canary slow throughout fails on it as on a p99.
    result = checks.check_p99_latency_ratio(stats(20, latency=0.2), stats(1000, latency=0.02), DEFAULT)
    assert result.verdict == FAIL and "canary p95 latency 0.2" in result.reason and "10.0x" in result.reason


def test_p99_latency_ratio_reason():
    result = result_of("p99_latency_ratio", FIXTURES["p99_latency_ratio"][0])
    assert result.reason == "canary p99 latency 0.5 s is 2.5x stable's 0.2 s, more than 2.0x"
    assert result.value == pytest.approx(2.5, rel=0.02)  # the sketch estimates within 1 %


def test_limits_are_exclusive_despite_float_noise():
    # 0.07 - 0.05 == 0.020000000000000004 in floats: still "not more than 0.02".
    result = checks.check_error_rate_increase(stats(100, errors_5xx=7), stats(100, errors_5xx=5), DEFAULT)
    assert result.verdict == PASS
    assert checks.check_error_rate(stats(20, errors_5xx=1), stats(0), DEFAULT).verdict == PASS
    assert checks.check_error_rate(stats(20, errors_5xx=2), stats(0), DEFAULT).verdict == FAIL


# --- thin stable: the relative checks have no baseline -----------------------------------


def test_thin_stable_reasons():
    none = checks.check_error_rate_increase(stats(100), Stats(), DEFAULT)
    assert none.reason == "no stable requests in the window to compare against"
    few = checks.check_p99_latency_ratio(stats(100), stats(7), DEFAULT)
    assert few.reason == "only 7 stable requests in the window, need 20 to compare against"


def test_stable_without_latency_samples_skips_the_ratio():
    result = checks.check_p99_latency_ratio(stats(100), stats(100, latency=None), DEFAULT)
    assert result.verdict == INCONCLUSIVE and result.skipped
    assert result.reason == "none of the 100 stable requests has a latency to compare against"


def test_stable_p99_of_zero_skips_the_ratio_without_dividing():
    result = checks.check_p99_latency_ratio(stats(100, latency=0.2), stats(100, latency=0.0), DEFAULT)
    assert result.verdict == INCONCLUSIVE and result.skipped and result.value is None
    assert "stable p99 latency is 0 s" in result.reason
    # the absolute limit still holds the canary
    slow = evaluate(stats(100, latency=5.0), stats(100, latency=0.0), DEFAULT, AT)
    assert slow.verdict == FAIL and [c.name for c in slow.failed] == ["p99_latency"]


# --- thresholds ------------------------------------------------------------------


def test_thresholds_from_any_settings_object():
    settings_obj = SimpleNamespace(interval=10.0, window=60.0, failure_threshold=3, min_requests=50,
                                   max_error_rate=0.01, max_error_rate_increase=0.005,
                                   max_p99_latency=0.25, max_p99_latency_ratio=1.5)
    assert Thresholds.from_settings(settings_obj) == Thresholds(50, 0.01, 0.005, 0.25, 1.5)
    with pytest.raises(AttributeError):
        Thresholds.from_settings(SimpleNamespace(min_requests=1))


@pytest.mark.parametrize("bad", [
    {"min_requests": 0}, {"min_requests": True}, {"min_requests": 2.5},
    {"max_error_rate": -0.1}, {"max_error_rate": 1.5}, {"max_error_rate_increase": float("nan")},
    {"max_p99_latency": 0.0}, {"max_p99_latency": float("inf")}, {"max_p99_latency_ratio": -1.0},
])
def test_invalid_thresholds_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Thresholds(**bad)


def test_thresholds_from_the_real_analysis_settings():
    from nginx_canary.config.model import AnalysisSettings

    assert Thresholds.from_settings(AnalysisSettings()) == Thresholds()


def test_check_results_are_frozen():
    result = result_of("error_rate", FIXTURES["error_rate"][0])
    with pytest.raises(Exception):
        result.verdict = PASS  # type: ignore[misc]
    assert replace(result, verdict=PASS).verdict == PASS
