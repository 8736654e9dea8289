"""A rollout whose traffic cannot be read (its access log mostly fails to parse) pauses; checks and rollback go on."""

from __future__ import annotations

from typing import List, Optional

import pytest

from nginx_canary.rollout.machine import Rollout
from nginx_canary.rollout.verdict import FAIL
from tests.rollout.test_machine import T0, Env


class Trouble:
    """A log_trouble port: the reason to give at the next call (then none, as LogTraffic does)."""

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self.asked: List[str] = []

    def __call__(self) -> Optional[str]:
        reason, self.reason = self.reason, None
        self.asked.append(reason or "")
        return reason


REASON = "30 of 30 lines of access log /l do not fit log format 'x' (e.g. 'junk'); check that the access_log writes this format"


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path)


def troubled(env: Env, trouble: Trouble) -> Rollout:
    return Rollout(env.settings, env.store, env.applier, env.traffic, log_trouble=trouble)


def test_a_log_that_mostly_fails_to_parse_pauses_with_the_reason(env):
    trouble = Trouble()
    rollout = troubled(env, trouble)
    rollout.start(T0)
    rollout.tick(T0 + 1)
    assert rollout.state.state == "progressing"
    trouble.reason = REASON
    rollout.tick(T0 + 2)
    st = rollout.state
    assert (st.state, st.step_index) == ("paused", 0)
    assert st.paused_reason == REASON + "; resume once it does"
    assert st.message.startswith("paused at step 1") and REASON in st.message
    assert env.events()[-1] == "log_unparsed"
    asked = len(trouble.asked)
    rollout.tick(T0 + 3)
    assert len(trouble.asked) == asked  # paused: not asked again until resumed
    rollout.resume(T0 + 4)
    rollout.tick(T0 + 5)
    assert rollout.state.state == "progressing" and len(trouble.asked) == asked + 1


def test_a_paused_rollout_is_still_rolled_back(env):
    trouble = Trouble()
    rollout = troubled(env, trouble)
    rollout.start(T0)
    trouble.reason = REASON
    rollout.tick(T0 + 1)
    assert rollout.state.state == "paused"
    env.traffic.mode = FAIL
    rollout.tick(T0 + 2)
    rollout.tick(T0 + 3)
    assert rollout.state.state == "rolled_back"
