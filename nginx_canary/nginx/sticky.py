"""Sticky canary splits: weights for upstreams balanced with ``hash KEY consistent``.

On nginx's consistent-hash ring (see :mod:`nginx_canary.nginx.chash`) a
server's points depend only on its name and weight, and a larger weight keeps
every point of a smaller one. So if, across a rollout's steps, the canary's
weights never shrink and the stable servers' never grow, every key that once
reached the canary keeps reaching it: the canary only gains points, the
stable servers only lose theirs. A fixed total of :data:`STICKY_TOTAL` units
gives that (canary = round(share x total)) and enough points
(160 x 1000) for the ring's share to be within a few tenths of a point of the
target; the reduced weights of :func:`~nginx_canary.nginx.split.compute_split`
(10 % -> 1:9) give neither.
"""

from __future__ import annotations

from fractions import Fraction
from typing import List, Optional, Sequence

from nginx_canary.errors import BadInputError
from nginx_canary.nginx.model import Upstream
from nginx_canary.nginx.split import Split

#: Weight units shared by the canary and the live stable servers. nginx allocates 160 points of
#: 16 bytes per unit (2.5 MB for the upstream) and hashes them at each reload (a few ms).
STICKY_TOTAL = 1000


def consistent_hash_key(upstream: Upstream) -> Optional[str]:
    """The KEY of the upstream's ``hash KEY consistent``; None when it has no such directive."""
    args = upstream.hash_args
    if args is not None and len(args) == 2 and args[1] == "consistent":
        return args[0]
    return None


def require_consistent_hash(upstream: Upstream) -> str:
    """The KEY of the upstream's ``hash KEY consistent``, for a rollout that asks for ``sticky: true``.

    Raises:
        BadInputError: the upstream has no ``hash ... consistent``; the message says what to add.
    """
    key = consistent_hash_key(upstream)
    if key is not None:
        return key
    has = f"has 'hash {' '.join(upstream.hash_args)}' (not consistent)" if upstream.hash_args else "has no hash directive"
    raise BadInputError(
        f"sticky needs 'hash KEY consistent;' in upstream {upstream.name!r} ({upstream.location}), which {has}: "
        "add e.g. 'hash $cookie_uid$remote_addr consistent;' to the block, or set sticky: false")


def apportion(total: int, base: Sequence[int]) -> List[int]:
    """Split ``total`` units over servers in proportion to ``base``, each getting at least 1.

    Units go one at a time to the server with the highest ``base / (given + 1/2)``
    (Sainte-Lague), ties to the earlier server, so the result for ``total`` is
    the first ``total`` picks of one fixed sequence: a larger total never gives
    any server less, and ``apportion(sum(base), base) == base``.

    Raises:
        BadInputError: fewer units than servers, or a base weight below 1.
    """
    if any(b < 1 for b in base):
        raise BadInputError("weights must be positive integers")
    if total < len(base):
        raise BadInputError(f"{total} weight units cannot give each of {len(base)} servers one")
    given = [1] * len(base)
    for _ in range(total - len(base)):
        # base[i] / (given[i] + 1/2) compared without division: base[i] * (2 given[j] + 1).
        best = 0
        for i in range(1, len(base)):
            if base[i] * (2 * given[best] + 1) > base[best] * (2 * given[i] + 1):
                best = i
        given[best] += 1
    return given


def sticky_split(canary: Sequence[int], stable: Sequence[int], percent: Fraction, total: int = STICKY_TOTAL) -> Split:
    """Weights giving the canary ``percent`` of a consistent-hash upstream, out of ``total`` units.

    The canary gets ``round(percent x total)`` units (at least one per canary
    server, at most ``total`` less one per stable server), the stable servers
    the rest; each group's units follow its current weights' ratios
    (:func:`apportion`). Over any rising sequence of percents the canary's
    weights never shrink and the stable servers' never grow once the group
    totals are the split's (see the module docstring). 0 % marks the canary
    servers ``down`` and 100 % the stable ones, weights as they are, like
    :func:`~nginx_canary.nginx.split.compute_split`.

    Raises:
        BadInputError: percent is outside 0..100, a group is empty where it must
            carry traffic, a weight is not positive, or there are more servers than units.
    """
    if not 0 <= percent <= 100:
        raise BadInputError(f"percent must be between 0 and 100, not {float(percent):g}")
    if not canary:
        raise BadInputError("at least one canary server is needed")
    if any(w < 1 for w in list(canary) + list(stable)):
        raise BadInputError("weights must be positive integers")
    if len(canary) + len(stable) > total:
        raise BadInputError(f"a sticky split has {total} weight units, too few for {len(canary) + len(stable)} servers")
    if percent == 100:
        units = total if not stable else total - len(stable)
        return Split(tuple(apportion(units, canary)), tuple(stable), canary_down=False, stable_down=bool(stable))
    if not stable:
        raise BadInputError(
            f"the upstream has no stable (non-canary, non-backup) servers, so only 100 % can go to the canary, not {float(percent):g} %"
        )
    if percent == 0:
        return Split(tuple(canary), tuple(apportion(total, stable)), canary_down=True, stable_down=False)
    units = round(percent * total / 100)
    units = min(max(units, len(canary)), total - len(stable))
    return Split(tuple(apportion(units, canary)), tuple(apportion(total - units, stable)),
                 canary_down=False, stable_down=False)
