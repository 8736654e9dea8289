"""What the demo app does with the next request: its settings, their validation, and which requests fail.

Injected errors are deterministic, not random: after ``n`` requests since
``error_rate`` was last set, exactly ``floor(n * error_rate)`` have answered 500,
spread evenly (rate 0.5 fails every 2nd request, 0.3 fails the 4th, 7th, 10th,
...; the rate is used as a fraction with a denominator of at most 10**6). Tests
can therefore assert exact counts.

Latency settings (seconds) feed :class:`~nginx_canary.demo.latency.LatencyModel`:
``latency`` fixed, ``latency_jitter`` uniform on top, ``latency_median`` and
``latency_p99`` a capped lognormal tail on top (median 0: none; p99 0: five
times the median); ``latency_scale`` multiplies the sum.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from typing import Any, Dict, Mapping

MAX_LATENCY = 60.0
MAX_LATENCY_SCALE = 100.0
_VERSION_RE = re.compile(r"[\x21-\x7e]{1,64}")  # visible ASCII: safe in a header and a body line


@dataclass(frozen=True)
class Settings:
    """What the app does with the next request."""

    version: str = "v1"
    error_rate: float = 0.0
    latency: float = 0.0
    latency_jitter: float = 0.0
    latency_median: float = 0.0
    latency_p99: float = 0.0
    latency_scale: float = 1.0
    healthy: bool = True


SETTING_NAMES = frozenset(f.name for f in fields(Settings))


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, not {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, not {value!r}")
    return value


def apply_changes(base: Settings, changes: Mapping[str, Any]) -> Settings:
    """``base`` with ``changes`` applied, validated.

    Raises ValueError for an unknown key or a bad value (the message names it).
    """
    unknown = sorted(set(changes) - SETTING_NAMES)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(SETTING_NAMES))}")
    clean: Dict[str, Any] = {}
    for name, value in changes.items():
        if name == "version":
            if not isinstance(value, str) or not _VERSION_RE.fullmatch(value):
                raise ValueError(f"version must be 1-64 visible ASCII characters, not {value!r}")
            clean[name] = value
        elif name == "healthy":
            if not isinstance(value, bool):
                raise ValueError(f"healthy must be true or false, not {value!r}")
            clean[name] = value
        elif name == "error_rate":
            clean[name] = _number(name, value, 0.0, 1.0)
        elif name == "latency_scale":
            clean[name] = _number(name, value, 0.0, MAX_LATENCY_SCALE)
        else:
            clean[name] = _number(name, value, 0.0, MAX_LATENCY)
    new = replace(base, **clean)
    if new.latency_p99 and new.latency_p99 < new.latency_median:
        raise ValueError(f"latency_p99 ({new.latency_p99:g}) must be at least latency_median "
                         f"({new.latency_median:g}), or 0 for five times the median")
    return new


class ErrorPattern:
    """Decides which requests fail so that exactly ``floor(n * rate)`` of the first ``n`` do (not thread-safe)."""

    def __init__(self, rate: float) -> None:
        self._rate = Fraction(rate).limit_denominator(10**6)
        self._seen = 0

    def next_fails(self) -> bool:
        self._seen += 1
        n, num, den = self._seen, self._rate.numerator, self._rate.denominator
        return (n * num) // den > ((n - 1) * num) // den
