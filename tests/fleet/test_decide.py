"""The coordinator's decision, with a fake judge and hand-built views of the fleet."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pytest

from nginx_canary.config.model import AnalysisSettings, RolloutSettings
from nginx_canary.domain import State
from nginx_canary.fleet.decide import Decision, FleetView, applied, decide, pooled
from nginx_canary.fleet.plan import APPLIED, FAILED, PROMOTED, RESTORED, HostFigures, HostReport, Plan
from nginx_canary.logs.window import Stats
from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS, Verdict
from tests.rollout.figures import stats

T0 = 1_000.0
STEPS = (Fraction(10), Fraction(50), Fraction(100))
RISK = 0.01


@dataclass
class Call:
    canary: int
    stable: int
    risk: float
    at: float
    elapsed: float
    final_look: bool


class FakeJudge:
    """Returns ``default``, or the verdict ``by_canary`` gives for the canary's request count; records each call."""

    def __init__(self, default: str = PASS, by_canary: Optional[Dict[int, str]] = None) -> None:
        self.default = default
        self.by_canary = dict(by_canary or {})
        self.calls: List[Call] = []

    def __call__(self, canary: Stats, stable: Stats, limits: AnalysisSettings, at: float, elapsed: float,
                 *, final_look: bool = False) -> Verdict:
        self.calls.append(Call(canary.requests, stable.requests, limits.risk, at, elapsed, final_look))
        verdict = self.by_canary.get(canary.requests, self.default)
        return Verdict(verdict, (), f"fake {verdict} on {canary.requests} canary requests", {}, {}, at)


def make_settings(max_step_wait: Optional[float] = None) -> RolloutSettings:
    return RolloutSettings(name="app", upstream="backend", canary=("10.0.0.12:8080",), steps=STEPS,
                           step_interval=60.0, analysis=AnalysisSettings(risk=RISK, max_step_wait=max_step_wait))


def make_plan(hosts: Sequence[str] = ("lb-1", "lb-2"), **changes: Any) -> Plan:
    fields: Dict[str, Any] = dict(rollout="app", run="r1", seq=4, state=State.PROGRESSING, steps=STEPS,
                                  step_index=1, hosts=tuple(hosts), started_at=0.0, updated_at=T0 - 5)
    fields.update(changes)
    return Plan(**fields)


def report(host: str, plan: Plan, status: str = APPLIED, *, seq: Optional[int] = None, run: Optional[str] = None,
           detail: str = "") -> HostReport:
    return HostReport(host, run or plan.run, plan.seq if seq is None else seq, status, str(plan.percent), T0, detail)


def figures(host: str, plan: Plan, canary: int, *, seq: Optional[int] = None, run: Optional[str] = None,
            stable: int = 100) -> HostFigures:
    return HostFigures(host, run or plan.run, plan.seq if seq is None else seq, T0, T0, stats(canary), stats(stable))


def view(plan: Plan, applied_by: Iterable[str], members: Optional[Sequence[str]] = None,
         canary: Optional[Dict[str, int]] = None, extra_reports: Sequence[HostReport] = ()) -> FleetView:
    """Live ``members`` (default: the plan's hosts); ``applied_by`` reported the plan's seq applied;
    each host's figures for the step hold ``canary[host]`` canary requests (default 10 each)."""
    members = tuple(plan.hosts if members is None else members)
    reports = {h: report(h, plan) for h in applied_by}
    reports.update({r.host: r for r in extra_reports})
    counts = canary if canary is not None else {h: 10 for h in applied_by}
    return FleetView(members, reports, {h: figures(h, plan, n) for h, n in counts.items()})


def baking(hosts: Sequence[str] = ("lb-1", "lb-2"), **changes: Any) -> Plan:
    """A plan whose step every host applied at T0: its bake time runs."""
    return make_plan(hosts, barrier_at=T0, **changes)


def run(plan: Plan, fleet: FleetView, now: float, judge: FakeJudge, on_host_lost: str = "pause",
        max_step_wait: Optional[float] = None) -> Decision:
    return decide(plan, fleet, make_settings(max_step_wait), now, judge, on_host_lost)


# --- the barrier -----------------------------------------------------------------------------------------


def test_no_bake_before_every_live_host_applied() -> None:
    plan, judge = make_plan(), FakeJudge()
    decision = run(plan, view(plan, ["lb-1"]), T0 + 500, judge)
    assert decision.plan is None
    assert [c.final_look for c in judge.calls] == [False]  # judged for a fail only, never a planned look


def test_a_fail_before_the_barrier_rolls_back_at_once() -> None:
    plan, judge = make_plan(), FakeJudge(PASS, by_canary={10: FAIL})
    decision = run(plan, view(plan, ["lb-1"]), T0 + 1, judge)
    assert decision.plan is not None and decision.plan.state == State.ROLLED_BACK
    assert decision.plan.reason == "the fleet: fake fail on 10 canary requests"
    assert decision.plan.barrier_at is None


@pytest.mark.parametrize("stale", [{"seq": 3}, {"run": "r0"}])
def test_a_report_of_another_seq_or_run_does_not_count_for_the_barrier(stale: Dict[str, Any]) -> None:
    plan, judge = make_plan(), FakeJudge()
    fleet = view(plan, ["lb-1"], extra_reports=[report("lb-2", plan, **stale)])
    assert applied(plan, fleet) == ["lb-1"]
    assert run(plan, fleet, T0 + 500, judge).plan is None


def test_barrier_is_set_once_every_host_applied() -> None:
    plan, judge = make_plan(), FakeJudge()
    decision = run(plan, view(plan, ["lb-1", "lb-2"]), T0 + 1, judge)
    assert decision.plan is not None
    assert decision.plan.barrier_at == T0 + 1
    assert (decision.plan.seq, decision.plan.step_index, decision.plan.looked) == (4, 1, False)
    assert "every host (lb-1, lb-2) applied step 2/3 (50 %)" in decision.events[0]
    assert "60 s begins" in decision.events[0]
    assert judge.calls == []
    # Set once: the next tick bakes from it and does not move it.
    again = run(decision.plan, view(decision.plan, ["lb-1", "lb-2"]), T0 + 2, judge)
    assert again.plan is None
    assert [c.elapsed for c in judge.calls] == [1.0, 1.0, 1.0]  # the pool, then each host


def test_no_barrier_for_a_plan_without_hosts() -> None:
    plan = make_plan(hosts=())
    assert run(plan, FleetView(()), T0, FakeJudge()).plan is None


# --- baking and stepping ---------------------------------------------------------------------------------------


def test_no_advance_before_the_step_interval() -> None:
    plan, judge = baking(), FakeJudge(PASS)
    decision = run(plan, view(plan, ["lb-1", "lb-2"]), T0 + 59.9, judge)
    assert decision.plan is None
    assert decision.verdict is not None and decision.verdict.verdict == PASS
    assert [c.final_look for c in judge.calls] == [False, False, False]


def test_advance_after_the_step_interval_bumps_seq_and_step_and_resets_the_barrier() -> None:
    plan, judge = baking(looked=False), FakeJudge(PASS)
    decision = run(plan, view(plan, ["lb-1", "lb-2"]), T0 + 60, judge)
    nxt = decision.plan
    assert nxt is not None
    assert (nxt.state, nxt.seq, nxt.step_index, nxt.percent) == (State.PROGRESSING, 5, 2, Fraction(100))
    assert (nxt.barrier_at, nxt.looked, nxt.updated_at) == (None, False, T0 + 60)
    assert nxt.reason.startswith("step 2/3 (50 %) passed: fake pass")
    assert decision.events == ["step 2/3 (50 %) passed on every host: on to step 3/3 (100 %)"]


def test_the_last_step_passed_promotes_with_a_new_seq() -> None:
    plan, judge = baking(step_index=2), FakeJudge(PASS)
    decision = run(plan, view(plan, ["lb-1", "lb-2"]), T0 + 61, judge)
    assert decision.plan is not None
    assert (decision.plan.state, decision.plan.seq, decision.plan.step_index) == (State.PROMOTED, 5, 2)
    assert "passed its bake time on every host" in decision.plan.reason


def test_an_inconclusive_verdict_holds_the_step() -> None:
    plan, judge = baking(looked=True), FakeJudge(INCONCLUSIVE)
    decision = run(plan, view(plan, ["lb-1", "lb-2"]), T0 + 600, judge)
    assert decision.plan is None
    assert decision.verdict is not None and decision.verdict.verdict == INCONCLUSIVE


# --- verdicts -----------------------------------------------------------------------------------------------------


def test_a_pooled_fail_rolls_every_host_back() -> None:
    plan = baking()
    judge = FakeJudge(PASS, by_canary={30: FAIL})  # the pool: 10 + 20 canary requests
    decision = run(plan, view(plan, ["lb-1", "lb-2"], canary={"lb-1": 10, "lb-2": 20}), T0 + 5, judge)
    assert decision.plan is not None
    assert (decision.plan.state, decision.plan.seq) == (State.ROLLED_BACK, 5)
    assert decision.plan.reason == "the fleet's pooled traffic (2 hosts): fake fail on 30 canary requests"
    assert decision.verdict is not None and decision.verdict.verdict == FAIL
    assert decision.events == [f"rolling back every host: {decision.plan.reason}"]
    assert len(judge.calls) == 3  # the pool, then each host's own (shown in status)
    assert set(decision.host_verdicts) == {"lb-1", "lb-2"}


def test_one_hosts_own_fail_rolls_every_host_back_and_names_it() -> None:
    plan = baking(("lb-1", "lb-2", "lb-3"))
    judge = FakeJudge(PASS, by_canary={20: FAIL})
    fleet = view(plan, ["lb-1", "lb-2", "lb-3"], canary={"lb-1": 10, "lb-2": 20, "lb-3": 30})
    decision = run(plan, fleet, T0 + 5, judge)
    assert decision.plan is not None
    assert decision.plan.state == State.ROLLED_BACK
    assert decision.plan.reason == "host lb-2's own traffic: fake fail on 20 canary requests"
    assert [c.canary for c in judge.calls] == [60, 10, 20, 30]  # every host judged: status shows each


def test_a_single_hosts_fail_names_the_fleet() -> None:
    plan = baking(("lb-1",))
    decision = run(plan, view(plan, ["lb-1"]), T0 + 5, FakeJudge(FAIL))
    assert decision.plan is not None
    assert decision.plan.reason.startswith("the fleet: fake fail")


@pytest.mark.parametrize("hosts", [2, 3, 5])
def test_the_risk_is_split_between_the_pool_and_each_host(hosts: int) -> None:
    names = [f"lb-{i}" for i in range(1, hosts + 1)]
    plan, judge = baking(names), FakeJudge(PASS)
    run(plan, view(plan, names), T0 + 5, judge)
    risks = [c.risk for c in judge.calls]
    assert risks[0] == pytest.approx(RISK / 2)
    assert risks[1:] == pytest.approx([RISK / (2 * hosts)] * hosts)
    assert sum(risks) == pytest.approx(RISK)


def test_one_host_gets_the_whole_risk() -> None:
    plan, judge = baking(("lb-1",)), FakeJudge(PASS)
    run(plan, view(plan, ["lb-1"]), T0 + 5, judge)
    assert [c.risk for c in judge.calls] == [RISK]


def test_the_final_look_is_taken_exactly_once_per_step() -> None:
    plan, judge = baking(), FakeJudge(INCONCLUSIVE)
    looks: List[bool] = []
    for now in (T0 + 30, T0 + 59, T0 + 60, T0 + 61, T0 + 90):
        judge.calls.clear()
        decision = run(plan, view(plan, ["lb-1", "lb-2"]), now, judge)
        plan = decision.plan or plan
        assert len({c.final_look for c in judge.calls}) == 1  # the pool and each host: the same look
        looks.append(judge.calls[0].final_look)
    assert looks == [False, False, True, False, False]
    assert plan.looked
    # The next step has a final look of its own.
    judge.default = PASS
    nxt = run(plan, view(plan, ["lb-1", "lb-2"]), T0 + 91, judge).plan
    assert nxt is not None and nxt.step_index == 2 and not nxt.looked
    nxt = run(nxt, view(nxt, ["lb-1", "lb-2"]), T0 + 92, judge).plan
    assert nxt is not None and nxt.barrier_at == T0 + 92
    judge.calls.clear()
    run(nxt, view(nxt, ["lb-1", "lb-2"]), T0 + 152, judge)
    assert judge.calls and all(c.final_look for c in judge.calls)


def test_stale_figures_are_left_out_of_the_pool() -> None:
    plan, judge = baking(("lb-1", "lb-2", "lb-3")), FakeJudge(PASS)
    fleet = FleetView(plan.hosts, {h: report(h, plan) for h in plan.hosts},
                      {"lb-1": figures("lb-1", plan, 10), "lb-2": figures("lb-2", plan, 200, seq=plan.seq - 1),
                       "lb-3": figures("lb-3", plan, 3000, run="r0")})
    canary, stable = pooled(plan, fleet, plan.hosts)
    assert (canary.requests, stable.requests) == (10, 100)
    run(plan, fleet, T0 + 5, judge)
    assert [(c.canary, c.stable) for c in judge.calls] == [(10, 100), (10, 100), (0, 0), (0, 0)]


def test_figures_of_a_host_that_has_not_applied_the_step_are_left_out() -> None:
    plan = baking(("lb-1", "lb-2"))
    fleet = view(plan, ["lb-1", "lb-2"], members=("lb-1", "lb-2", "lb-3"),
                 canary={"lb-1": 10, "lb-2": 10, "lb-3": 500})
    judge = FakeJudge(PASS)
    run(plan, fleet, T0 + 5, judge)
    assert judge.calls[0].canary == 20


# --- hosts that failed or restored ----------------------------------------------------------------------------------


def test_a_host_that_could_not_apply_the_step_rolls_the_fleet_back() -> None:
    plan, judge = make_plan(), FakeJudge()
    fleet = view(plan, ["lb-1"], extra_reports=[report("lb-2", plan, FAILED, detail="nginx -t: unknown directive")])
    decision = run(plan, fleet, T0, judge)
    assert decision.plan is not None
    assert (decision.plan.state, decision.plan.seq) == (State.ROLLED_BACK, 5)
    assert decision.plan.reason == "host lb-2 could not apply step 2/3 (50 %): nginx -t: unknown directive"
    assert judge.calls == []


def test_a_failed_report_of_an_older_seq_is_no_failure() -> None:
    plan = make_plan()
    fleet = view(plan, ["lb-1", "lb-2"])
    fleet = FleetView(fleet.members, dict(fleet.reports, **{"lb-2": report("lb-2", plan, FAILED, seq=3)}))
    decision = run(plan, fleet, T0, FakeJudge())
    assert decision.plan is None  # lb-2 has not applied seq 4 yet: the barrier waits


def test_a_host_that_rolled_itself_back_at_the_current_seq_rolls_the_fleet_back() -> None:
    plan = baking()
    restored_report = report("lb-2", plan, RESTORED, detail="rolled back alone while cut off from etcd: 5xx")
    fleet = view(plan, ["lb-1"], extra_reports=[restored_report])
    decision = run(plan, fleet, T0 + 5, FakeJudge())
    assert decision.plan is not None
    assert decision.plan.state == State.ROLLED_BACK
    assert decision.plan.reason == "host lb-2 rolled itself back: rolled back alone while cut off from etcd: 5xx"


def test_a_restored_report_of_an_older_seq_is_ignored() -> None:
    plan = baking()
    fleet = view(plan, ["lb-1", "lb-2"])
    fleet = FleetView(fleet.members, dict(fleet.reports, **{"lb-2": report("lb-2", plan, RESTORED, seq=3)}),
                      fleet.figures)
    assert run(plan, fleet, T0 + 5, FakeJudge()).plan is None


# --- lost and joined hosts ---------------------------------------------------------------------------------------------


def test_a_lost_host_pauses_the_fleet_by_default() -> None:
    plan, judge = baking(("lb-1", "lb-2", "lb-3")), FakeJudge()
    decision = run(plan, view(plan, ["lb-1", "lb-3"], members=("lb-1", "lb-3")), T0 + 5, judge)
    paused = decision.plan
    assert paused is not None
    assert (paused.state, paused.seq, paused.hosts) == (State.PAUSED, 4, ("lb-1", "lb-3"))
    assert "host lb-2 lost (its daemon's etcd lease expired) during step 2/3 (50 %)" in paused.reason
    assert "on_host_lost: pause" in paused.reason
    assert decision.events == ["host lb-2 lost (its daemon's etcd lease expired) during step 2/3 (50 %): "
                               "the fleet pauses"]
    assert judge.calls == []
    # Paused, it stays paused and judges nothing.
    assert run(paused, view(paused, ["lb-1", "lb-3"]), T0 + 500, judge).plan is None
    assert judge.calls == []


def test_a_lost_host_rolls_the_fleet_back_with_on_host_lost_rollback() -> None:
    plan = baking()
    decision = run(plan, view(plan, ["lb-1"], members=("lb-1",)), T0 + 5, FakeJudge(), on_host_lost="rollback")
    assert decision.plan is not None
    assert (decision.plan.state, decision.plan.seq) == (State.ROLLED_BACK, 5)
    assert decision.plan.reason.endswith("(on_host_lost: rollback)")
    assert "host lb-2 lost" in decision.plan.reason


def test_the_fleet_goes_on_without_a_lost_host_with_on_host_lost_continue() -> None:
    plan, judge = make_plan(("lb-1", "lb-2")), FakeJudge(PASS)
    decision = run(plan, view(plan, ["lb-1"], members=("lb-1",)), T0, judge, on_host_lost="continue")
    assert decision.plan is not None
    assert (decision.plan.state, decision.plan.hosts, decision.plan.barrier_at) == (State.PROGRESSING, ("lb-1",), T0)
    assert decision.events[0].endswith("going on without it")
    nxt = run(decision.plan, view(decision.plan, ["lb-1"]), T0 + 60, judge, on_host_lost="continue").plan
    assert nxt is not None and nxt.step_index == 2
    assert [c.risk for c in judge.calls] == [RISK]


def test_a_host_lost_while_paused_leaves_the_plan_paused() -> None:
    plan = baking(state=State.PAUSED)
    decision = run(plan, view(plan, ["lb-1"], members=("lb-1",)), T0 + 5, FakeJudge())
    assert decision.plan is not None
    assert (decision.plan.state, decision.plan.hosts) == (State.PAUSED, ("lb-1",))


def test_a_joined_host_takes_part_and_holds_the_next_step_until_it_applied() -> None:
    plan, judge = baking(), FakeJudge(PASS)
    members = ("lb-1", "lb-2", "lb-3")
    decision = run(plan, view(plan, ["lb-1", "lb-2"], members=members), T0 + 5, judge)
    joined = decision.plan
    assert joined is not None
    assert (joined.hosts, joined.step_index, joined.seq) == (("lb-1", "lb-2", "lb-3"), 1, 4)
    assert "host lb-3 joined: it applies step 2/3 (50 %) before the next step" in decision.events
    # The bake time is over and the verdict passes, but lb-3 has not applied the step.
    held = run(joined, view(joined, ["lb-1", "lb-2"], members=members), T0 + 120, judge)
    after = held.plan
    assert after is not None and after.looked  # the step's final look was spent, the step kept
    assert (after.state, after.step_index, after.seq) == (State.PROGRESSING, 1, 4)
    nxt = run(after, view(after, members, members=members), T0 + 121, judge).plan
    assert nxt is not None
    assert (nxt.step_index, nxt.seq, nxt.hosts) == (2, 5, members)


def test_a_host_joining_a_paused_plan_is_added_without_a_step() -> None:
    plan = make_plan(state=State.PAUSED)
    decision = run(plan, view(plan, ["lb-1", "lb-2"], members=("lb-0", "lb-1", "lb-2")), T0, FakeJudge())
    assert decision.plan is not None
    assert (decision.plan.state, decision.plan.hosts, decision.plan.seq) == (State.PAUSED, ("lb-1", "lb-2", "lb-0"), 4)


# --- max_step_wait ---------------------------------------------------------------------------------------------------


def test_max_step_wait_pauses_with_the_verdicts_reason() -> None:
    plan, judge = baking(looked=True), FakeJudge(INCONCLUSIVE)
    assert run(plan, view(plan, ["lb-1", "lb-2"]), T0 + 89, judge, max_step_wait=30).plan is None
    decision = run(plan, view(plan, ["lb-1", "lb-2"]), T0 + 90, judge, max_step_wait=30)
    assert decision.plan is not None
    assert (decision.plan.state, decision.plan.seq) == (State.PAUSED, 4)
    assert decision.plan.reason == "no decision after max_step_wait (30 s): fake inconclusive on 20 canary requests"


def test_max_step_wait_pauses_naming_the_host_that_did_not_apply() -> None:
    plan, judge = baking(looked=True), FakeJudge(PASS)
    members = ("lb-1", "lb-2", "lb-3")
    joined = run(plan, view(plan, ["lb-1", "lb-2"], members=members), T0 + 5, judge, max_step_wait=30).plan
    assert joined is not None
    decision = run(joined, view(joined, ["lb-1", "lb-2"], members=members), T0 + 95, judge, max_step_wait=30)
    assert decision.plan is not None
    assert decision.plan.state == State.PAUSED
    assert decision.plan.reason == ("no decision after max_step_wait (30 s): waiting for lb-3 to apply "
                                    "step 2/3 (50 %)")


# --- finished runs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [State.PROMOTED, State.ROLLED_BACK, State.ABORTED])
def test_a_finished_plan_gets_no_decision(state: State) -> None:
    plan, judge = baking(state=state), FakeJudge(FAIL)
    fleet = view(plan, ["lb-1"], members=("lb-1", "lb-3"),
                 extra_reports=[report("lb-3", plan, FAILED, detail="x"), report("lb-1", plan, PROMOTED)])
    decision = run(plan, fleet, T0 + 600, judge, on_host_lost="rollback")
    assert (decision.plan, decision.verdict, decision.events) == (None, None, [])
    assert judge.calls == []
