"""What a check judged during a step change means (rollout/step_checks.py), as pure logic."""

from __future__ import annotations

from nginx_canary.domain import State
from nginx_canary.rollout.step_checks import StepChangeChecks
from nginx_canary.rollout.store import RolloutState
from nginx_canary.rollout.verdict import FAIL, PASS, Verdict

T0 = 1_700_000_000.0


def verdict(kind: str) -> Verdict:
    return Verdict(verdict=kind, checks=(), reason=kind, canary={}, stable={}, at=T0)


def test_the_observed_verdict_is_acted_on_when_no_fresh_check_is_due():
    checks = StepChangeChecks()
    observed = verdict(PASS)
    checks.observed(observed)
    assert checks.take(due=False, rollback_called=False) is observed
    assert checks.pending is None
    assert checks.take(due=False, rollback_called=False) is None


def test_a_due_check_runs_afresh_unless_the_observed_streak_calls_for_a_rollback():
    checks = StepChangeChecks()
    checks.observed(verdict(FAIL))
    assert checks.take(due=True, rollback_called=False) is None
    assert checks.pending is None  # dropped: the fresh check replaces it
    failing = verdict(FAIL)
    checks.observed(failing)
    assert checks.take(due=True, rollback_called=True) is failing


def test_a_failure_between_changes_restarts_the_bake_time_at_once():
    checks = StepChangeChecks()
    state = RolloutState(name="app", state=State.PROGRESSING, steps=("10",), step_started_at=T0)
    checks.failed(state, T0 + 30)
    assert state.step_started_at == T0 + 30
    assert checks.bake_start(T0 + 40) == T0 + 40  # nothing owed to a later change


def test_a_failure_during_a_change_delays_the_bake_time_of_the_step_it_applies():
    checks = StepChangeChecks()
    changing = RolloutState(name="app", state=State.PROGRESSING, steps=("10",), step_started_at=None)
    checks.begin_change()
    checks.failed(changing, T0 + 5)
    assert changing.step_started_at is None
    assert checks.bake_start(T0 + 3) == T0 + 5  # the change ended before the failure was judged
    checks.begin_change()
    checks.failed(changing, T0 + 5)
    assert checks.bake_start(T0 + 9) == T0 + 9
    assert checks.bake_start(T0 + 10) == T0 + 10  # used once


def test_a_new_change_forgets_failures_judged_before_it():
    checks = StepChangeChecks()
    changing = RolloutState(name="app", state=State.PROGRESSING, steps=("10",), step_started_at=None)
    checks.failed(changing, T0 + 50)
    checks.begin_change()
    assert checks.bake_start(T0 + 1) == T0 + 1


def test_what_a_failed_change_counted_goes_with_an_active_fallback_only():
    during = RolloutState(name="app", state=State.PROGRESSING, steps=("10",), failure_streak=2,
                          last_verdict={"verdict": FAIL})
    paused = RolloutState(name="app", state=State.PAUSED, steps=("10",))
    StepChangeChecks.carry_over(during, paused)
    assert (paused.failure_streak, paused.last_verdict) == (2, {"verdict": FAIL})
    idle = RolloutState(name="app")
    StepChangeChecks.carry_over(during, idle)
    assert (idle.failure_streak, idle.last_verdict) == (0, None)
