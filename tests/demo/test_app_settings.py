"""The demo app's settings: the deterministic error pattern, the latency settings' validation."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from nginx_canary.demo.app_settings import ErrorPattern, Settings, apply_changes


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.1, 0.25, 1 / 3, 0.5, 0.7, 0.999, 1.0])
def test_error_pattern_keeps_floor_n_times_rate_at_every_step(rate):
    pattern, failed, exact = ErrorPattern(rate), 0, Fraction(rate).limit_denominator(10**6)
    for n in range(1, 2001):
        failed += pattern.next_fails()
        assert failed == math.floor(n * exact)


def test_error_rate_half_fails_every_second_request():
    pattern = ErrorPattern(0.5)
    assert [pattern.next_fails() for _ in range(6)] == [False, True] * 3


def test_latency_settings_are_validated():
    s = apply_changes(Settings(), {"latency_median": 0.02, "latency_p99": 0.1, "latency_scale": 3})
    assert (s.latency_median, s.latency_p99, s.latency_scale) == (0.02, 0.1, 3.0)
    assert apply_changes(s, {"latency_p99": 0}).latency_p99 == 0.0  # 0: five times the median
    for bad in ({"latency_scale": -1}, {"latency_scale": 101}, {"latency_median": 61}, {"latency_p99": "x"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            apply_changes(s, bad)
    with pytest.raises(ValueError, match="latency_p99 .* at least latency_median"):
        apply_changes(s, {"latency_p99": 0.01})
