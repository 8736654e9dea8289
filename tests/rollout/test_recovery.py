"""Recovery after a restart from state files written before the typed fields (owed_restore, step_interval)."""

from __future__ import annotations

import json

import pytest

from nginx_canary.rollout.store import RolloutState
from tests.rollout.test_machine import T0, UP, Crash, Env, tick_until


def _as_written_before_the_typed_fields(env: Env) -> None:
    """Rewrite the state file as the previous release wrote it: no owed_restore, restore_summary, step_interval."""
    path = env.store.state_path("app")
    with open(path) as fh:
        data = json.load(fh)
    for key in ("owed_restore", "restore_summary", "step_interval"):
        data.pop(key)
    with open(path, "w") as fh:
        json.dump(data, fh)


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path)


@pytest.mark.parametrize("edited", [False, True])
def test_a_restore_owed_in_an_older_state_file_is_settled_from_its_message(env, edited):
    rollout = env.rollout()
    rollout.start(T0)
    if edited:
        env.applier.edit(UP)
    env.applier.crash = ("restore_weights" if edited else "restore", "before")
    with pytest.raises(Crash):
        rollout.abort(T0 + 1)
    saved = env.store.load("app")
    assert saved is not None and saved.owed_restore == ("weights" if edited else "snapshot")
    _as_written_before_the_typed_fields(env)
    legacy = env.store.load("app")
    assert legacy is not None
    assert (legacy.owed_restore, legacy.restore_summary) == (saved.owed_restore, "aborted: aborted by the operator")
    rollout, account = env.restart(T0 + 2)
    assert rollout.state.state == "aborted" and rollout.state.snapshot_id is None
    assert rollout.state.owed_restore is None and rollout.state.restore_summary is None
    assert env.applier.percent_on_disk() == "original"
    assert account is not None and account.startswith("aborted: aborted by the operator; ")
    assert ("edits made outside nginx-canary kept" in account) == edited


def test_the_restore_owed_is_read_from_the_state_not_from_its_message(env):
    rollout = env.rollout()
    rollout.start(T0)
    env.applier.edit(UP)
    env.applier.crash = ("restore_weights", "before")
    with pytest.raises(Crash):
        rollout.abort(T0 + 1)
    saved = env.store.load("app")
    assert saved is not None
    saved.message = "a message that says nothing of the restore"
    env.store.save(saved)
    rollout, _ = env.restart(T0 + 2)
    assert rollout.state.snapshot_id is None
    assert env.applier.disk[UP] == ("contents of " + UP + " # edited by hand", "original")  # weights only
    assert rollout.state.message.startswith("aborted: aborted by the operator; the weights at start restored")


def test_the_step_interval_of_a_run_in_an_older_state_file_comes_from_its_history(env):
    rollout = env.rollout()
    rollout.start(T0, step_interval=5.0)
    _as_written_before_the_typed_fields(env)
    rollout, _ = env.restart(T0 + 1)
    assert rollout.state.step_interval == 5.0 and rollout.step_interval == 5.0
    tick_until(rollout, T0 + 2, T0 + 6)
    assert rollout.state.canary_percent == "25"


def test_a_state_file_of_a_finished_run_needs_no_history(env):
    done = RolloutState(name="app", state="rolled_back", steps=("10",), message="rolled back: x; original files restored")
    env.store.save(done)
    _as_written_before_the_typed_fields(env)
    loaded = env.store.load("app")
    assert loaded is not None and loaded.step_interval is None and loaded.owed_restore is None
