"""An operator's command on the fleet's plan: the plan it becomes, or the one-line reason it is refused."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable, Dict, Optional

import pytest

from nginx_canary.domain import State
from nginx_canary.errors import StateError
from nginx_canary.fleet import commands
from nginx_canary.fleet.plan import Plan

STEPS = (Fraction(10), Fraction(50), Fraction(100))
NOW = 500.0
ENDED = (State.PROMOTED, State.ROLLED_BACK, State.ABORTED)


def make_plan(**changes: Any) -> Plan:
    fields: Dict[str, Any] = dict(rollout="app", run="r1", seq=6, state=State.PROGRESSING, steps=STEPS,
                                  step_index=1, hosts=("lb-1", "lb-2"), started_at=100.0, updated_at=400.0,
                                  barrier_at=410.0, looked=True, reason="why not", digest="d1")
    fields.update(changes)
    return Plan(**fields)


def refused(call: Callable[[], Plan], *words: str) -> str:
    with pytest.raises(StateError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    return message


# --- start -------------------------------------------------------------------------------------------------


def test_start_a_first_run() -> None:
    plan = commands.start(None, "app", STEPS, ["lb-2", "lb-1"], NOW, "lb-1", run_id="run-a")
    assert plan == Plan(rollout="app", run="run-a", seq=1, state=State.PROGRESSING, steps=STEPS, step_index=0,
                        hosts=("lb-1", "lb-2"), started_at=NOW, updated_at=NOW, reason="started from host lb-1")


@pytest.mark.parametrize("state", ENDED)
def test_start_after_a_finished_run_is_a_new_run_with_a_higher_seq(state: State) -> None:
    plan = commands.start(make_plan(state=state), "app", STEPS, ["lb-1"], NOW, "lb-2")
    assert plan.run != "r1" and len(plan.run) == 32
    assert (plan.seq, plan.state, plan.step_index, plan.barrier_at, plan.looked) == (7, State.PROGRESSING, 0, None,
                                                                                       False)
    assert plan.hosts == ("lb-1",)


def test_every_start_is_a_run_of_its_own() -> None:
    first = commands.start(None, "app", STEPS, ["lb-1"], NOW, "lb-1")
    second = commands.start(None, "app", STEPS, ["lb-1"], NOW, "lb-1")
    assert first.run != second.run


@pytest.mark.parametrize("state, step", [(State.PROGRESSING, "2/3"), (State.PAUSED, "2/3")])
def test_start_refuses_while_a_run_is_active(state: State, step: str) -> None:
    message = refused(lambda: commands.start(make_plan(state=state), "app", STEPS, ["lb-1"], NOW, "lb-1"))
    assert message == f"rollout 'app' is already {state.value} in the fleet (step {step}); abort it first"


def test_start_refuses_with_no_hosts() -> None:
    refused(lambda: commands.start(None, "app", STEPS, [], NOW, "lb-1"),
            "rollout 'app': no live host of the fleet has it configured")


def test_start_refuses_with_no_steps() -> None:
    assert refused(lambda: commands.start(None, "app", (), ["lb-1"], NOW, "lb-1")) == "rollout 'app': no steps"


# --- the commands on a run ----------------------------------------------------------------------------------


VERBS: Dict[str, Callable[[Optional[Plan]], Plan]] = {
    "pause": lambda plan: commands.pause(plan, "app", NOW, "lb-2"),
    "resume": lambda plan: commands.resume(plan, "app", NOW, "lb-2"),
    "promote": lambda plan: commands.promote(plan, "app", NOW, "lb-2"),
    "abort": lambda plan: commands.abort(plan, "app", NOW, "lb-2"),
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_command_on_a_rollout_never_run_is_refused(verb: str) -> None:
    message = refused(lambda: VERBS[verb](None))
    assert message == f"cannot {verb} rollout 'app': the fleet has never run it"


@pytest.mark.parametrize("state", ENDED)
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_command_on_a_finished_run_is_refused(verb: str, state: State) -> None:
    message = refused(lambda: VERBS[verb](make_plan(state=state, reason="the canary failed")))
    assert message == f"cannot {verb} rollout 'app': its last run is {state.value} (the canary failed)"


def test_pause_a_progressing_run() -> None:
    plan = commands.pause(make_plan(), "app", NOW, "lb-2")
    assert plan == make_plan(state=State.PAUSED, updated_at=NOW, reason="paused from host lb-2")


def test_pause_with_a_reason() -> None:
    assert commands.pause(make_plan(), "app", NOW, "lb-2", reason="change freeze").reason == "change freeze"


def test_pause_refuses_a_paused_run() -> None:
    message = refused(lambda: commands.pause(make_plan(state=State.PAUSED, reason="host lb-3 lost"), "app", NOW,
                                             "lb-1"))
    assert message == "rollout 'app' is already paused: host lb-3 lost"


def test_resume_bumps_seq_and_starts_the_bake_time_over() -> None:
    plan = commands.resume(make_plan(state=State.PAUSED), "app", NOW, "lb-1")
    assert (plan.state, plan.seq, plan.step_index) == (State.PROGRESSING, 7, 1)
    assert (plan.barrier_at, plan.looked, plan.updated_at) == (None, False, NOW)
    assert (plan.run, plan.hosts, plan.digest) == ("r1", ("lb-1", "lb-2"), "d1")
    assert plan.reason == "resumed from host lb-1"


def test_resume_refuses_a_run_that_is_not_paused() -> None:
    assert refused(lambda: commands.resume(make_plan(), "app", NOW, "lb-1")) == "rollout 'app' is not paused"


@pytest.mark.parametrize("state", [State.PROGRESSING, State.PAUSED])
def test_promote_moves_to_the_next_step(state: State) -> None:
    plan = commands.promote(make_plan(state=state, step_index=0), "app", NOW, "lb-2")
    assert (plan.state, plan.step_index, plan.seq, plan.barrier_at, plan.looked) == (State.PROGRESSING, 1, 7, None,
                                                                                       False)
    assert plan.reason == "moved on to step 2 from host lb-2"


def test_promote_full_moves_to_the_last_step() -> None:
    plan = commands.promote(make_plan(step_index=0), "app", NOW, "lb-2", full=True)
    assert (plan.state, plan.step_index, plan.percent, plan.seq) == (State.PROGRESSING, 2, Fraction(100), 7)
    assert plan.reason == "moved on to step 3 from host lb-2"


@pytest.mark.parametrize("full", [False, True])
def test_promote_at_the_last_step_promotes(full: bool) -> None:
    plan = commands.promote(make_plan(step_index=2), "app", NOW, "lb-2", full=full)
    assert (plan.state, plan.step_index, plan.seq) == (State.PROMOTED, 2, 7)
    assert plan.reason == "promoted from host lb-2"


@pytest.mark.parametrize("state", [State.PROGRESSING, State.PAUSED])
def test_abort_restores_every_host(state: State) -> None:
    plan = commands.abort(make_plan(state=state), "app", NOW, "lb-2")
    assert (plan.state, plan.seq, plan.step_index, plan.updated_at) == (State.ABORTED, 7, 1, NOW)
    assert plan.reason == "aborted from host lb-2"
    assert commands.abort(make_plan(), "app", NOW, "lb-2", reason="bad build").reason == "bad build"
