"""The sequential judge: every canary and stable request since the step began -> a :class:`Verdict`.

Each check is an always-valid test (rollout/sequential.py), so the verdict
may be asked for at every check, however often, without the risk growing:

``fail`` (roll back)
    the evidence that the canary breaks a limit has reached ``1/alpha``, with
    ``alpha`` the check's share of the configured ``risk`` (``RISK_SHARES``). A canary
    within every limit is rolled back with a chance of at most ``risk``,
    however long the step and however often it is looked at.
``pass`` (may advance once the bake time is over)
    at least ``min_requests`` canary requests, the evidence that its 5xx rate
    is within ``max_error_rate`` and within ``max_error_rate_increase`` of
    stable's has reached ``1/beta`` (``beta`` the ``promotion_risk``), and no
    latency check has found a regression. Latency is not required to be
    *proved* within its limits before a promotion: showing a p99 under a limit
    takes about 700 requests even when every one is fast, which would hold
    thin traffic at its first step for minutes; it is judged for regressions
    all along, and more traffic at the next step judges it better.
``inconclusive``
    neither yet: the reason says how many more canary requests the 5xx
    evidence needs at the rate seen so far, and about how long that is.

The checks (their names are the metrics' and webhooks'):

* ``error_rate``: the canary's 5xx rate against ``max_error_rate``.
* ``error_rate_increase``: roll back when the canary's share of all 5xx shows
  its rate above stable's times ``1 + error_rate_tolerance``; pass when its
  rate is shown below stable's lower bound plus ``max_error_rate_increase``.
  Its pass side is skipped (no baseline) when stable had fewer than
  ``min_requests`` requests (the 100 % step: only those in flight at the change).
* ``p99_latency``: the share of canary requests slower than
  ``max_p99_latency`` shown above 1 %.
* ``p99_latency_ratio``: the share slower than ``max_p99_latency_ratio``
  times an upper bound of stable's p99 (and at least 25 ms more) shown above 1 %
  (on thin stable traffic, the highest quantile its samples can bound: p95, p90, ...).
* ``p50_latency_ratio``: the share slower than ``max_p50_latency_ratio``
  times an upper bound of stable's median (and at least 2 ms more) shown
  above half: a shift of typical latency.

Group-sequential 5xx checks: each 5xx check spends part of its share of the
risk on the always-valid test, which may fire at any look, and the rest on
one planned look when the step's bake time is over (an exact binomial test
of the figures then), the moment a decision is due anyway. A regression that
is real but small gathers evidence slowly; the planned look catches more of
those within the bake time than an always-valid test alone could, at the
same total risk.

How the risk is shared (``RISK_SHARES``): a broken canary is caught by any
share in a handful of requests (the evidence grows exponentially), so the
always-valid tests get a tenth each for the 5xx checks and less for latency.
Most of the risk goes to the planned look, when the decision to promote is
due: half of it to the exact test against ``max_error_rate``, a tenth to the
one against stable's rate. A small increase over a real baseline is the
regression that only a larger share finds within a step (+3 points over a
5 % stable at 20 canary req/s in a 60 s step: no test at a 1 % risk catches
it in more than about 95 % of steps; the bench's figure is in the README).
The shares add up to one, so a canary within every limit is still rolled
back with a chance of at most ``risk``.

Latency comparisons are made on the values as nginx logged them, rounded to
the millisecond on both sides alike, and count a canary request as slower
only when its sketch bin lies wholly above the limit: rounding and binning
can hide a regression for longer, never invent one.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

from nginx_canary.config.model import AnalysisSettings
from nginx_canary.domain import number_text, percent_text
from nginx_canary.logs.window import Stats
from nginx_canary.rollout.sequential import (
    log_evidence_above,
    log_evidence_below,
    log_evidence_share_above,
    log_tail_at_least,
    lower_bound,
    quantile_upper_bound,
    trials_needed,
)
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, CheckResult, Verdict

#: A canary is slower only by more than these many seconds too (millisecond logging, tiny services).
P99_MIN_DIFFERENCE = 0.025
P50_MIN_DIFFERENCE = 0.002
#: The share of requests above a p99.
TAIL = 0.01
#: The tail compared with stable's: its p99, or the highest of these that stable's samples can bound.
TAIL_QUANTILES = (0.99, 0.95, 0.9, 0.75, 0.5)
#: The judge's checks, in the order of its results (metrics count each one's failures from 0).
CHECK_NAMES = ("error_rate", "error_rate_increase", "p99_latency", "p99_latency_ratio", "p50_latency_ratio")
#: Each check's share of the rollback ``risk``: (always-valid test, planned look at the bake end); they add up to 1.
RISK_SHARES = {
    "error_rate": (0.1, 0.5),
    "error_rate_increase": (0.1, 0.1),
    "p99_latency": (0.05, 0.0),
    "p99_latency_ratio": (0.1, 0.0),
    "p50_latency_ratio": (0.05, 0.0),
}
#: An estimate of the requests still needed beyond this many times those seen is not worth a number.
FAR = 100
_PROMOTION_CHECKS = 2


def judge(canary: Stats, stable: Stats, limits: AnalysisSettings, at: float, elapsed: float,
          extra: Tuple[CheckResult, ...] = (), *, final_look: bool = False) -> Verdict:
    """Judge the step so far: ``canary`` and ``stable`` hold every request since it began ``elapsed`` s before ``at``.

    ``limits`` are the rollout's analysis settings (validated when the YAML was read).

    ``extra`` are results of other checks (the HTTP checks) that take part in the verdict like the judge's own.
    ``final_look``: this is the step's one planned look at the end of its bake time (see the module's docstring).
    """
    alpha = {name: (limits.risk * anytime, limits.risk * planned) for name, (anytime, planned) in RISK_SHARES.items()}
    beta = limits.promotion_risk / _PROMOTION_CHECKS
    outcomes = (
        _error_rate(canary, stable, limits, alpha["error_rate"], beta, final_look),
        _error_rate_increase(canary, stable, limits, alpha["error_rate_increase"], beta, final_look),
        _p99_latency(canary, stable, limits, alpha["p99_latency"][0]),
        _latency_ratio("p99_latency_ratio", TAIL_QUANTILES, limits.max_p99_latency_ratio, P99_MIN_DIFFERENCE,
                       canary, stable, limits, alpha["p99_latency_ratio"][0]),
        _latency_ratio("p50_latency_ratio", (0.5,), limits.max_p50_latency_ratio, P50_MIN_DIFFERENCE,
                       canary, stable, limits, alpha["p50_latency_ratio"][0]),
    )
    outcomes += tuple((result, None) for result in extra)
    results = tuple(result for result, _ in outcomes)
    failed = [r for r in results if r.verdict == FAIL]
    waiting = [r for r in results if r.verdict == INCONCLUSIVE and not r.skipped]
    if failed:
        verdict = FAIL
        reason = f"{len(failed)} of {len(results)} checks failed: " + "; ".join(f"{r.name}: {r.reason}" for r in failed)
    elif canary.requests < limits.min_requests:
        verdict = INCONCLUSIVE
        reason = (f"only {canary.requests} canary requests since the step began, need {limits.min_requests}"
                  f"{_time_for(limits.min_requests - canary.requests, canary.requests, elapsed)}")
    elif waiting:
        verdict = INCONCLUSIVE
        needs = [more for (result, more) in outcomes if result in waiting and more is not None]
        reason = "; ".join(f"{r.name}: {r.reason}" for r in waiting)
        if needs and max(needs) > FAR * max(canary.requests, limits.min_requests):
            reason += (f"; too close to the limit to decide soon (at this rate, over {FAR} times the "
                       f"{canary.requests} canary requests seen so far)")
        elif needs:
            reason += f"; about {max(needs)} more canary requests to decide{_time_for(max(needs), canary.requests, elapsed)}"
    else:
        verdict = PASS
        skipped = [r for r in results if r.skipped]
        reason = f"all {len(results) - len(skipped)} checks passed"
        if skipped:
            reason += "; skipped without a stable baseline: " + "; ".join(f"{r.name}: {r.reason}" for r in skipped)
    return Verdict(verdict, results, reason, canary.summary(), stable.summary(), at)


# --- the checks: each returns its result and, when inconclusive, about how many more canary requests it needs --

_Outcome = Tuple[CheckResult, Optional[int]]


def _error_rate(canary: Stats, stable: Stats, limits: AnalysisSettings, alpha: Tuple[float, float], beta: float,
                final_look: bool) -> _Outcome:
    """``alpha``: the risk of the always-valid test and of the planned look."""
    n, k, limit = canary.requests, canary.errors_5xx, limits.max_error_rate
    seen = f"canary 5xx {_rate(k, n)}"
    anytime, planned = alpha
    if log_evidence_above(n, k, limit) >= -math.log(anytime):
        return _result("error_rate", FAIL, k / n, limit, canary, stable,
                       f"{seen} is shown above the {percent_text(limit * 100)} % limit"), None
    if final_look and planned > 0 and log_tail_at_least(n, k, limit) <= math.log(planned):
        return _result("error_rate", FAIL, k / n, limit, canary, stable,
                       f"{seen} is shown above the {percent_text(limit * 100)} % limit at the end of the bake time"), None
    if log_evidence_below(n, k, limit) >= -math.log(beta):
        return _result("error_rate", PASS, k / n, limit, canary, stable,
                       f"{seen} is shown below the {percent_text(limit * 100)} % limit"), None
    more = _more(n, k, limit, beta)
    return _result("error_rate", INCONCLUSIVE, k / n if n else None, limit, canary, stable,
                   f"{seen}: within the {percent_text(limit * 100)} % limit so far"), more


def _error_rate_increase(canary: Stats, stable: Stats, limits: AnalysisSettings, alpha: Tuple[float, float],
                         beta: float, final_look: bool) -> _Outcome:
    """``alpha``: the risk of the always-valid test and of the planned look."""
    anytime, planned = alpha
    n_c, k_c, n_s, k_s = canary.requests, canary.errors_5xx, stable.requests, stable.errors_5xx
    limit = limits.max_error_rate_increase
    seen = f"canary 5xx {_rate(k_c, n_c)} vs stable {_rate(k_s, n_s)}"
    value = (k_c / n_c - k_s / n_s) if n_c and n_s else None
    ratio = 1.0 + limits.error_rate_tolerance
    above = "stable's" if ratio == 1.0 else f"{number_text(ratio, 2)} times stable's"
    if log_evidence_share_above(k_c, k_s, n_c, n_s, ratio) >= -math.log(anytime):
        return _result("error_rate_increase", FAIL, value, limit, canary, stable,
                       f"{seen}: the canary's rate is shown above {above}"), None
    if final_look and planned > 0 and n_c and n_s \
            and log_tail_at_least(k_c + k_s, k_c, ratio * n_c / (ratio * n_c + n_s)) <= math.log(planned):
        return _result("error_rate_increase", FAIL, value, limit, canary, stable,
                       f"{seen}: the canary's rate is shown above {above} at the end of the bake time"), None
    if n_s < limits.min_requests:
        # At the 100 % step stable gets nothing but the requests in flight when the weights changed.
        return _result("error_rate_increase", INCONCLUSIVE, value, limit, canary, stable,
                       f"only {n_s} stable requests since the step began: no baseline to compare with",
                       skipped=True), None
    baseline = lower_bound(n_s, k_s, beta / 2)
    ceiling = min(1.0, baseline + limit)
    if log_evidence_below(n_c, k_c, ceiling) >= -math.log(beta / 2):
        return _result("error_rate_increase", PASS, value, limit, canary, stable,
                       f"{seen}: shown less than {_points(limit)} points above stable's"), None
    more = _more(n_c, k_c, ceiling, beta / 2)
    return _result("error_rate_increase", INCONCLUSIVE, value, limit, canary, stable,
                   f"{seen}: within tolerance so far"), more


def _p99_latency(canary: Stats, stable: Stats, limits: AnalysisSettings, alpha: float) -> _Outcome:
    sketch, limit = canary.latency, limits.max_p99_latency
    n = sketch.count
    if n == 0:
        return _result("p99_latency", INCONCLUSIVE, None, limit, canary, stable,
                       "no canary latency samples yet"), None
    slower = sketch.count_above(limit, surely=True)
    value = sketch.quantile(1.0 - TAIL)
    seen = f"{_rate(slower, n)} of canary requests slower than {_seconds(limit)}"
    if log_evidence_above(n, slower, TAIL) >= -math.log(alpha):
        return _result("p99_latency", FAIL, value, limit, canary, stable, f"{seen}: its p99 is shown above it"), None
    return _result("p99_latency", PASS, value, limit, canary, stable, f"{seen}: no evidence of a p99 above it"), None


def _latency_ratio(name: str, quantiles: Tuple[float, ...], ratio: float, min_difference: float,
                   canary: Stats, stable: Stats, limits: AnalysisSettings, alpha: float) -> _Outcome:
    """The canary's share slower than ``ratio`` times stable's quantile (its upper bound) against that quantile's.

    The first of ``quantiles`` that stable's samples can bound is used: a
    p99 takes about 950 samples to bound, so thinner traffic is compared on
    the highest quantile it can tell (p95, p90, ...) rather than not at all.
    """
    n = canary.latency.count
    if n == 0:
        return _result(name, INCONCLUSIVE, None, ratio, canary, stable, "no canary latency samples yet"), None
    if stable.latency.count < limits.min_requests:
        return _result(name, INCONCLUSIVE, None, ratio, canary, stable,
                       f"only {stable.latency.count} stable latency samples: no baseline to compare with",
                       skipped=True), None
    # Which quantile is compared changes as stable's samples grow: each gets its own share of the risk, half of
    # it for stable's bound and half for the canary's test, so that switching between them cannot add up to more.
    each = alpha / (2 * len(quantiles))
    for q in quantiles:
        bound = quantile_upper_bound(stable.latency, q, each)
        if bound is not None:
            break
    else:
        return _result(name, INCONCLUSIVE, None, ratio, canary, stable,
                       f"too few stable latency samples ({stable.latency.count}) to bound its "
                       f"{_quantile_name(quantiles[-1])}", skipped=True), None
    label = _quantile_name(q)
    limit = max(ratio * bound, bound + min_difference)
    slower = canary.latency.count_above(limit, surely=True)
    stable_q = stable.latency.quantile(q)
    value = (canary.latency.quantile(q) or 0.0) / stable_q if stable_q else None
    seen = (f"{_rate(slower, n)} of canary requests slower than {_seconds(limit)} ({number_text(ratio, 2)} times "
            f"stable's {label} bound {_seconds(bound)})")
    if log_evidence_above(n, slower, 1.0 - q) >= -math.log(each):
        return _result(name, FAIL, value, ratio, canary, stable, f"{seen}: its {label} is shown above that"), None
    return _result(name, PASS, value, ratio, canary, stable, f"{seen}: no evidence of a slower {label}"), None


def _quantile_name(q: float) -> str:
    return "median" if q == 0.5 else f"p{number_text(q * 100, 1)}"


# --- words --------------------------------------------------------------------------------------------------


def _result(name: str, verdict: str, value: Optional[float], threshold: float, canary: Stats, stable: Stats,
            reason: str, skipped: bool = False) -> CheckResult:
    return CheckResult(name, verdict, value, threshold, canary.requests, stable.requests, reason, skipped)


def _more(n: int, k: int, p0: float, beta: float) -> Optional[int]:
    total = trials_needed(n, k, p0, beta, below=True)
    return None if total is None else max(0, total - n)


def _time_for(more: int, seen: int, elapsed: float) -> str:
    if seen <= 0 or elapsed <= 0 or more <= 0:
        return ""
    seconds = more / (seen / elapsed)
    return f" (about {_seconds(seconds)} at the current rate)"


def _rate(k: int, n: int) -> str:
    return f"{percent_text(100 * k / n)} % ({k} of {n})" if n else "- (0 requests)"


def _points(fraction: float) -> str:
    return number_text(fraction * 100, 2)


def _seconds(seconds: float) -> str:
    if seconds >= 60:
        return f"{number_text(seconds / 60, 1)} min"
    if seconds >= 1:
        return f"{number_text(seconds, 1)} s"
    return f"{number_text(seconds * 1000, 1)} ms"

