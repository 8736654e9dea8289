"""The weight arithmetic of a canary split (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import reduce
from math import gcd
from typing import List, Optional, Sequence, Tuple

from nginx_canary.errors import BadInputError
from nginx_canary.nginx.model import UpstreamServer

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


def compute_split(canary: Sequence[int], stable: Sequence[int], percent: Fraction, *,
                  origin: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> Split:
    """Weights giving the canary ``percent`` of the traffic.

    Weight ratios inside each group are kept; the result is reduced to the
    smallest integers, or is ``origin`` (each group's weights before any
    change) where those give the same split: 0 % after 10 % gives the stable
    servers back ``weight=90`` rather than ``weight=1``. nginx has no
    ``weight=0``, so 0 % marks the canary servers ``down`` and 100 % marks the
    stable servers ``down``.

    Raises:
        BadInputError: percent is outside 0..100, a group is empty where it must
            carry traffic, or a weight is not positive.
    """
    split = _smallest_split(canary, stable, percent)
    return split if origin is None else _as_origin(split, origin)


def _as_origin(split: Split, origin: Tuple[Sequence[int], Sequence[int]]) -> Split:
    """``split`` with a group's original weights wherever they keep its ratios and the canary's share."""
    canary = _same_ratios(split.canary_weights, origin[0])
    stable = _same_ratios(split.stable_weights, origin[1])
    if split.canary_down or split.stable_down:
        # A group that is down carries nothing: its weights never change the share.
        return Split(canary, stable, split.canary_down, split.stable_down)
    candidate = Split(canary, stable, canary_down=False, stable_down=False)
    return candidate if candidate.canary_percent() == split.canary_percent() else split


def _same_ratios(weights: Tuple[int, ...], original: Sequence[int]) -> Tuple[int, ...]:
    if len(original) == len(weights) and all(w >= 1 for w in original) \
            and reduce_weights(list(original)) == reduce_weights(list(weights)):
        return tuple(original)
    return weights


def steered_stable(upstream: str, stable: Sequence[UpstreamServer], resting: Sequence[bool],
                   percent: Fraction) -> List[UpstreamServer]:
    """The stable servers a split steers: all but the resting ones (``down`` before nginx-canary changed anything).

    A resting server keeps its ``down`` and stays out of the arithmetic (an
    operator's maintenance); naming it with ``--canary`` is the way to give it traffic.

    Raises:
        BadInputError: every stable server rests and ``percent`` needs stable traffic.
    """
    steered = [server for server, rests in zip(stable, resting) if not rests]
    if stable and not steered and percent < 100:
        names = ", ".join(s.address for s in stable)
        raise BadInputError(
            f"every stable server of upstream {upstream!r} was down before nginx-canary changed it ({names}); "
            f"{float(percent):g} % leaves traffic for them: take `down` off one by hand, or name it with --canary"
        )
    return steered


def _smallest_split(canary: Sequence[int], stable: Sequence[int], percent: Fraction) -> Split:
    """The split in the smallest integers (see :func:`compute_split`, which raises the same)."""
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
