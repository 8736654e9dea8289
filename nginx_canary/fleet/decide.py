"""The coordinator's decision for one rollout: from the plan and what the hosts reported, the next plan.

Pure: the caller reads etcd, calls :func:`decide`, and writes the plan it
returns with compare-and-swap. The rules:

* **Barrier**: the bake time of a step counts from the moment every live
  host taking part has reported the step applied (``barrier_at``); no step
  begins before every live host applied the one before. A fail counts
  before the barrier too, on the hosts that applied the step already.
* **Pooled verdict, and each host's own**: the figures every host published
  for the step are merged and judged with the rollout's judge; each host's
  figures are judged on their own too (a canary failing only behind one
  balancer is failing). Half of the rollout's ``risk`` goes to the pooled
  verdict, half is shared by the hosts' own, so a healthy canary is still
  rolled back with a chance of at most ``risk`` however many hosts there are.
  With one host the two are the same and it gets the whole risk.
* Any fail, or a host that could not apply the step, rolls back every host.
* A host taking part whose lease expired (its daemon died, its machine
  vanished, it lost etcd) is dealt with as ``on_host_lost`` says: ``pause``
  (the default), ``rollback``, or ``continue`` without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from nginx_canary.config.model import AnalysisSettings, RolloutSettings
from nginx_canary.domain import State
from nginx_canary.fleet.plan import APPLIED, FAILED, RESTORED, RESTORING, HostFigures, HostReport, Plan
from nginx_canary.logs.window import Stats
from nginx_canary.rollout.verdict import FAIL, PASS, Verdict

Judge = Callable[..., Verdict]


@dataclass(frozen=True)
class FleetView:
    """What etcd said about one rollout at one moment: live members and their reports and figures."""

    members: Tuple[str, ...]
    reports: Mapping[str, HostReport] = field(default_factory=dict)
    figures: Mapping[str, HostFigures] = field(default_factory=dict)


@dataclass
class Decision:
    """The plan to write (None: leave it) and what to log about it."""

    plan: Optional[Plan] = None
    verdict: Optional[Verdict] = None
    events: List[str] = field(default_factory=list)
    #: Each host's own verdict when the pooled one was judged with more than one host.
    host_verdicts: Dict[str, Verdict] = field(default_factory=dict)


def applied(plan: Plan, view: FleetView) -> List[str]:
    """The live hosts that have applied the plan's current ``seq``."""
    return [h for h in view.members if _report(plan, view, h, APPLIED)]


def pooled(plan: Plan, view: FleetView, hosts: Sequence[str]) -> Tuple[Stats, Stats]:
    """``(canary, stable)``: the figures ``hosts`` published for the plan's current step, merged."""
    canary, stable = Stats(), Stats()
    for host in hosts:
        figures = view.figures.get(host)
        if figures is not None and figures.run == plan.run and figures.seq == plan.seq:
            canary.merge(figures.canary)
            stable.merge(figures.stable)
    return canary, stable


def decide(plan: Plan, view: FleetView, settings: RolloutSettings, now: float, judge: Judge,
           on_host_lost: str = "pause") -> Decision:
    """The next plan for ``plan`` given ``view`` at ``now``; ``judge`` is rollout.judge.judge (or a fake)."""
    if plan.state in RESTORING or plan.state == State.PROMOTED:
        return Decision()
    failed = [r for h in view.members if (r := _report(plan, view, h, FAILED)) is not None]
    if failed:
        reason = "; ".join(f"host {r.host} could not apply {_label(plan)}: {r.detail}" for r in failed)
        return _roll_back(plan, now, reason)
    alone = [r for h in view.members if (r := _report(plan, view, h, RESTORED)) is not None]
    if alone:
        return _roll_back(plan, now, "; ".join(f"host {r.host} rolled itself back: {r.detail}" for r in alone))
    events: List[str] = []
    start = plan
    lost = [h for h in plan.hosts if h not in view.members]
    if lost:
        why = f"host {', '.join(lost)} lost (its daemon's etcd lease expired) during {_label(plan)}"
        if on_host_lost == "rollback":
            return _roll_back(plan, now, f"{why} (on_host_lost: rollback)")
        plan = plan.moved(now, hosts=tuple(h for h in plan.hosts if h not in lost))
        if on_host_lost == "pause" and plan.state == State.PROGRESSING:
            return Decision(plan.moved(now, state=State.PAUSED,
                                       reason=f"{why} (on_host_lost: pause); resume goes on without it, abort "
                                              f"restores every host"), events=[f"{why}: the fleet pauses"])
        events.append(f"{why}: going on without it")
    joined = sorted(h for h in view.members if h not in plan.hosts)
    if joined:
        plan = plan.moved(now, hosts=plan.hosts + tuple(joined))
        events.append(f"host {', '.join(joined)} joined: it applies {_label(plan)} before the next step")
    changed = plan is not start
    if plan.state != State.PROGRESSING:
        return Decision(plan if changed else None, events=events)
    ready = applied(plan, view)
    waiting = [h for h in plan.hosts if h not in ready]
    if plan.barrier_at is None:
        wait = settings.analysis.max_step_wait
        began = plan.step_started_at if plan.step_started_at is not None else plan.started_at
        if waiting and wait is not None and now - began >= settings.step_interval + wait:
            return Decision(plan.moved(now, state=State.PAUSED,
                                       reason=f"no decision after max_step_wait ({wait:g} s): waiting for "
                                              f"{', '.join(waiting)} to apply {_label(plan)}"), events=events)
        if ready and waiting:
            # Before the barrier a fail already counts (rolling back is always allowed): a canary broken from
            # its first request is not kept serving until the slowest host has applied the step.
            verdict, failing, own = _judge_all(plan, view, ready, settings.analysis, now, max(0.0, now - began),
                                               judge, False)
            if failing:
                decision = _roll_back(plan, now, f"{failing}: {verdict.reason}", verdict)
                decision.events[:0] = events
                decision.host_verdicts = own
                return decision
        if waiting or not plan.hosts:
            return Decision(plan if changed else None, events=events)
        plan = plan.moved(now, barrier_at=now)
        events.append(f"every host ({', '.join(plan.hosts)}) applied {_label(plan)}: its bake time of "
                      f"{settings.step_interval:g} s begins")
        return Decision(plan, events=events)
    elapsed = now - plan.barrier_at
    final_look = not plan.looked and elapsed >= settings.step_interval
    verdict, failing, own = _judge_all(plan, view, ready, settings.analysis, now, elapsed, judge, final_look)
    decision = _judged(plan, start, verdict, failing, now, settings, waiting, elapsed, final_look, events)
    decision.host_verdicts = own
    return decision


def _judged(plan: Plan, start: Plan, verdict: Verdict, failing: str, now: float, settings: RolloutSettings,
            waiting: List[str], elapsed: float, final_look: bool, events: List[str]) -> Decision:
    """What the step's verdicts move: a rollback, a pause for max_step_wait, the next step, the promotion."""
    if final_look:
        plan = plan.moved(now, looked=True)
    if failing:
        decision = _roll_back(plan, now, f"{failing}: {verdict.reason}", verdict)
        decision.events[:0] = events
        return decision
    if elapsed < settings.step_interval or waiting or verdict.verdict != PASS:
        wait = settings.analysis.max_step_wait
        if wait is not None and elapsed >= settings.step_interval + wait:
            why = f"waiting for {', '.join(waiting)} to apply {_label(plan)}" if waiting else verdict.reason
            return Decision(plan.moved(now, state=State.PAUSED,
                                       reason=f"no decision after max_step_wait ({wait:g} s): {why}"), verdict, events)
        return Decision(plan if plan is not start else None, verdict, events)
    if plan.step_index + 1 >= len(plan.steps):
        events.append(f"{_label(plan)} passed on every host: promoted")
        return Decision(plan.moved(now, state=State.PROMOTED, seq=plan.seq + 1,
                                   reason=f"{_label(plan)} passed its bake time on every host: {verdict.reason}"),
                        verdict, events)
    nxt = plan.moved(now, step_index=plan.step_index + 1, seq=plan.seq + 1, barrier_at=None, looked=False,
                     step_started_at=now, reason=f"{_label(plan)} passed: {verdict.reason}")
    events.append(f"{_label(plan)} passed on every host: on to {_label(nxt)}")
    return Decision(nxt, verdict, events)


def _judge_all(plan: Plan, view: FleetView, hosts: Sequence[str], analysis: AnalysisSettings, now: float,
               elapsed: float, judge: Judge, final_look: bool) -> Tuple[Verdict, str, Dict[str, Verdict]]:
    """The pooled verdict, who failed ("" for none: "the fleet" or "host X"), and each host's own verdict."""
    canary, stable = pooled(plan, view, hosts)
    if len(hosts) <= 1:
        verdict = judge(canary, stable, analysis, now, elapsed, final_look=final_look)
        return verdict, ("the fleet" if verdict.verdict == FAIL else ""), {}
    pooled_limits = replace(analysis, risk=analysis.risk / 2)
    verdict = judge(canary, stable, pooled_limits, now, elapsed, final_look=final_look)
    host_limits = replace(analysis, risk=analysis.risk / (2 * len(hosts)))
    own: Dict[str, Verdict] = {}
    for host in hosts:
        figures = view.figures.get(host)
        if figures is not None and figures.run == plan.run and figures.seq == plan.seq:
            # The host's own objects (not a merged copy): a caller may keep the verdict of unchanged figures.
            own_canary, own_stable = figures.canary, figures.stable
        else:
            own_canary, own_stable = Stats(), Stats()
        own[host] = judge(own_canary, own_stable, host_limits, now, elapsed, final_look=final_look)
    if verdict.verdict == FAIL:
        return verdict, f"the fleet's pooled traffic ({len(hosts)} hosts)", own
    for host, result in own.items():
        if result.verdict == FAIL:
            return result, f"host {host}'s own traffic", own
    return verdict, "", own


def _roll_back(plan: Plan, now: float, reason: str, verdict: Optional[Verdict] = None) -> Decision:
    return Decision(plan.moved(now, state=State.ROLLED_BACK, seq=plan.seq + 1, reason=reason), verdict,
                    [f"rolling back every host: {reason}"])


def _report(plan: Plan, view: FleetView, host: str, status: str) -> Optional[HostReport]:
    report = view.reports.get(host)
    if report is not None and report.run == plan.run and report.seq == plan.seq and report.status == status:
        return report
    return None


def _label(plan: Plan) -> str:
    return f"step {plan.step_index + 1}/{len(plan.steps)} ({plan.percent} %)"
