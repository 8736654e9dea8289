"""Judging a step (rollout/judging.py): the evidence since the step began, and its one planned look."""

from __future__ import annotations

from typing import List, Tuple

from nginx_canary.logs.window import Stats
from tests.rollout.test_machine import T0, Env


def _figures(requests: int, errors: int) -> Stats:
    stats = Stats()
    stats.add(200, 0.015, count=requests - errors)
    stats.add(502, 0.015, count=errors)
    return stats


class SlowlyWorse:
    """7.5 % 5xx against a 5 % limit: too little evidence for the always-valid test within a minute."""

    def __init__(self) -> None:
        self.steps: List[float] = []

    def begin_step(self, at: float) -> None:
        self.steps.append(at)

    def evidence(self, now: float) -> Tuple[Stats, Stats]:
        return _figures(1200, 90), _figures(10800, 540)


def test_the_planned_look_comes_once_when_the_bake_time_is_over(tmp_path):
    env = Env(tmp_path)
    env.traffic = SlowlyWorse()  # type: ignore[assignment]
    rollout = env.rollout(step_interval=60.0, failure_threshold=1)
    rollout.start(T0)
    for now in (T0 + 1, T0 + 30, T0 + 59):
        rollout.tick(now)
        assert rollout.state.state == "progressing", rollout.state.message
    rollout.tick(T0 + 60)
    assert rollout.state.state == "rolled_back"
    assert "is shown above the 5 % limit at the end of the bake time" in rollout.state.message


def test_what_the_planned_look_found_stands_for_a_higher_failure_threshold(tmp_path):
    env = Env(tmp_path)
    env.traffic = SlowlyWorse()  # type: ignore[assignment]
    rollout = env.rollout(step_interval=60.0, failure_threshold=2)
    rollout.start(T0)
    rollout.tick(T0 + 60)
    assert rollout.state.state == "progressing" and rollout.state.failure_streak == 1
    rollout.tick(T0 + 61)  # not looked at again: what it found still counts
    assert rollout.state.state == "rolled_back"
    assert rollout.state.message.startswith("rolled back: 2 consecutive failed checks (failure_threshold 2)")
