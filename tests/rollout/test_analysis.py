"""Analysis checks, verdicts and the failure counter.

Every check in ``analysis.CHECKS`` has a triggering fixture and a must-not-trigger
fixture in ``FIXTURES`` (gixy-style); ``test_every_check_has_both_fixtures``
fails the suite when a check is added without them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings, strategies as st

from nginx_canary.rollout import analysis
from nginx_canary.rollout.analysis import (
    CHECKS,
    FAIL,
    INCONCLUSIVE,
    PASS,
    CheckResult,
    FailureCounter,
    Thresholds,
    Verdict,
    evaluate,
    next_failure_streak,
)
from nginx_canary.logs.window import Stats

DEFAULT = Thresholds()
AT = 1_700_000_000.0


def stats(
    requests: int,
    errors_5xx: int = 0,
    errors_4xx: int = 0,
    latency: Optional[float] = 0.05,
    slow: int = 0,
    slow_latency: float = 3.0,
) -> Stats:
    """Stats of ``requests`` requests: the first ``errors_5xx`` answered 503, the next
    ``errors_4xx`` 404, the rest 200; the last ``slow`` took ``slow_latency`` seconds,
    the others ``latency`` (None: no latency logged)."""
    assert errors_5xx + errors_4xx <= requests and slow <= requests
    result = Stats()
    statuses = [503] * errors_5xx + [404] * errors_4xx + [200] * (requests - errors_5xx - errors_4xx)
    for i, status in enumerate(statuses):
        seconds = slow_latency if i >= requests - slow else latency
        result.add(status, seconds)
    return result


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
    assert analysis.check_error_rate(stats(240, errors_5xx=12), stats(0), DEFAULT).reason == (
        "canary 5xx rate 5.0 % over 240 requests is within 5.0 %"
    )


def test_error_rate_increase_reason():
    fail = result_of("error_rate_increase", FIXTURES["error_rate_increase"][0])
    assert fail.reason == (
        "canary 5xx rate 4.0 % over 200 requests is 3.0 points above stable's 1.0 % over 2000 requests, "
        "more than the 2.0 points allowed"
    )
    assert fail.value == pytest.approx(0.03)
    better = analysis.check_error_rate_increase(stats(200), stats(2000, errors_5xx=20), DEFAULT)
    assert better.verdict == PASS
    assert "is 1.0 points below stable's 1.0 %" in better.reason
    same = analysis.check_error_rate_increase(stats(200, errors_5xx=2), stats(2000, errors_5xx=20), DEFAULT)
    assert "is equal to stable's 1.0 %" in same.reason and same.verdict == PASS


def test_p99_latency_reason():
    result = result_of("p99_latency", FIXTURES["p99_latency"][0])
    assert result.reason == "canary p99 latency 1.5 s over 100 requests exceeds 1.0 s"


def test_p99_latency_ratio_ignores_millisecond_noise():
    # 2 ms against 1 ms is "2x", but nginx logs whole milliseconds.
    result = analysis.check_p99_latency_ratio(stats(200, latency=0.002), stats(1000, latency=0.001), DEFAULT)
    assert result.verdict == PASS and result.value == pytest.approx(2.0, rel=0.02)
    assert "within the 0.025 s a ratio ignores" in result.reason
    # Just past the floor, the ratio is judged again.
    result = analysis.check_p99_latency_ratio(stats(200, latency=0.03), stats(1000, latency=0.004), DEFAULT)
    assert result.verdict == FAIL


def test_p99_latency_ratio_with_few_samples_compares_the_quantile_they_can_tell():
    # 50 canary samples, one of them slow: its p99 is that one request; p98 is not.
    result = analysis.check_p99_latency_ratio(stats(50, latency=0.001, slow=1, slow_latency=0.5),
                                              stats(1000, latency=0.001), DEFAULT)
    assert result.verdict == PASS and "canary p98 latency" in result.reason
    # A canary slow throughout fails on it as on a p99.
    result = analysis.check_p99_latency_ratio(stats(20, latency=0.2), stats(1000, latency=0.02), DEFAULT)
    assert result.verdict == FAIL and "canary p95 latency 0.2" in result.reason and "10.0x" in result.reason


def test_p99_latency_ratio_reason():
    result = result_of("p99_latency_ratio", FIXTURES["p99_latency_ratio"][0])
    assert result.reason == "canary p99 latency 0.5 s is 2.5x stable's 0.2 s, more than 2.0x"
    assert result.value == pytest.approx(2.5, rel=0.02)  # the sketch estimates within 1 %


def test_limits_are_exclusive_despite_float_noise():
    # 0.07 - 0.05 == 0.020000000000000004 in floats: still "not more than 0.02".
    result = analysis.check_error_rate_increase(stats(100, errors_5xx=7), stats(100, errors_5xx=5), DEFAULT)
    assert result.verdict == PASS
    assert analysis.check_error_rate(stats(20, errors_5xx=1), stats(0), DEFAULT).verdict == PASS
    assert analysis.check_error_rate(stats(20, errors_5xx=2), stats(0), DEFAULT).verdict == FAIL


# --- thin data: canary and stable -----------------------------------------------


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


def test_thin_stable_reasons():
    none = analysis.check_error_rate_increase(stats(100), Stats(), DEFAULT)
    assert none.reason == "no stable requests in the window to compare against"
    few = analysis.check_p99_latency_ratio(stats(100), stats(7), DEFAULT)
    assert few.reason == "only 7 stable requests in the window, need 20 to compare against"


def test_stable_without_latency_samples_skips_the_ratio():
    result = analysis.check_p99_latency_ratio(stats(100), stats(100, latency=None), DEFAULT)
    assert result.verdict == INCONCLUSIVE and result.skipped
    assert result.reason == "none of the 100 stable requests has a latency to compare against"


def test_stable_p99_of_zero_skips_the_ratio_without_dividing():
    result = analysis.check_p99_latency_ratio(stats(100, latency=0.2), stats(100, latency=0.0), DEFAULT)
    assert result.verdict == INCONCLUSIVE and result.skipped and result.value is None
    assert "stable p99 latency is 0 s" in result.reason
    # the absolute limit still holds the canary
    slow = evaluate(stats(100, latency=5.0), stats(100, latency=0.0), DEFAULT, AT)
    assert slow.verdict == FAIL and [c.name for c in slow.failed] == ["p99_latency"]


def test_canary_without_latency_samples_is_inconclusive_and_holds_the_verdict():
    verdict = evaluate(stats(100, latency=None), stats(1000), DEFAULT, AT)
    by_name = {c.name: c for c in verdict.checks}
    assert by_name["error_rate"].verdict == PASS
    for name in ("p99_latency", "p99_latency_ratio"):
        assert by_name[name].verdict == INCONCLUSIVE and not by_name[name].skipped
    assert verdict.verdict == INCONCLUSIVE
    assert verdict.reason == "none of the 100 canary requests has a latency in the log"


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


# --- serialisation ----------------------------------------------------------------


@pytest.mark.parametrize("canary, stable", [
    (stats(240, errors_5xx=29), stats(2000)),
    (stats(3), Stats()),
    (stats(100, latency=None), stats(100, latency=0.0)),
    (stats(100, latency=0.3, slow=5), stats(1000, latency=0.1)),
])
def test_verdict_round_trips_through_json(canary, stable):
    verdict = evaluate(canary, stable, DEFAULT, AT)
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data == verdict.to_dict()
    again = Verdict.from_dict(data)
    assert again == verdict
    assert again.to_dict() == verdict.to_dict()


def test_verdict_from_dict_is_strict():
    data = evaluate(stats(100), stats(100), DEFAULT, AT).to_dict()
    with pytest.raises(ValueError, match="unknown 'extra'"):
        Verdict.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match="missing 'at'"):
        Verdict.from_dict({k: v for k, v in data.items() if k != "at"})
    with pytest.raises(ValueError, match="unknown verdict 'maybe'"):
        Verdict.from_dict({**data, "verdict": "maybe"})
    bad_check = dict(data["checks"][0], canary_requests=-1)
    with pytest.raises(ValueError, match="canary_requests"):
        Verdict.from_dict({**data, "checks": [bad_check]})
    with pytest.raises(ValueError, match="'canary' must be an object of numbers"):
        Verdict.from_dict({**data, "canary": {"requests": "many"}})


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


# --- the failure counter -------------------------------------------------------------


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
    failing = evaluate(stats(100, errors_5xx=100), stats(100), DEFAULT, AT)
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


def test_check_results_are_frozen():
    result = result_of("error_rate", FIXTURES["error_rate"][0])
    with pytest.raises(Exception):
        result.verdict = PASS  # type: ignore[misc]
    assert replace(result, verdict=PASS).verdict == PASS


def test_thresholds_from_the_real_analysis_settings():
    from nginx_canary.config.model import AnalysisSettings

    assert Thresholds.from_settings(AnalysisSettings()) == Thresholds()
