"""Always-valid sequential tests on counts: the statistics under the judge (rollout/judge.py).

Every question the judge asks is one about a rate: the share of canary
requests answered with a 5xx, the share slower than a latency, the share of
all 5xx that came from the canary. Each is answered by one tool, a test of a
Bernoulli rate ``p`` against a fixed value ``p0`` whose evidence is an
*e-value*: a mixture of likelihood ratios over alternatives on one side of
``p0``,

    E(n, k) = mean over the grid of  (p/p0)**k * ((1-p)/(1-p0))**(n-k),

after ``k`` "bad" outcomes in ``n`` trials. Under the null (``p <= p0`` for
:func:`log_evidence_above`) each ratio, and so the mixture, is a nonnegative
supermartingale in ``n`` whatever the order of the outcomes; by Ville's
inequality the chance that it *ever* reaches ``1/alpha`` is at most
``alpha``. So the test may be looked at after every request, every 250 ms or
at random moments, as often as one likes, and its false-alarm rate stays
below ``alpha``: this is what makes it *always valid*, where a fixed-sample
test repeated at every check rolls back more healthy canaries the more often
it looks (the multiple-testing trap of threshold checks on point estimates).

Why this family (and not a normal-approximation mSPRT on a difference of two
rates, Optimizely's and Netflix's published workhorse): it is exact at any
count, including the few requests at the start of a step where the normal
approximation is worst and where a canary broken from its first request has
to be caught; it needs no variance estimate; and its value depends only on
cumulative counts, which merge across hosts. The price of the grid (a
``log(len(grid))`` in the threshold) is a few percent of power. The two-group
comparison uses the *conditional* test of Netflix's counting-process work
(Lindon et al., "Rapid regression detection in software deployments through
sequential testing", 2022): given that a 5xx happened, it came from the
canary with probability ``n_c / (n_c + n_s)`` if the two groups fail at the
same rate, more if the canary is worse, so the canary's share of the 5xx is
one more Bernoulli rate. Confidence bounds (a rate's, a quantile's) are the
tests inverted.

Pure functions, no I/O; counts are plain integers.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

from nginx_canary.logs.sketch import LatencySketch

#: The alternatives of the mixture, as fractions of the way from ``p0`` to 1 (above) or to 0 (below).
#: From 0.5 % (a small excess seen over many requests) to 95 % (a canary broken from its first request).
GRID: Tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 0.95)
_LOG_WEIGHT = -math.log(len(GRID))
# Precomputed per grid point: log(1 - g), the "below" side's factor on bad outcomes and the "above" side's on good.
_LOG_1MG = tuple(math.log1p(-g) for g in GRID)

_BISECT_STEPS = 40


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def _logsumexp(values: Tuple[float, ...]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def log_evidence_above(n: int, k: int, p0: float) -> float:
    """log of the e-value against "the rate is at most ``p0``" after ``k`` bad outcomes in ``n`` trials.

    0 with no trials; +inf when ``p0`` is 0 and a bad outcome was seen. Raises
    ValueError unless ``0 <= k <= n`` and ``0 <= p0 <= 1``.
    """
    _check(n, k, p0)
    if n == 0 or p0 >= 1.0:
        return 0.0
    if p0 <= 0.0:
        return math.inf if k > 0 else 0.0
    good = n - k
    log_p0 = math.log(p0)
    terms = []
    for g, log_1mg in zip(GRID, _LOG_1MG):
        p = p0 + (1.0 - p0) * g
        # (1 - p) / (1 - p0) == 1 - g exactly: no rounding where p nears 1.
        terms.append(k * (math.log(p) - log_p0) + good * log_1mg)
    return _logsumexp(tuple(terms)) + _LOG_WEIGHT


def log_evidence_below(n: int, k: int, p0: float) -> float:
    """log of the e-value against "the rate is at least ``p0``" after ``k`` bad outcomes in ``n`` trials.

    0 with no trials; +inf when ``p0`` is 1 and a good outcome was seen.
    Raises ValueError unless ``0 <= k <= n`` and ``0 <= p0 <= 1``.
    """
    _check(n, k, p0)
    if n == 0 or p0 <= 0.0:
        return 0.0
    if p0 >= 1.0:
        return math.inf if k < n else 0.0
    good = n - k
    log_q0 = math.log1p(-p0)
    terms = []
    for g, log_1mg in zip(GRID, _LOG_1MG):
        p = p0 * (1.0 - g)
        terms.append(k * log_1mg + good * (math.log1p(-p) - log_q0))
    return _logsumexp(tuple(terms)) + _LOG_WEIGHT


def upper_bound(n: int, k: int, alpha: float) -> float:
    """An always-valid upper confidence bound of the rate after ``k`` of ``n``: below it with chance >= 1 - alpha.

    The largest ``p0`` that :func:`log_evidence_below` has not refuted at
    ``alpha`` (its evidence grows with ``p0``); 1.0 with no trials.
    """
    _check(n, k, 0.5)
    if n == 0 or k == n:
        return 1.0
    goal = -math.log(alpha)
    # The bracket's upper end: the bound errs on the wide side.
    return _crossing(lambda p0: log_evidence_below(n, k, p0) - goal, k / n, 1.0)[1]


def lower_bound(n: int, k: int, alpha: float) -> float:
    """An always-valid lower confidence bound of the rate after ``k`` of ``n`` (see :func:`upper_bound`)."""
    _check(n, k, 0.5)
    if n == 0 or k == 0:
        return 0.0
    goal = -math.log(alpha)
    # The bracket's lower end: the bound errs on the wide side.
    return _crossing(lambda p0: goal - log_evidence_above(n, k, p0), 0.0, k / n)[0]


def _crossing(rising, low: float, high: float) -> Tuple[float, float]:  # type: ignore[no-untyped-def]
    """A bracket, 1e-9 wide at most, of where the non-decreasing ``rising`` crosses 0 in [low, high].

    Illinois false position: a few evaluations where bisection takes forty.
    ``(low, low)`` when it is already >= 0 at ``low``, ``(high, high)`` when it stays below 0.
    """
    def clamped(x: float) -> float:
        return max(-1e9, min(1e9, rising(x)))

    f_low, f_high = clamped(low), clamped(high)
    if f_low >= 0:
        return low, low
    if f_high < 0:
        return high, high
    side = 0
    for step in range(_BISECT_STEPS):
        if high - low <= 1e-9:
            break
        # Halve first: far from the crossing the evidence is steep and a secant lands badly.
        middle = (low + high) / 2 if step < 6 else high - f_high * (high - low) / (f_high - f_low)
        if not low < middle < high:
            middle = (low + high) / 2
        f_middle = clamped(middle)
        if f_middle >= 0:
            high, f_high = middle, f_middle
            if side == 1:
                f_low /= 2
            side = 1
        else:
            low, f_low = middle, f_middle
            if side == -1:
                f_high /= 2
            side = -1
    return low, high


def log_tail_at_least(n: int, k: int, p0: float) -> float:
    """log of P(K >= k) for K ~ Binomial(n, p0): the p-value of ``k`` bad outcomes in ``n`` against "at most p0".

    Exact (summed in log space from ``k`` up, until the terms no longer count).
    For the one planned look of a group-sequential design, not for repeated
    looks. Raises ValueError unless ``0 <= k <= n`` and ``0 <= p0 <= 1``.
    """
    _check(n, k, p0)
    if k == 0:
        return 0.0
    if p0 <= 0.0:
        return -math.inf
    if p0 >= 1.0:
        return 0.0
    log_p, log_q = math.log(p0), math.log1p(-p0)
    log_n = math.lgamma(n + 1)
    total = -math.inf
    for j in range(k, n + 1):
        term = log_n - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q
        total = _logaddexp(total, term)
        if j > n * p0 and term < total - 40:
            break  # past the mode the terms only shrink: the rest cannot move the sum
    return min(0.0, total)


def log_evidence_share_above(canary_bad: int, stable_bad: int, canary_n: int, stable_n: int,
                             ratio: float = 1.0) -> float:
    """log e-value against "the canary's rate is at most ``ratio`` times stable's", from the bad outcomes' split.

    Given the exposure (``canary_n``, ``stable_n`` trials), each bad outcome
    is the canary's with probability at most ``ratio*n_c / (ratio*n_c + n_s)``
    under that null (exact for Poisson counts, conservative for binomial ones).
    0 when either group has no trials. Raises ValueError for negative counts
    or a ratio that is not positive.
    """
    if min(canary_bad, stable_bad, canary_n, stable_n) < 0 or not ratio > 0:
        raise ValueError("counts must be non-negative and ratio positive")
    if canary_n == 0 or stable_n == 0:
        return 0.0
    share = ratio * canary_n / (ratio * canary_n + stable_n)
    return log_evidence_above(canary_bad + stable_bad, canary_bad, share)


def trials_needed(n: int, k: int, p0: float, alpha: float, *, below: bool, limit: int = 10**9) -> Optional[int]:
    """How many trials in all, at the rate seen so far (``k/n``), until the test of ``p0`` decides at ``alpha``.

    For the "below" test (showing the rate under ``p0``) or the "above" one.
    None when it never would at this rate (the rate is on the other side of
    ``p0``) or not within ``limit`` trials; ``n`` when it already has.
    """
    if n == 0:
        return None
    rate = k / n
    if (below and rate >= p0) or (not below and rate <= p0):
        return None
    goal = -math.log(alpha)
    test = log_evidence_below if below else log_evidence_above

    def decided(total: int) -> bool:
        return test(total, min(total, round(rate * total)), p0) >= goal

    if decided(n):
        return n
    high = n
    while not decided(high):
        high *= 2
        if high > limit:
            return None
    low = high // 2
    while high - low > max(1, low // 100):
        middle = (low + high) // 2
        if decided(middle):
            high = middle
        else:
            low = middle
    return high


def quantile_upper_bound(sketch: LatencySketch, q: float, alpha: float) -> Optional[float]:
    """A value the ``q``-quantile of the distribution the sketch samples is at most, with chance >= 1 - alpha.

    The order statistic above which the share of values is, with that
    confidence, at most ``1 - q`` (the bin's upper edge: conservative). None
    when there are too few values to bound it.
    """
    n = sketch.count
    if n == 0:
        return None
    goal = -math.log(alpha)
    # The most values above the bound that still show their share to be under 1 - q.
    most = _largest_count(n, lambda above: log_evidence_below(n, above, 1.0 - q) >= goal)
    if most is None:
        return None
    bounds = sketch.rank_bounds(n - 1 - most)
    return None if bounds is None else bounds[1]


def _largest_count(n: int, holds) -> Optional[int]:  # type: ignore[no-untyped-def]
    """The largest c in 0..n for which ``holds(c)`` (true for small c, false for large), or None."""
    if not holds(0):
        return None
    low, high = 0, n
    if holds(high):
        return high
    while high - low > 1:
        middle = (low + high) // 2
        if holds(middle):
            low = middle
        else:
            high = middle
    return low


def _check(n: int, k: int, p0: float) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, not k={k!r}, n={n!r}")
    if not 0.0 <= p0 <= 1.0:
        raise ValueError(f"p0 must be between 0 and 1, not {p0!r}")
