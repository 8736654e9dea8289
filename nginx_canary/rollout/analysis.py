"""Thresholds + windows -> a verdict with reasons. No I/O, no clock: time is passed in.

Every ``analysis.interval`` the rollout engine hands :func:`evaluate` the stats
of the canary and of the stable group over the last ``window`` seconds. Each
check in :data:`CHECKS` turns them into a :class:`CheckResult`; the results
make one :class:`Verdict`:

``fail``
    at least one check failed.
``inconclusive``
    nothing failed, but the canary gave too little evidence: fewer than
    ``min_requests`` requests in the window (every check then says so), or
    requests without a single latency sample (the latency checks say so).
``pass``
    everything else. A *skipped* check does not stand in the way: see below.

Rules for thin data (chosen so that a decision is never taken on evidence that
is not there, and a canary is never judged on a baseline that is not there):

* Canary below ``min_requests``: every check is ``inconclusive`` ("only N
  canary requests in the window, need M") and so is the verdict. It neither
  fails nor passes the step.
* Stable below ``min_requests`` (at the 100 % step the stable group receives
  no traffic at all), or stable without latency samples, or a stable p99 of
  0 s: the two *relative* checks (``error_rate_increase``,
  ``p99_latency_ratio``) have no baseline. They are ``inconclusive`` with
  ``skipped=True`` and say why; the verdict can still pass, on the *absolute*
  checks (``error_rate``, ``p99_latency``), which need no baseline and are
  always applied to the canary. Comparing against an assumed perfect
  baseline (0 % errors) instead would silently replace ``max_error_rate`` by
  the much tighter ``max_error_rate_increase`` exactly at the last step, and
  roll back a healthy release that behaves like the stable one did; refusing
  to pass without a baseline would make the 100 % step impossible to pass.

Limits are exclusive: a value equal to its threshold passes (within float
noise: ``0.07 - 0.05`` is not "more than" ``0.02``).

:class:`FailureCounter` turns a series of verdicts into the rollback decision:
consecutive failures count, a pass resets, inconclusive does neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from nginx_canary.domain import number_text, percent_text
from nginx_canary.logs.window import Stats

#: The p99 ratio check ignores a canary p99 at most this much above stable's (seconds)...
RATIO_MIN_DIFFERENCE = 0.025
#: ...and compares p99s from this many latency samples per side on (with fewer, a p99 is the maximum,
#: so the highest quantile the samples can tell, 1 - 1/n, is compared instead).
RATIO_MIN_SAMPLES = 100

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)


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
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, not {value!r}")
        for name in ("max_p99_latency", "max_p99_latency_ratio"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, not {value!r}")

    @classmethod
    def from_settings(cls, obj: Any) -> "Thresholds":
        """The thresholds held by ``obj``'s attributes of the same names (e.g. ``AnalysisSettings``).

        Raises AttributeError when one is missing, ValueError when one is invalid.
        """
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class CheckResult:
    """What one check found.

    ``value`` is the figure compared with ``threshold`` (a fraction, a
    difference of fractions, seconds or a ratio), None when it could not be
    computed. ``skipped`` marks an ``inconclusive`` result that had no stable
    baseline to compare with: it is reported but does not hold the verdict back.
    ``reason`` is one sentence with the numbers.
    """

    name: str
    verdict: str
    value: Optional[float]
    threshold: float
    canary_requests: int
    stable_requests: int
    reason: str
    skipped: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "value": self.value,
            "threshold": self.threshold,
            "canary_requests": self.canary_requests,
            "stable_requests": self.stable_requests,
            "reason": self.reason,
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CheckResult":
        """The inverse of :meth:`to_dict`. Raises ValueError for missing, unknown or mistyped keys."""
        _exact_keys(data, ("name", "verdict", "value", "threshold", "canary_requests",
                           "stable_requests", "reason", "skipped"), "check result")
        result = cls(
            name=_typed(data, "name", str),
            verdict=_verdict(data["verdict"]),
            value=None if data["value"] is None else _number(data, "value"),
            threshold=_number(data, "threshold"),
            canary_requests=_count(data, "canary_requests"),
            stable_requests=_count(data, "stable_requests"),
            reason=_typed(data, "reason", str),
            skipped=_typed(data, "skipped", bool),
        )
        return result


@dataclass(frozen=True)
class Verdict:
    """The outcome of one analysis: the overall verdict, why, every check, and the figures behind them.

    ``canary`` and ``stable`` are ``Stats.summary()`` dicts; ``at`` is the time
    (seconds since the epoch) the window ended.
    """

    verdict: str
    checks: Tuple[CheckResult, ...]
    reason: str
    canary: Dict[str, Optional[float]]
    stable: Dict[str, Optional[float]]
    at: float

    @property
    def failed(self) -> Tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.verdict == FAIL)

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-serialisable data (dicts, lists, str, int, float, bool, None)."""
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "at": self.at,
            "canary": dict(self.canary),
            "stable": dict(self.stable),
            "checks": [check.to_dict() for check in self.checks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verdict":
        """The inverse of :meth:`to_dict`. Raises ValueError for missing, unknown or mistyped keys."""
        _exact_keys(data, ("verdict", "reason", "at", "canary", "stable", "checks"), "verdict")
        checks = data["checks"]
        if not isinstance(checks, list) or not all(isinstance(c, Mapping) for c in checks):
            raise ValueError("verdict: 'checks' must be a list of objects")
        summaries = {}
        for side in ("canary", "stable"):
            summary = data[side]
            if not isinstance(summary, Mapping) or not all(
                isinstance(k, str) and (v is None or _is_number(v)) for k, v in summary.items()
            ):
                raise ValueError(f"verdict: {side!r} must be an object of numbers")
            summaries[side] = dict(summary)
        return cls(
            verdict=_verdict(data["verdict"]),
            checks=tuple(CheckResult.from_dict(c) for c in checks),
            reason=_typed(data, "reason", str),
            canary=summaries["canary"],
            stable=summaries["stable"],
            at=_number(data, "at"),
        )


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


#: Every check :func:`evaluate` runs, in report order. A check added here needs a
#: triggering and a must-not-trigger fixture in tests/rollout/test_analysis.py (a meta-test enforces it).
CHECKS: Tuple[Check, ...] = (
    Check("error_rate", check_error_rate, "canary 5xx rate above max_error_rate"),
    Check("error_rate_increase", check_error_rate_increase,
          "canary 5xx rate more than max_error_rate_increase above stable's"),
    Check("p99_latency", check_p99_latency, "canary p99 latency above max_p99_latency"),
    Check("p99_latency_ratio", check_p99_latency_ratio,
          "canary p99 latency more than max_p99_latency_ratio times stable's"),
)


def evaluate(
    canary: Stats,
    stable: Stats,
    thresholds: Thresholds,
    at: float,
    checks: Tuple[Check, ...] = CHECKS,
) -> Verdict:
    """Run ``checks`` on the canary and stable stats of one window ending at ``at``.

    The verdict is ``fail`` if any check fails, else ``inconclusive`` if any
    check is inconclusive for lack of canary evidence (not merely skipped for
    lack of a stable baseline), else ``pass``. The reason names the failing
    checks, or says what evidence is missing, or which checks were skipped.
    """
    results = tuple(check(canary, stable, thresholds) for check in checks)
    failed = [r for r in results if r.verdict == FAIL]
    waiting = [r for r in results if r.verdict == INCONCLUSIVE and not r.skipped]
    skipped = [r for r in results if r.verdict == INCONCLUSIVE and r.skipped]
    if failed:
        verdict = FAIL
        reason = f"{len(failed)} of {len(results)} checks failed: " + "; ".join(
            f"{r.name}: {r.reason}" for r in failed
        )
    elif waiting:
        verdict = INCONCLUSIVE
        # Below min_requests every check gives the same sentence: say it once.
        reason = "; ".join(_unique(r.reason for r in waiting))
    else:
        verdict = PASS
        passed = len(results) - len(skipped)
        if not skipped:
            reason = f"all {passed} checks passed"
        else:
            reason = f"{passed} of {len(results)} checks passed; skipped without a stable baseline: " + "; ".join(
                f"{r.name}: {r.reason}" for r in skipped
            )
    return Verdict(verdict, results, reason, canary.summary(), stable.summary(), at)


# --- rollback decision ---------------------------------------------------------


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


# --- helpers -----------------------------------------------------------------------


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


def _unique(items: Iterable[str]) -> List[str]:
    seen: Dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _exact_keys(data: Any, keys: Tuple[str, ...], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be an object, not {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    unknown = sorted(str(k) for k in data if k not in keys)
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(repr(k) for k in missing))
        if unknown:
            parts.append("unknown " + ", ".join(repr(k) for k in unknown))
        raise ValueError(f"{what}: " + "; ".join(parts))


def _typed(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind):
        raise ValueError(f"{key!r} must be a {kind.__name__}, not {value!r}")
    return value


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data[key]
    if not _is_number(value):
        raise ValueError(f"{key!r} must be a finite number, not {value!r}")
    return float(value)


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key!r} must be a non-negative integer, not {value!r}")
    return value


def _verdict(value: Any) -> str:
    if not isinstance(value, str) or value not in VERDICTS:
        raise ValueError(f"unknown verdict {value!r}; expected one of {', '.join(VERDICTS)}")
    return value
