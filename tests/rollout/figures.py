"""Window figures for the judge's tests: :class:`~nginx_canary.logs.window.Stats` made to order."""

from __future__ import annotations

from typing import Optional

from nginx_canary.logs.window import Stats


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
