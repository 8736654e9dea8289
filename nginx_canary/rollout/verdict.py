"""What a judge returns: the verdict names, :class:`CheckResult`, :class:`Verdict`, and their JSON form.

A judge (:func:`nginx_canary.rollout.analysis.evaluate`) turns the figures of
one window into a :class:`Verdict`, which knows nothing of how it was reached:
another judge can return the same type. The rollout state keeps its
:meth:`Verdict.to_dict`; :meth:`Verdict.from_dict` is the strict inverse,
checking every key and type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)


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
                isinstance(k, str) and (v is None or is_finite_number(v)) for k, v in summary.items()
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


# --- reading the JSON form ------------------------------------------------------------


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool), neither infinite nor NaN."""
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
    if not is_finite_number(value):
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
