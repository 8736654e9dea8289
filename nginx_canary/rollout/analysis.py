"""The judge: the figures of one window -> a :class:`~nginx_canary.rollout.verdict.Verdict` with reasons.

No I/O, no clock: time is passed in. Every ``analysis.interval`` the rollout
engine hands :func:`evaluate` the stats of the canary and of the stable group
over the last ``window`` seconds. Each check (by default
:data:`~nginx_canary.rollout.checks.CHECKS`) turns them into a
:class:`~nginx_canary.rollout.verdict.CheckResult`; the results make one verdict:

``fail``
    at least one check failed.
``inconclusive``
    nothing failed, but the canary gave too little evidence: fewer than
    ``min_requests`` requests in the window (every check then says so), or
    requests without a single latency sample (the latency checks say so).
``pass``
    everything else. A *skipped* check (no stable baseline to compare with,
    see :mod:`nginx_canary.rollout.checks`) does not stand in the way: the
    verdict can still pass on the absolute checks.

The judge knows nothing of hosts: the figures it takes are mergeable, so
several hosts' figures can be pooled into one call.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

from nginx_canary.logs.window import Stats
from nginx_canary.rollout.checks import CHECKS, Check, Thresholds
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, Verdict


def evaluate(
    canary: Stats,
    stable: Stats,
    thresholds: Thresholds,
    at: float,
    checks: Tuple[Check, ...] = CHECKS,
) -> Verdict:
    """Run ``checks`` on the canary and stable stats of one window ending at ``at``.

    The verdict is ``fail`` if any check fails, else ``inconclusive`` if any
    check is inconclusive for lack of canary evidence (not merely skipped for
    lack of a stable baseline), else ``pass``. The reason names the failing
    checks, or says what evidence is missing, or which checks were skipped.
    """
    results = tuple(check(canary, stable, thresholds) for check in checks)
    failed = [r for r in results if r.verdict == FAIL]
    waiting = [r for r in results if r.verdict == INCONCLUSIVE and not r.skipped]
    skipped = [r for r in results if r.verdict == INCONCLUSIVE and r.skipped]
    if failed:
        verdict = FAIL
        reason = f"{len(failed)} of {len(results)} checks failed: " + "; ".join(
            f"{r.name}: {r.reason}" for r in failed
        )
    elif waiting:
        verdict = INCONCLUSIVE
        # Below min_requests every check gives the same sentence: say it once.
        reason = "; ".join(_unique(r.reason for r in waiting))
    else:
        verdict = PASS
        passed = len(results) - len(skipped)
        if not skipped:
            reason = f"all {passed} checks passed"
        else:
            reason = f"{passed} of {len(results)} checks passed; skipped without a stable baseline: " + "; ".join(
                f"{r.name}: {r.reason}" for r in skipped
            )
    return Verdict(verdict, results, reason, canary.summary(), stable.summary(), at)


def _unique(items: Iterable[str]) -> List[str]:
    seen: Dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
