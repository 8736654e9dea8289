"""The fixed-threshold checks: each turns the canary's and stable's figures of one window into a
:class:`~nginx_canary.rollout.verdict.CheckResult`. No I/O, no clock.

Rules for thin data (chosen so that a decision is never taken on evidence that
is not there, and a canary is never judged on a baseline that is not there):

* Canary below ``min_requests``: every check is ``inconclusive`` ("only N
  canary requests in the window, need M"). It neither fails nor passes.
* Stable below ``min_requests`` (at the 100 % step the stable group receives
  no traffic at all), or stable without latency samples, or a stable p99 of
  0 s: the two *relative* checks (``error_rate_increase``,
  ``p99_latency_ratio``) have no baseline. They are ``inconclusive`` with
  ``skipped=True`` and say why; the *absolute* checks (``error_rate``,
  ``p99_latency``) need no baseline and are always applied to the canary.
  Comparing against an assumed perfect baseline (0 % errors) instead would
  silently replace ``max_error_rate`` by the much tighter
  ``max_error_rate_increase`` exactly at the last step, and roll back a
  healthy release that behaves like the stable one did; refusing to pass
  without a baseline would make the 100 % step impossible to pass.

Limits are exclusive: a value equal to its threshold passes (within float
noise: ``0.07 - 0.05`` is not "more than" ``0.02``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Tuple

from nginx_canary.domain import number_text, percent_text
from nginx_canary.logs.window import Stats
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, CheckResult, is_finite_number

#: The p99 ratio check ignores a canary p99 at most this much above stable's (seconds)...
RATIO_MIN_DIFFERENCE = 0.025
#: ...and compares p99s from this many latency samples per side on (with fewer, a p99 is the maximum,
#: so the highest quantile the samples can tell, 1 - 1/n, is compared instead).
RATIO_MIN_SAMPLES = 100


@dataclass(frozen=True)
class Thresholds:
    """The limits the checks apply (the analysis settings minus timing and rollback policy).

    ``max_error_rate`` and ``max_error_rate_increase`` are fractions (0.05 is
    5 %), ``max_p99_latency`` is in seconds. Raises ValueError for a value no
    check could apply: ``min_requests`` below 1, a rate outside 0..1, a latency
    or ratio that is not a positive finite number.
    """

    min_requests: int = 20
    max_error_rate: float = 0.05
    max_error_rate_increase: float = 0.02
    max_p99_latency: float = 1.0
    max_p99_latency_ratio: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int) or self.min_requests < 1:
            raise ValueError(f"min_requests must be an integer of at least 1, not {self.min_requests!r}")
        for name in ("max_error_rate", "max_error_rate_increase"):
            value = getattr(self, name)
            if not is_finite_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, not {value!r}")
        for name in ("max_p99_latency", "max_p99_latency_ratio"):
            value = getattr(self, name)
            if not is_finite_number(value) or not 0.0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, not {value!r}")

    @classmethod
    def from_settings(cls, obj: Any) -> "Thresholds":
        """The thresholds held by ``obj``'s attributes of the same names (e.g. ``AnalysisSettings``).

        Raises AttributeError when one is missing, ValueError when one is invalid.
        """
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})


CheckFunction = Callable[[Stats, Stats, Thresholds], CheckResult]


@dataclass(frozen=True)
class Check:
    """A named check: ``run(canary, stable, thresholds)`` returns a :class:`CheckResult` of that name."""

    name: str
    run: CheckFunction
    description: str

    def __call__(self, canary: Stats, stable: Stats, thresholds: Thresholds) -> CheckResult:
        return self.run(canary, stable, thresholds)


# --- the checks --------------------------------------------------------------


def _too_few_canary(name: str, threshold: float, canary: Stats, stable: Stats, t: Thresholds) -> Optional[CheckResult]:
    """The inconclusive result every check gives below ``min_requests`` canary requests."""
    if canary.requests >= t.min_requests:
        return None
    if canary.requests == 0:
        reason = f"no canary requests in the window, need {t.min_requests}"
    else:
        reason = f"only {canary.requests} canary requests in the window, need {t.min_requests}"
    return CheckResult(name, INCONCLUSIVE, None, threshold, canary.requests, stable.requests, reason)


def _too_few_stable(name: str, threshold: float, canary: Stats, stable: Stats, t: Thresholds) -> Optional[CheckResult]:
    """The skipped result of a relative check below ``min_requests`` stable requests."""
    if stable.requests >= t.min_requests:
        return None
    if stable.requests == 0:
        reason = "no stable requests in the window to compare against"
    else:
        reason = f"only {stable.requests} stable requests in the window, need {t.min_requests} to compare against"
    return CheckResult(name, INCONCLUSIVE, None, threshold, canary.requests, stable.requests, reason, skipped=True)


def _no_canary_latency(name: str, threshold: float, canary: Stats, stable: Stats) -> CheckResult:
    reason = f"none of the {canary.requests} canary requests has a latency in the log"
    return CheckResult(name, INCONCLUSIVE, None, threshold, canary.requests, stable.requests, reason)


def _judge(name: str, value: float, limit: float, canary: Stats, stable: Stats, *, fail: str, ok: str) -> CheckResult:
    """FAIL with reason ``fail`` when ``value`` exceeds ``limit``, else PASS with reason ``ok``."""
    failed = _exceeds(value, limit)
    return CheckResult(name, FAIL if failed else PASS, value, limit, canary.requests, stable.requests,
                       fail if failed else ok)


def check_error_rate(canary: Stats, stable: Stats, t: Thresholds) -> CheckResult:
    """Fails when the canary's share of 5xx responses is above ``max_error_rate``."""
    name, limit = "error_rate", t.max_error_rate
    early = _too_few_canary(name, limit, canary, stable, t)
    if early is not None:
        return early
    rate = canary.errors_5xx / canary.requests
    figures = f"canary 5xx rate {_pct(rate)} over {canary.requests} requests"
    return _judge(name, rate, limit, canary, stable,
                  fail=f"{figures} exceeds {_pct(limit)}",
                  ok=f"{figures} is within {_pct(limit)}")


def check_error_rate_increase(canary: Stats, stable: Stats, t: Thresholds) -> CheckResult:
    """Fails when the canary's 5xx rate is more than ``max_error_rate_increase`` above the stable one's.

    Skipped (inconclusive, not blocking) with fewer than ``min_requests`` stable requests.
    """
    name, limit = "error_rate_increase", t.max_error_rate_increase
    early = _too_few_canary(name, limit, canary, stable, t) or _too_few_stable(name, limit, canary, stable, t)
    if early is not None:
        return early
    canary_rate = canary.errors_5xx / canary.requests
    stable_rate = stable.errors_5xx / stable.requests
    increase = canary_rate - stable_rate
    if increase > 0:
        relation = f"{_points(increase)} points above"
    elif increase < 0:
        relation = f"{_points(-increase)} points below"
    else:
        relation = "equal to"
    figures = (f"canary 5xx rate {_pct(canary_rate)} over {canary.requests} requests is {relation} "
               f"stable's {_pct(stable_rate)} over {stable.requests} requests")
    return _judge(name, increase, limit, canary, stable,
                  fail=f"{figures}, more than the {_points(limit)} points allowed",
                  ok=f"{figures}, within the {_points(limit)} points allowed")


def check_p99_latency(canary: Stats, stable: Stats, t: Thresholds) -> CheckResult:
    """Fails when the canary's p99 latency is above ``max_p99_latency`` seconds."""
    name, limit = "p99_latency", t.max_p99_latency
    early = _too_few_canary(name, limit, canary, stable, t)
    if early is not None:
        return early
    p99 = _p99(canary)
    if p99 is None:
        return _no_canary_latency(name, limit, canary, stable)
    figures = f"canary p99 latency {_seconds(p99)} over {canary.latency.count} requests"
    return _judge(name, p99, limit, canary, stable,
                  fail=f"{figures} exceeds {_seconds(limit)}",
                  ok=f"{figures} is within {_seconds(limit)}")


def check_p99_latency_ratio(canary: Stats, stable: Stats, t: Thresholds) -> CheckResult:
    """Fails when the canary's p99 latency is more than ``max_p99_latency_ratio`` times the stable one's
    and more than :data:`RATIO_MIN_DIFFERENCE` above it.

    nginx logs latencies in whole milliseconds, so fast backends give p99s of
    1-3 ms whose ratios are noise (2 ms is "2x" 1 ms): hence the floor on the
    difference. With fewer than :data:`RATIO_MIN_SAMPLES` latency samples on
    a side, a p99 is just the slowest request, one hiccup; the ratio then
    compares the highest quantile the smaller side can tell, ``1 - 1/n`` for
    ``n`` samples (p95 for 20), the same quantile on both sides.

    Skipped (inconclusive, not blocking) with fewer than ``min_requests``
    stable requests, no stable latency samples or a stable quantile of 0 s (no
    ratio exists; ``p99_latency`` still bounds the canary).
    """
    name, limit = "p99_latency_ratio", t.max_p99_latency_ratio
    early = _too_few_canary(name, limit, canary, stable, t)
    if early is not None:
        return early
    if _p99(canary) is None:
        return _no_canary_latency(name, limit, canary, stable)
    early = _too_few_stable(name, limit, canary, stable, t)
    if early is not None:
        return early
    if not stable.latency.count:
        return CheckResult(name, INCONCLUSIVE, None, limit, canary.requests, stable.requests,
                           f"none of the {stable.requests} stable requests has a latency to compare against",
                           skipped=True)
    samples = min(canary.latency.count, stable.latency.count)
    q = 0.99 if samples >= RATIO_MIN_SAMPLES else 1.0 - 1.0 / samples
    label = "p99" if q == 0.99 else f"p{_quantile_label(q)}"
    note = "" if q == 0.99 else f" ({samples} samples: too few for a p99)"
    canary_q = _quantile(canary, q)
    stable_q = _quantile(stable, q)
    if stable_q <= 0.0:
        return CheckResult(name, INCONCLUSIVE, None, limit, canary.requests, stable.requests,
                           f"stable {label} latency is 0 s over {stable.latency.count} requests, no ratio to compare",
                           skipped=True)
    ratio = canary_q / stable_q
    figures = f"canary {label} latency {_seconds(canary_q)} is {_ratio(ratio)} stable's {_seconds(stable_q)}{note}"
    if canary_q - stable_q <= RATIO_MIN_DIFFERENCE:
        return CheckResult(name, PASS, ratio, limit, canary.requests, stable.requests,
                           f"{figures}, but only {_seconds(canary_q - stable_q)} slower, within the "
                           f"{_seconds(RATIO_MIN_DIFFERENCE)} a ratio ignores")
    return _judge(name, ratio, limit, canary, stable,
                  fail=f"{figures}, more than {_ratio(limit)}",
                  ok=f"{figures}, within {_ratio(limit)}")


def _quantile(stats: Stats, q: float) -> float:
    value = stats.latency.quantile(q)
    assert value is not None  # callers checked there are samples
    return round(value, 6)  # like the summary's figures, so that reasons and reports agree


def _quantile_label(q: float) -> str:
    return f"{q * 100:.1f}".rstrip("0").rstrip(".")


#: Every check :func:`~nginx_canary.rollout.analysis.evaluate` runs by default, in report order. A check
#: added here needs a triggering and a must-not-trigger fixture in tests/rollout/test_checks.py (a meta-test
#: enforces it).
CHECKS: Tuple[Check, ...] = (
    Check("error_rate", check_error_rate, "canary 5xx rate above max_error_rate"),
    Check("error_rate_increase", check_error_rate_increase,
          "canary 5xx rate more than max_error_rate_increase above stable's"),
    Check("p99_latency", check_p99_latency, "canary p99 latency above max_p99_latency"),
    Check("p99_latency_ratio", check_p99_latency_ratio,
          "canary p99 latency more than max_p99_latency_ratio times stable's"),
)


# --- figures and their text ---------------------------------------------------------


def _p99(stats: Stats) -> Optional[float]:
    # The summary's figure (rounded to µs), so that reasons and reports agree.
    return stats.summary()["p99"]


def _exceeds(value: float, limit: float) -> bool:
    """``value > limit``, not counting float noise from subtracting or dividing rates."""
    return value > limit and not math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12)


def _pct(fraction: float) -> str:
    return f"{_points(fraction)} %"


def _points(fraction: float) -> str:
    return percent_text(fraction * 100.0, keep_point=True)


def _seconds(seconds: float) -> str:
    return f"{number_text(seconds, 3, keep_point=True)} s"


def _ratio(ratio: float) -> str:
    return f"{number_text(ratio, 2, keep_point=True)}x"
