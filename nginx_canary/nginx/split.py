"""The weight arithmetic of a canary split (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import reduce
from math import gcd
from typing import List, Sequence, Tuple

from nginx_canary.errors import BadInputError

# For a share with decimals, the smallest weights whose share is this close
# (in percentage points) win over exact but unreadable ones like 3333:6667.
FRACTIONAL_TOLERANCE_POINTS = Fraction(5, 1000)


@dataclass(frozen=True)
class Split:
    """New weights and ``down`` flags for each group, in the order given."""

    canary_weights: Tuple[int, ...]
    stable_weights: Tuple[int, ...]
    canary_down: bool
    stable_down: bool

    def canary_percent(self) -> Fraction:
        """The canary's share of traffic this split gives, in percent."""
        canary = 0 if self.canary_down else sum(self.canary_weights)
        stable = 0 if self.stable_down else sum(self.stable_weights)
        return Fraction(100 * canary, canary + stable)


def reduce_weights(weights: Sequence[int]) -> List[int]:
    """Divide weights by their greatest common divisor."""
    divisor = reduce(gcd, weights, 0) or 1
    return [w // divisor for w in weights]


def _multipliers(canary_sum: int, stable_sum: int, share: Fraction) -> Tuple[int, int]:
    """Smallest (k, m) with k*C / (k*C + m*S) == share, or close enough when share has decimals."""
    exact = share * stable_sum / ((1 - share) * canary_sum)
    if (share * 100).denominator == 1:
        return exact.numerator, exact.denominator
    tolerance = FRACTIONAL_TOLERANCE_POINTS / 100
    ratio = float(exact)
    for m in range(1, exact.denominator):
        k = max(1, round(ratio * m))
        got = Fraction(k * canary_sum, k * canary_sum + m * stable_sum)
        if abs(got - share) <= tolerance:
            return k, m
    return exact.numerator, exact.denominator


def compute_split(canary: Sequence[int], stable: Sequence[int], percent: Fraction) -> Split:
    """Weights giving the canary ``percent`` of the traffic.

    Weight ratios inside each group are kept; the result is reduced to the
    smallest integers. nginx has no ``weight=0``, so 0 % marks the canary
    servers ``down`` and 100 % marks the stable servers ``down``.

    Raises:
        BadInputError: percent is outside 0..100, a group is empty where it must
            carry traffic, or a weight is not positive.
    """
    if not 0 <= percent <= 100:
        raise BadInputError(f"percent must be between 0 and 100, not {float(percent):g}")
    if not canary:
        raise BadInputError("at least one canary server is needed")
    if any(w < 1 for w in list(canary) + list(stable)):
        raise BadInputError("weights must be positive integers")
    canary_base = reduce_weights(canary)
    stable_base = reduce_weights(stable) if stable else []
    if percent == 100:
        return Split(tuple(canary_base), tuple(stable), canary_down=False, stable_down=bool(stable))
    if not stable:
        raise BadInputError(
            f"the upstream has no stable (non-canary, non-backup) servers, so only 100 % can go to the canary, not {float(percent):g} %"
        )
    if percent == 0:
        return Split(tuple(canary), tuple(stable_base), canary_down=True, stable_down=False)
    k, m = _multipliers(sum(canary_base), sum(stable_base), percent / 100)
    weights = reduce_weights([k * w for w in canary_base] + [m * w for w in stable_base])
    return Split(
        tuple(weights[: len(canary_base)]),
        tuple(weights[len(canary_base):]),
        canary_down=False,
        stable_down=False,
    )
