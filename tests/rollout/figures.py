"""Window figures for the rollout and judge tests: :class:`~nginx_canary.logs.window.Stats` made to order."""

from __future__ import annotations

from typing import Optional, Tuple

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


def counted(requests: int, errors: int = 0) -> Stats:
    """Stats of ``requests`` requests of 10 ms: ``errors`` of them answered 502, the rest 200."""
    result = Stats()
    if requests - errors:
        result.add(200, 0.01, count=requests - errors)
    if errors:
        result.add(502, 0.01, count=errors)
    return result


class SuppliedTraffic:
    """A rollout's traffic source with figures supplied directly: 2,000 canary requests
    (``canary_errors`` of them failed) beside 8,000 good stable ones, whatever the time."""

    def __init__(self) -> None:
        self.canary_errors = 0

    def begin_step(self, at: float) -> None:
        pass

    def evidence(self, now: float) -> Tuple[Stats, Stats]:
        return counted(2000, self.canary_errors), counted(8000)
