"""How long the demo app takes to answer: a fixed part, a uniform jitter and a lognormal long tail, all scalable.

Real services answer in a few milliseconds to tens of milliseconds with a long
tail; a lognormal is the usual model of that. It is set by its median and its
p99 (``sigma = ln(p99 / median) / z(0.99)``), which are the figures an operator
reads on a dashboard. Each draw is capped at :data:`TAIL_CAP` times the p99, so
that no request sleeps absurdly long however unlucky the generator is (the cap
cuts about 1 in 10**6 draws of the default shape). ``latency_scale`` multiplies
the whole delay: 3.0 makes a canary three times slower in every quantile while
it still answers 200.
"""

from __future__ import annotations

import math
import random

#: z-score of the 99th percentile of a standard normal.
Z99 = 2.3263478740408408
#: A lognormal draw never exceeds this many times the configured p99.
TAIL_CAP = 5.0


def lognormal_sigma(median: float, p99: float) -> float:
    """The lognormal shape whose p99 is ``p99`` for a median of ``median``.

    Raises ValueError unless 0 < median <= p99.
    """
    if not 0.0 < median <= p99:
        raise ValueError(f"the latency p99 must be at least the median, and the median above 0 "
                         f"(median {median!r}, p99 {p99!r})")
    return math.log(p99 / median) / Z99


class LatencyModel:
    """Draws request delays in seconds from one seeded generator (not thread-safe: callers hold a lock)."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def draw(self, fixed: float = 0.0, jitter: float = 0.0, median: float = 0.0, p99: float = 0.0,
             scale: float = 1.0) -> float:
        """``scale * (fixed + uniform(0, jitter) + lognormal(median, p99) capped at TAIL_CAP * p99)``.

        ``median`` 0 means no lognormal part; ``p99`` 0 with a median means a p99
        of 5x the median. Raises ValueError for a p99 below the median.
        """
        delay = fixed
        if jitter:
            delay += self._rng.uniform(0.0, jitter)
        if median:
            top = p99 or 5.0 * median
            sigma = lognormal_sigma(median, top)
            delay += min(median * math.exp(sigma * self._rng.gauss(0.0, 1.0)), TAIL_CAP * top)
        return scale * delay
