"""The rollout state machine, with a fake config engine, fake traffic and a real StateStore.

The fakes model what the real wiring promises: ``FakeApplier.apply`` and
``restore`` are all-or-nothing (a transaction plus the journal's recovery),
the hashes are sha256 of the files' contents, and ``plan`` is deterministic.
Crashes are simulated by raising ``Crash`` (a BaseException, like SIGKILL it
runs no handler of the rollout) before or after a side effect, then building a
new ``Rollout`` from the same store and the same "disk" and calling ``recover``.
"""

from __future__ import annotations

import hashlib
import json
import os
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS
from nginx_canary.errors import BadInputError, BusyError, CanaryError, NginxRejectedError, StateError
from nginx_canary.logs.window import Stats
from nginx_canary.domain import State, percent_text
from nginx_canary.rollout.machine import Rollout
from nginx_canary.config.model import AnalysisSettings, RolloutSettings
from nginx_canary.rollout.store import RolloutState, StateStore

STATE_VALUES = [s.value for s in State]

T0 = 1_700_000_000.0
UP = "/etc/nginx/conf.d/upstream.conf"
SITE = "/etc/nginx/conf.d/site.conf"
STEPS = (Fraction(10), Fraction(25), Fraction(50), Fraction(100))


class Crash(BaseException):
    """The daemon dies here (SIGKILL): nothing after it runs."""


# --- fakes ---------------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FakeApplier:
    """A config engine over an in-memory "disk": each file is (text outside the weights, the canary share)."""

    def __init__(self, paths: Tuple[str, ...] = (UP, SITE)) -> None:
        self.disk: Dict[str, Tuple[str, str]] = {p: (f"contents of {p}", "original") for p in paths}
        self.snapshots: Dict[str, Dict[str, Tuple[str, str]]] = {}
        self.calls: List[Tuple[str, Any]] = []
        self.fail: Dict[str, List[CanaryError]] = {"apply": [], "restore": [], "plan": [], "begin": []}
        self.crash: Optional[Tuple[str, str]] = None  # (method, "before" | "after"), fires once
        self.last_returned: Optional[Dict[str, str]] = None
        self.dirty = False  # edited behind our back since the last write

    # what the tests look at
    @property
    def applied(self) -> List[str]:
        return [percent_text(arg) for name, arg in self.calls if name == "apply"]

    @property
    def restores(self) -> List[str]:
        return [arg for name, arg in self.calls if name == "restore"]

    @staticmethod
    def hashes(files: Dict[str, Tuple[str, str]]) -> Dict[str, str]:
        return {path: _sha(f"{text}\n{share}") for path, (text, share) in files.items()}

    def disk_hashes(self) -> Dict[str, str]:
        """``files_now()`` for the test's own eyes: no call recorded, no crash or failure."""
        return self.hashes(self.disk)

    def percent_on_disk(self) -> str:
        shares = {share for _, share in self.disk.values()}
        assert len(shares) == 1, "a transaction never leaves the files at different steps"
        return shares.pop()

    def edit(self, path: str = UP) -> None:
        """Someone else edits a file."""
        text, share = self.disk[path]
        self.disk[path] = (text + " # edited by hand", share)
        self.dirty = True

    # the protocol
    def _enter(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))
        if self.crash == (name, "before"):
            self.crash = None
            raise Crash(name)
        if self.fail.get(name):
            raise self.fail[name].pop(0)

    def _leave(self, name: str) -> None:
        if self.crash == (name, "after"):
            self.crash = None
            raise Crash(name)

    def begin(self, rollout_name: str) -> str:
        self._enter("begin", rollout_name)
        snapshot_id = f"snap-{len(self.snapshots) + 1}"
        self.snapshots[snapshot_id] = dict(self.disk)
        self._leave("begin")
        return snapshot_id

    def plan(self, percent: Fraction) -> Dict[str, str]:
        self._enter("plan", percent)
        return self.hashes({p: (text, percent_text(percent)) for p, (text, _) in self.disk.items()})

    def apply(self, percent: Fraction) -> Dict[str, str]:
        self._enter("apply", percent)
        self.disk = {p: (text, percent_text(percent)) for p, (text, _) in self.disk.items()}
        self.last_returned = self.hashes(self.disk)
        self.dirty = False
        self._leave("apply")
        return dict(self.last_returned)

    def restore(self, snapshot_id: str) -> Dict[str, str]:
        self._enter("restore", snapshot_id)
        self.disk = dict(self.snapshots[snapshot_id])
        self.last_returned = self.hashes(self.disk)
        self.dirty = False
        self._leave("restore")
        return dict(self.last_returned)

    def restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        self._enter("restore_weights", snapshot_id)
        shares = self.snapshots[snapshot_id]
        self.disk = {p: (text, shares[p][1] if p in shares else share) for p, (text, share) in self.disk.items()}
        self.last_returned = self.hashes(self.disk)
        self._leave("restore_weights")
        return dict(self.last_returned)

    def plan_restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        self._enter("plan_restore_weights", snapshot_id)
        shares = self.snapshots[snapshot_id]
        return self.hashes({p: (text, shares[p][1] if p in shares else share) for p, (text, share) in self.disk.items()})

    def snapshot_files(self, snapshot_id: str) -> Dict[str, str]:
        self._enter("snapshot_files", snapshot_id)
        if snapshot_id not in self.snapshots:
            raise StateError(f"no snapshot {snapshot_id}")
        return self.hashes(self.snapshots[snapshot_id])

    def files_now(self) -> Dict[str, str]:
        self._enter("files_now")
        return self.hashes(self.disk)

    def hashes_of(self, paths) -> Dict[str, str]:
        hashes = self.hashes(self.disk)
        return {path: hashes.get(path, "") for path in paths}


def make_stats(requests: int, errors: int = 0, latency: float = 0.05) -> Stats:
    stats = Stats()
    if requests - errors:
        stats.add(200, latency, count=requests - errors)
    if errors:
        stats.add(502, latency, count=errors)
    return stats


class FakeTraffic:
    """What the step's evidence shows: a healthy, failing or too quiet canary next to a healthy stable group.

    Healthy is plenty of clean requests (the judge passes it at once); failing
    is half of them 5xx; too quiet is fewer than min_requests.
    """

    def __init__(self, mode: str = PASS) -> None:
        self.mode = mode
        self.calls: List[float] = []
        self.steps: List[float] = []

    def begin_step(self, at: float) -> None:
        self.steps.append(at)

    def evidence(self, now: float) -> Tuple[Stats, Stats]:
        self.calls.append(now)
        stable = make_stats(8000)
        if self.mode == PASS:
            return make_stats(2000), stable
        if self.mode == FAIL:
            return make_stats(100, errors=50), stable
        return make_stats(5), stable


def make_settings(**changes: Any) -> RolloutSettings:
    analysis = changes.pop("analysis", None) or AnalysisSettings(
        interval=1.0, window=30.0, min_requests=20, failure_threshold=changes.pop("failure_threshold", 2))
    fields: Dict[str, Any] = dict(name="app", upstream="backend", canary=("10.0.0.12:8080",), steps=STEPS,
                                  step_interval=60.0, on_success="keep", analysis=analysis)
    fields.update(changes)
    return RolloutSettings(**fields)


class Env:
    def __init__(self, tmp_path) -> None:
        self.store = StateStore(str(tmp_path / "state"), clock=lambda: 0.0)
        self.applier = FakeApplier()
        self.traffic = FakeTraffic()
        self.settings = make_settings()

    def rollout(self, **changes: Any) -> Rollout:
        if changes:
            self.settings = make_settings(**changes)
        return Rollout(self.settings, self.store, self.applier, self.traffic)

    def restart(self, now: float) -> Tuple[Rollout, Optional[str]]:
        """A new daemon process: a new Rollout from what is on disk, recovered."""
        rollout = Rollout(self.settings, self.store, self.applier, self.traffic)
        return rollout, rollout.recover(now)

    def events(self) -> List[str]:
        return [r["event"] for r in self.store.history("app")]


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path)


def tick_until(rollout: Rollout, start: float, end: float, every: float = 1.0,
               stop: Callable[[Rollout], bool] = lambda r: False) -> float:
    """Tick every ``every`` s from ``start`` to ``end`` inclusive; returns the time of the last tick."""
    now = start
    while now <= end:
        rollout.tick(now)
        if stop(rollout):
            return now
        now += every
    return now - every


def assert_persisted(env: Env, rollout: Rollout) -> None:
    """The state file says what the rollout holds (a check's last_verdict may be newer in memory)."""
    saved = env.store.load("app")
    assert saved is not None
    ignore = ("last_verdict", "updated_at")
    assert {k: v for k, v in saved.to_dict().items() if k not in ignore} == \
        {k: v for k, v in rollout.state.to_dict().items() if k not in ignore}


# --- helpers ----------------------------------------------------------------------------


# --- the happy path -------------------------------------------------------------------------


def test_healthy_rollout_promoted_through_every_step_only_after_each_bake_time(env):
    rollout = env.rollout()
    rollout.start(T0)
    assert rollout.state.state == "progressing" and rollout.state.step_index == 0
    assert env.applier.applied == ["10"]
    assert rollout.state.snapshot_id == "snap-1"
    assert rollout.state.expected_files == env.applier.last_returned
    assert_persisted(env, rollout)

    moves: List[Tuple[float, str]] = []
    now = T0 + 1
    while rollout.state.state == "progressing" and now < T0 + 1000:
        before = rollout.state.canary_percent
        verdict = rollout.tick(now)
        assert verdict is not None and verdict.verdict == PASS
        if rollout.state.canary_percent != before or rollout.state.state != "progressing":
            moves.append((now - T0, rollout.state.canary_percent if rollout.state.state == "progressing" else "done"))
        now += 1
    # Each step bakes exactly step_interval (60 s) before the next; the last one too before promotion.
    assert moves == [(60, "25"), (120, "50"), (180, "100"), (240, "done")]
    assert env.applier.applied == ["10", "25", "50", "100"]
    assert env.applier.restores == []
    assert rollout.state.state == "promoted"
    assert rollout.state.canary_percent == "100"
    assert rollout.state.snapshot_id is None
    assert "on_success: keep" in rollout.state.message
    assert env.applier.percent_on_disk() == "100"
    assert_persisted(env, rollout)
    events = env.events()
    assert events[:2] == ["start", "step"] and events[-1] == "promoted"
    assert events.count("step") == 4
    assert rollout.tick(now) is None  # a finished rollout runs no checks


def test_checks_judge_the_evidence_since_the_step_took_effect_with_the_configured_limits(env):
    rollout = env.rollout(analysis=AnalysisSettings(interval=1.0, min_requests=50))
    rollout.start(T0)
    assert env.traffic.steps == [T0]  # the first step's evidence begins when it is applied
    env.traffic.mode = INCONCLUSIVE
    verdict = rollout.tick(T0 + 1)
    assert env.traffic.calls == [T0 + 1]
    assert verdict.verdict == INCONCLUSIVE and "need 50" in verdict.reason
    env.traffic.mode = PASS
    tick_until(rollout, T0 + 2, T0 + 61)
    assert rollout.state.canary_percent == "25" and env.traffic.steps == [T0, T0 + 60]  # bake time over


def test_a_step_without_a_decision_pauses_after_max_step_wait(env):
    rollout = env.rollout(analysis=AnalysisSettings(interval=1.0, max_step_wait=30.0))
    rollout.start(T0)
    env.traffic.mode = INCONCLUSIVE
    tick_until(rollout, T0 + 1, T0 + 29)
    assert rollout.state.state == "progressing"
    rollout.tick(T0 + 30)
    assert rollout.state.state == "paused"
    assert rollout.state.paused_reason.startswith("no decision after max_step_wait (30 s): only 5 canary requests")


def test_after_a_restart_the_evidence_begins_afresh(env):
    rollout = env.rollout()
    rollout.start(T0)
    env.traffic.steps.clear()
    rollout, _ = env.restart(T0 + 5)
    assert env.traffic.steps == [T0 + 5]


def test_on_success_restore_puts_the_original_files_back(env):
    rollout = env.rollout(on_success="restore", steps=(Fraction(50), Fraction(100)), step_interval=10.0)
    original = env.applier.files_now()
    rollout.start(T0)
    tick_until(rollout, T0 + 1, T0 + 100, stop=lambda r: r.state.state != "progressing")
    assert rollout.state.state == "promoted"
    assert env.applier.applied == ["50", "100"]
    assert env.applier.restores == ["snap-1"]
    assert env.applier.files_now() == original == rollout.state.expected_files
    assert rollout.state.canary_percent == "0"
    assert "on_success: restore" in rollout.state.message and "original files restored" in rollout.state.message
    assert env.events()[-2:] == ["promoted", "restored"]


def test_start_with_steps_and_interval_overrides(env):
    rollout = env.rollout()
    rollout.start(T0, steps=[Fraction(5), Fraction("12.5"), Fraction(100)], step_interval=5)
    assert rollout.state.steps == ("5", "12.5", "100")
    assert rollout.status(T0)["steps"] == [5, 12.5, 100]
    tick_until(rollout, T0 + 1, T0 + 5)
    assert rollout.state.canary_percent == "12.5"
    assert env.applier.applied == ["5", "12.5"]


def test_start_refused_when_active_and_on_bad_input(env):
    rollout = env.rollout()
    with pytest.raises(BadInputError, match="last step must be 100"):
        rollout.start(T0, steps=[Fraction(10), Fraction(50)])
    with pytest.raises(BadInputError, match="step_interval"):
        rollout.start(T0, step_interval=0)
    assert env.applier.calls == []  # refused before any snapshot
    rollout.start(T0)
    state = rollout.state.to_dict()
    with pytest.raises(BadInputError, match="already progressing at step 1 of 4 \\(10 %\\)"):
        rollout.start(T0 + 1)
    rollout.pause(T0 + 2, "lunch")
    with pytest.raises(BadInputError, match="already paused"):
        rollout.start(T0 + 3)
    assert rollout.state.state == "paused"
    assert env.applier.applied == ["10"] and state["snapshot_id"] == rollout.state.snapshot_id


def test_a_finished_rollout_can_start_again_with_a_new_snapshot(env):
    rollout = env.rollout()
    rollout.start(T0)
    rollout.abort(T0 + 5)
    rollout.start(T0 + 10)
    assert rollout.state.state == "progressing" and rollout.state.snapshot_id == "snap-2"
    assert rollout.state.started_at == T0 + 10 and rollout.state.last_verdict is None


# --- failures and rollback -----------------------------------------------------------------------


def test_failing_canary_rolled_back_after_exactly_failure_threshold_consecutive_fails(env):
    rollout = env.rollout(failure_threshold=3)
    original = env.applier.files_now()
    rollout.start(T0)
    env.traffic.mode = FAIL
    assert rollout.tick(T0 + 1).verdict == FAIL
    assert rollout.tick(T0 + 2).verdict == FAIL
    assert rollout.state.state == "progressing" and rollout.state.failure_streak == 2
    assert env.applier.restores == []
    assert_persisted(env, rollout)  # the streak is on disk
    verdict = rollout.tick(T0 + 3)
    assert verdict.verdict == FAIL
    assert rollout.state.state == "rolled_back"
    assert env.applier.restores == ["snap-1"]
    assert env.applier.files_now() == original == rollout.state.expected_files
    assert rollout.state.canary_percent == "0" and rollout.state.snapshot_id is None
    assert rollout.state.message.startswith("rolled back: 3 consecutive failed checks (failure_threshold 3): ")
    assert "error_rate" in rollout.state.message
    assert_persisted(env, rollout)
    history = env.store.history("app")
    checks = [r for r in history if r["event"] == "check"]
    assert [c["detail"]["verdict"]["verdict"] for c in checks] == [FAIL, FAIL, FAIL]
    assert [c["detail"]["failure_streak"] for c in checks] == [1, 2, 3]
    check = checks[0]["detail"]["verdict"]["checks"][0]
    assert {"value", "threshold", "canary_requests", "stable_requests", "reason", "verdict"} <= set(check)
    assert [r["event"] for r in history][-2:] == ["rollback", "restored"]
    assert rollout.tick(T0 + 4) is None


def test_a_single_fail_followed_by_a_pass_does_not_roll_back_but_restarts_the_bake_time(env):
    rollout = env.rollout()
    rollout.start(T0)
    tick_until(rollout, T0 + 1, T0 + 29)
    env.traffic.mode = FAIL
    rollout.tick(T0 + 30)
    env.traffic.mode = PASS
    tick_until(rollout, T0 + 31, T0 + 89)
    assert rollout.state.state == "progressing" and rollout.state.failure_streak == 0
    assert rollout.state.canary_percent == "10"  # 60 s since start, but only 59 s since the failed check
    rollout.tick(T0 + 90)
    assert rollout.state.canary_percent == "25"
    assert env.applier.restores == []


def test_inconclusive_between_fails_neither_resets_nor_counts(env):
    rollout = env.rollout()
    rollout.start(T0)
    for mode, streak in ((FAIL, 1), (INCONCLUSIVE, 1), (INCONCLUSIVE, 1)):
        env.traffic.mode = mode
        rollout.tick(T0 + streak)
        assert rollout.state.failure_streak == streak
    env.traffic.mode = FAIL
    rollout.tick(T0 + 10)
    assert rollout.state.state == "rolled_back"


def test_too_little_traffic_waits_at_the_step_forever_then_moves_once_traffic_arrives(env):
    rollout = env.rollout()
    rollout.start(T0)
    env.traffic.mode = INCONCLUSIVE
    tick_until(rollout, T0 + 1, T0 + 3600, every=5.0)
    assert rollout.state.state == "progressing" and rollout.state.canary_percent == "10"
    assert rollout.status(T0 + 3600)["time_left_in_step"] == 0.0
    assert env.applier.applied == ["10"]
    env.traffic.mode = PASS
    rollout.tick(T0 + 3601)
    assert rollout.state.canary_percent == "25"


def test_never_promoted_blind_at_the_last_step(env):
    rollout = env.rollout(steps=(Fraction(100),), step_interval=10.0)
    rollout.start(T0)
    env.traffic.mode = INCONCLUSIVE
    tick_until(rollout, T0 + 1, T0 + 500)
    assert rollout.state.state == "progressing"
    env.traffic.mode = PASS
    rollout.tick(T0 + 501)
    assert rollout.state.state == "promoted"


def test_restore_failure_leaves_the_rollout_failed_loudly_and_abort_retries(env, caplog):
    rollout = env.rollout(failure_threshold=1)
    rollout.start(T0)
    env.applier.fail["restore"].append(NginxRejectedError("nginx -t failed: unknown directive"))
    env.traffic.mode = FAIL
    with caplog.at_level("ERROR", logger="nginx_canary.rollout.machine"):
        rollout.tick(T0 + 1)
    assert rollout.state.state == "failed"
    assert rollout.state.message.startswith("FAILED: rolled back: a failed check")
    assert "unknown directive" in rollout.state.message and "nginx-canary abort app" in rollout.state.message
    assert "may still give the canary 10 %" in rollout.state.message
    assert rollout.state.snapshot_id == "snap-1"  # the restore is still owed
    assert any("FAILED" in r.getMessage() for r in caplog.records)
    assert env.events()[-1] == "restore_failed"
    assert_persisted(env, rollout)
    assert rollout.tick(T0 + 2) is None
    with pytest.raises(BadInputError, match="still owes a restore"):
        rollout.start(T0 + 3)
    for command in (lambda: rollout.pause(T0 + 3), lambda: rollout.resume(T0 + 3), lambda: rollout.promote(T0 + 3)):
        with pytest.raises(BadInputError):
            command()
    rollout.abort(T0 + 4)
    assert rollout.state.state == "aborted"
    assert env.applier.restores == ["snap-1", "snap-1"]
    assert env.applier.percent_on_disk() == "original"


def test_abort_from_failed_that_fails_again_raises_and_stays_failed(env):
    rollout = env.rollout(failure_threshold=1)
    rollout.start(T0)
    env.applier.fail["restore"] += [NginxRejectedError("bad"), NginxRejectedError("still bad")]
    env.traffic.mode = FAIL
    rollout.tick(T0 + 1)
    with pytest.raises(NginxRejectedError, match="still bad"):
        rollout.abort(T0 + 2)
    assert rollout.state.state == "failed" and rollout.state.message.startswith("FAILED: aborted")


def test_apply_failure_during_an_advance_pauses_at_the_step_that_passed(env):
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)
    at_ten = env.applier.files_now()
    env.applier.fail["apply"].append(NginxRejectedError("reload did not take effect"))
    verdict = rollout.tick(T0 + 10)  # no exception escapes a check
    assert verdict.verdict == PASS
    assert env.applier.applied == ["10", "25"]
    assert rollout.state.state == "paused" and rollout.state.canary_percent == "10"
    assert rollout.state.step_index == 0 and rollout.state.expected_files == at_ten
    assert rollout.state.paused_reason.startswith(
        "could not apply step 2 of 4 (25 %): reload did not take effect; the canary keeps 10 %")
    assert env.applier.restores == []
    assert [e for e in env.events() if e in ("apply_failed", "pause", "rollback")] == ["apply_failed", "pause"]
    assert_persisted(env, rollout)
    # Protection goes on while paused, and resume tries the step change again.
    rollout.resume(T0 + 11)
    tick_until(rollout, T0 + 12, T0 + 22)
    assert env.applier.applied == ["10", "25", "25"]


def test_a_failed_manual_promote_changes_nothing_and_says_so(env):
    rollout = env.rollout()
    rollout.start(T0)
    before = rollout.state.to_dict()
    env.applier.fail["apply"].append(NginxRejectedError("nginx -t failed"))
    with pytest.raises(NginxRejectedError):
        rollout.promote(T0 + 1)
    after = rollout.state.to_dict()
    assert (after["state"], after["step_index"], after["canary_percent"], after["expected_files"]) == \
        (before["state"], before["step_index"], before["canary_percent"], before["expected_files"])
    assert rollout.state.message == "could not apply step 2 of 4 (25 %): nginx -t failed; nothing changed"
    assert_persisted(env, rollout)


def test_apply_failure_at_start_raises_and_changes_nothing(env):
    rollout = env.rollout()
    env.applier.fail["apply"].append(NginxRejectedError("nginx -t failed"))
    with pytest.raises(NginxRejectedError):
        rollout.start(T0)
    assert rollout.state.state == "rolled_back"
    assert env.applier.restores == []  # the files still held the snapshot: no reload for nothing
    assert "the files already held the snapshot" in rollout.state.message
    assert_persisted(env, rollout)
    rollout.start(T0 + 1)  # and it can be started again
    assert rollout.state.state == "progressing"


def test_busy_during_an_advance_stays_at_the_step_and_retries(env):
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)
    before = rollout.state.to_dict()
    env.applier.fail["apply"].append(BusyError("busy: another nginx-canary (pid 7) is changing the nginx config"))
    rollout.tick(T0 + 10)
    assert rollout.state.state == "progressing" and rollout.state.canary_percent == "10"
    assert rollout.state.expected_files == before["expected_files"]
    assert rollout.state.step_started_at == T0
    assert "trying again at the next check" in rollout.state.message
    assert_persisted(env, rollout)
    rollout.tick(T0 + 11)
    assert rollout.state.canary_percent == "25"
    assert env.applier.applied == ["10", "25", "25"]


def test_busy_at_start_leaves_the_rollout_idle(env):
    rollout = env.rollout()
    env.applier.fail["apply"].append(BusyError("busy"))
    with pytest.raises(BusyError):
        rollout.start(T0)
    assert rollout.state.state == "idle"
    assert env.store.load("app").state == "idle"


def test_plan_failure_counts_as_a_failed_step_change(env):
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)
    env.applier.fail["plan"].append(BadInputError("unknown canary server 10.0.0.12:8080"))
    rollout.tick(T0 + 10)
    assert rollout.state.state == "paused" and "unknown canary server" in rollout.state.paused_reason
    assert env.applier.applied == ["10"]


# --- operator commands -----------------------------------------------------------------------------


def test_pause_stops_stepping_and_resume_restarts_the_bake_time(env):
    rollout = env.rollout()
    rollout.start(T0)
    tick_until(rollout, T0 + 1, T0 + 50)
    rollout.pause(T0 + 50, "waiting for the DBA")
    assert rollout.state.state == "paused" and rollout.state.paused_reason == "waiting for the DBA"
    assert_persisted(env, rollout)
    with pytest.raises(BadInputError, match="only a progressing rollout can be paused"):
        rollout.pause(T0 + 51)
    tick_until(rollout, T0 + 51, T0 + 300)
    assert rollout.state.canary_percent == "10" and rollout.state.state == "paused"
    assert rollout.status(T0 + 300)["time_left_in_step"] is None
    rollout.resume(T0 + 300)
    assert rollout.state.state == "progressing" and rollout.state.paused_reason is None
    assert rollout.state.step_started_at == T0 + 300
    with pytest.raises(BadInputError, match="only a paused rollout can be resumed"):
        rollout.resume(T0 + 301)
    tick_until(rollout, T0 + 301, T0 + 359)
    assert rollout.state.canary_percent == "10"
    rollout.tick(T0 + 360)
    assert rollout.state.canary_percent == "25"
    assert env.applier.applied == ["10", "25"]
    assert {"pause", "resume"} <= set(env.events())


def test_a_paused_rollout_is_still_rolled_back_when_the_canary_fails(env):
    rollout = env.rollout()
    rollout.start(T0)
    rollout.pause(T0 + 1)
    assert rollout.state.paused_reason == "paused by the operator"
    env.traffic.mode = FAIL
    rollout.tick(T0 + 2)
    rollout.tick(T0 + 3)
    assert rollout.state.state == "rolled_back"


def test_promote_moves_to_the_next_step_now_from_progressing_or_paused(env):
    rollout = env.rollout()
    rollout.start(T0)
    rollout.promote(T0 + 1)
    assert rollout.state.canary_percent == "25" and rollout.state.step_started_at == T0 + 1
    rollout.pause(T0 + 2)
    rollout.promote(T0 + 3)
    assert rollout.state.state == "progressing" and rollout.state.canary_percent == "50"
    rollout.promote(T0 + 4)
    assert rollout.state.canary_percent == "100"
    rollout.promote(T0 + 5)  # at the last step: done
    assert rollout.state.state == "promoted" and "promoted by the operator" in rollout.state.message
    assert env.applier.applied == ["10", "25", "50", "100"]
    with pytest.raises(BadInputError, match="only a progressing or paused rollout"):
        rollout.promote(T0 + 6)


def test_promote_full_goes_straight_to_100_and_finishes(env):
    rollout = env.rollout()
    rollout.start(T0)
    rollout.promote(T0 + 1, full=True)
    assert rollout.state.state == "promoted" and rollout.state.canary_percent == "100"
    assert env.applier.applied == ["10", "100"]
    assert env.applier.percent_on_disk() == "100"


def test_promote_full_with_on_success_restore_restores_without_stepping(env):
    rollout = env.rollout(on_success="restore")
    rollout.start(T0)
    rollout.promote(T0 + 1, full=True)
    assert rollout.state.state == "promoted"
    assert env.applier.applied == ["10"] and env.applier.restores == ["snap-1"]
    assert env.applier.percent_on_disk() == "original"


def test_manual_promote_whose_apply_fails_stays_and_reports(env):
    rollout = env.rollout()
    rollout.start(T0)
    env.applier.fail["apply"].append(NginxRejectedError("nginx -t failed"))
    with pytest.raises(NginxRejectedError):
        rollout.promote(T0 + 1)
    assert rollout.state.state == "progressing" and rollout.state.canary_percent == "10"
    assert env.applier.percent_on_disk() == "10"


def test_abort_restores_the_snapshot(env):
    rollout = env.rollout()
    with pytest.raises(BadInputError, match="nothing to abort"):
        rollout.abort(T0)
    original = env.applier.files_now()
    rollout.start(T0)
    rollout.promote(T0 + 1)
    rollout.abort(T0 + 2, "wrong build")
    assert rollout.state.state == "aborted"
    assert rollout.state.message.startswith("aborted: wrong build; original files restored (snapshot snap-1)")
    assert env.applier.files_now() == original
    assert env.events()[-2:] == ["abort", "restored"]
    with pytest.raises(BadInputError):
        rollout.abort(T0 + 3)


def test_abort_from_paused(env):
    rollout = env.rollout()
    rollout.start(T0)
    rollout.pause(T0 + 1)
    rollout.abort(T0 + 2)
    assert rollout.state.state == "aborted" and rollout.state.paused_reason is None


# --- drift ---------------------------------------------------------------------------------


def test_files_changed_outside_pause_before_the_next_step_and_resume_reapplies(env):
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)
    env.applier.edit(SITE)
    rollout.tick(T0 + 10)
    assert rollout.state.state == "paused"
    assert rollout.state.paused_reason.startswith(f"config files changed outside nginx-canary: {SITE}")
    assert env.applier.applied == ["10"]
    rollout.resume(T0 + 20)
    assert rollout.state.state == "progressing" and rollout.state.canary_percent == "10"
    assert env.applier.applied == ["10", "10"]  # the step again, on the edited files
    assert rollout.state.expected_files == env.applier.files_now()
    assert rollout.state.step_started_at == T0 + 20
    tick_until(rollout, T0 + 21, T0 + 30)
    assert rollout.state.canary_percent == "25"


def test_a_rollback_over_a_foreign_edit_restores_the_weights_and_keeps_the_edit(env):
    rollout = env.rollout(failure_threshold=1)
    rollout.start(T0)
    env.applier.edit(UP)
    env.traffic.mode = FAIL
    rollout.tick(T0 + 1)
    assert rollout.state.state == "rolled_back"
    record = [r for r in env.store.history("app") if r["event"] == "rollback"][0]
    assert record["detail"]["changed_outside"] == [UP]
    assert env.applier.restores == []  # the snapshot's bytes were not written over the edit
    assert env.applier.disk[UP] == ("contents of " + UP + " # edited by hand", "original")
    assert env.applier.disk[SITE] == ("contents of " + SITE, "original")
    restored = [r for r in env.store.history("app") if r["event"] == "restored"][0]
    assert restored["detail"]["weights_only"] is True
    assert "edits made outside nginx-canary kept" in rollout.state.message
    assert rollout.state.expected_files == env.applier.disk_hashes()
    assert rollout.state.snapshot_id is None


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_during_a_weights_only_restore_is_settled_at_recovery(env, when):
    rollout = env.rollout()
    rollout.start(T0)
    env.applier.edit(UP)
    env.applier.crash = ("restore_weights", when)
    with pytest.raises(Crash):
        rollout.abort(T0 + 1)
    rollout, account = env.restart(T0 + 2)
    assert rollout.state.state == "aborted" and rollout.state.snapshot_id is None
    assert env.applier.disk[UP] == ("contents of " + UP + " # edited by hand", "original")
    assert rollout.state.expected_files == env.applier.disk_hashes()
    assert "edits made outside nginx-canary kept" in rollout.state.message
    outcome = [r for r in env.store.history("app") if r["event"] == "recovered"][-1]["detail"]["outcome"]
    assert outcome == ("restore of the weights had finished" if when == "after"
                       else "restore of the weights had not happened, restoring")


# --- history and status -------------------------------------------------------------------------


def test_history_is_bounded_for_passing_checks_and_complete_for_fails(env):
    rollout = env.rollout(step_interval=10_000.0)
    rollout.start(T0)
    tick_until(rollout, T0 + 1, T0 + 300)  # 300 passing checks
    checks = [r for r in env.store.history("app") if r["event"] == "check"]
    assert [r["time"] - T0 for r in checks] == [1, 61, 121, 181, 241]
    env.traffic.mode = INCONCLUSIVE
    rollout.tick(T0 + 301)
    rollout.tick(T0 + 302)
    env.traffic.mode = FAIL
    rollout.tick(T0 + 303)
    env.traffic.mode = PASS
    rollout.tick(T0 + 304)
    rollout.tick(T0 + 305)
    checks = [r for r in env.store.history("app") if r["event"] == "check"]
    assert [(r["time"] - T0, r["detail"]["verdict"]["verdict"]) for r in checks[5:]] == \
        [(301, INCONCLUSIVE), (303, FAIL), (304, PASS)]
    assert checks[-1]["detail"]["failure_threshold"] == 2
    assert len(env.store.history("app")) < 15


def test_every_transition_is_in_the_history_with_state_and_step(env):
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)
    rollout.pause(T0 + 1, "why not")
    rollout.resume(T0 + 2)
    rollout.promote(T0 + 3)
    rollout.abort(T0 + 4)
    history = env.store.history("app")
    summary = [(r["event"], r["state"], r["canary_percent"]) for r in history]
    assert summary == [
        ("start", "progressing", "0"),
        ("step", "progressing", "10"),
        ("pause", "paused", "10"),
        ("resume", "progressing", "10"),
        ("promote", "progressing", "10"),
        ("step", "progressing", "25"),
        ("abort", "aborted", "25"),
        ("restored", "aborted", "0"),
    ]
    assert history[0]["detail"]["snapshot_id"] == "snap-1"
    assert history[0]["detail"]["steps"] == ["10", "25", "50", "100"]
    assert all(r["detail"]["message"] for r in history)


def test_status_shape_is_json_and_complete(env):
    rollout = env.rollout()
    idle = rollout.status(T0)
    assert idle["state"] == "idle" and idle["steps"] == [10, 25, 50, 100] and idle["last_check"] is None
    rollout.start(T0)
    rollout.tick(T0 + 15)
    status = rollout.status(T0 + 20)
    json.dumps(status, allow_nan=False)
    required = {"name", "state", "step", "canary_percent", "steps", "step_started_at", "time_left_in_step",
                "canary", "stable", "last_check", "message"}
    assert required <= set(status)
    assert status["name"] == "app" and status["state"] == "progressing" and status["step"] == 0
    assert status["canary_percent"] == 10 and status["step_started_at"] == T0
    assert status["time_left_in_step"] == 40.0
    assert status["canary"]["requests"] == 2000 and status["stable"]["requests"] == 8000
    assert status["last_check"]["verdict"] == PASS and status["last_check"]["checks"]
    assert status["message"] == "at step 1 of 4 (10 %)"
    assert rollout.status()["time_left_in_step"] == 45.0  # the latest time it was given


def test_reconfigure_keeps_the_run(env):
    rollout = env.rollout()
    rollout.start(T0, step_interval=5.0)
    rollout.reconfigure(make_settings(step_interval=600.0, failure_threshold=5))
    assert rollout.step_interval == 5.0 and rollout.failure_threshold == 5
    with pytest.raises(BadInputError):
        rollout.reconfigure(make_settings(name="other"))


# --- crash recovery ------------------------------------------------------------------------------


def crash(env: Env, method: str, when: str, action: Callable[[], Any]) -> None:
    env.applier.crash = (method, when)
    with pytest.raises(Crash):
        action()


def test_recover_nothing_to_do_for_idle_and_finished(env):
    rollout, note = env.restart(T0)
    assert note is None and rollout.state.state == "idle"
    rollout.start(T0)
    rollout.abort(T0 + 1)
    calls = len(env.applier.calls)
    rollout, note = env.restart(T0 + 2)
    assert note is None and rollout.state.state == "aborted" and len(env.applier.calls) == calls


def test_recover_progressing_with_matching_files_goes_on_and_restarts_the_bake_time(env):
    rollout = env.rollout()
    rollout.start(T0)
    env.traffic.mode = FAIL
    rollout.tick(T0 + 30)  # a failure on record
    rollout, note = env.restart(T0 + 100)
    assert rollout.state.state == "progressing" and rollout.state.step_started_at == T0 + 100
    assert rollout.state.failure_streak == 1  # still evidence
    assert "resumed after a restart" in note
    env.traffic.mode = PASS
    tick_until(rollout, T0 + 101, T0 + 159)
    assert rollout.state.canary_percent == "10"
    rollout.tick(T0 + 160)
    assert rollout.state.canary_percent == "25"
    assert env.applier.applied == ["10", "25"]


def test_recover_keeps_the_step_interval_of_the_run(env):
    rollout = env.rollout()
    rollout.start(T0, step_interval=5.0)
    rollout, _ = env.restart(T0 + 1)
    assert rollout.step_interval == 5.0
    tick_until(rollout, T0 + 2, T0 + 6)
    assert rollout.state.canary_percent == "25"


def test_crash_after_the_snapshot_before_any_save_leaves_the_rollout_idle(env):
    rollout = env.rollout()
    crash(env, "begin", "after", lambda: rollout.start(T0))
    rollout, note = env.restart(T0 + 1)
    assert rollout.state.state == "idle" and note is None
    assert env.applier.percent_on_disk() == "original"
    rollout.start(T0 + 2)
    assert rollout.state.snapshot_id == "snap-2"


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_during_the_first_apply(env, when):
    rollout = env.rollout()
    crash(env, "apply", when, lambda: rollout.start(T0))
    saved = env.store.load("app")
    assert saved.state == "progressing" and saved.step_started_at is None  # the intent
    rollout, note = env.restart(T0 + 5)
    assert rollout.state.state == "progressing" and rollout.state.step_started_at == T0 + 5
    assert rollout.state.canary_percent == "10" and env.applier.percent_on_disk() == "10"
    assert rollout.state.expected_files == env.applier.files_now()
    # Not done: applied again; done: recorded, nothing applied again.
    assert env.applier.applied == (["10", "10"] if when == "before" else ["10"])
    assert note


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_during_a_step_advance(env, when):
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)
    crash(env, "apply", when, lambda: rollout.tick(T0 + 10))
    rollout, _ = env.restart(T0 + 20)
    assert rollout.state.state == "progressing" and rollout.state.canary_percent == "25"
    assert env.applier.percent_on_disk() == "25"
    assert rollout.state.expected_files == env.applier.files_now()
    assert rollout.state.step_started_at == T0 + 20


def test_crash_during_a_step_advance_with_files_changed_by_someone_pauses(env):
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)
    crash(env, "apply", "after", lambda: rollout.tick(T0 + 10))
    env.applier.edit(UP)
    rollout, note = env.restart(T0 + 20)
    assert rollout.state.state == "paused"
    assert rollout.state.paused_reason.startswith(f"config files changed outside nginx-canary: {UP}")
    assert env.applier.applied == ["10", "25"]  # nothing written over the edit
    rollout.resume(T0 + 30)
    assert rollout.state.state == "progressing" and rollout.state.expected_files == env.applier.files_now()


def test_recover_with_files_changed_outside_pauses_with_the_paths(env):
    rollout = env.rollout()
    rollout.start(T0)
    env.applier.edit(SITE)
    rollout, note = env.restart(T0 + 5)
    assert rollout.state.state == "paused"
    assert rollout.state.paused_reason == (f"config files changed outside nginx-canary: {SITE}; "
                                           "resume applies the step again, abort restores the snapshot")
    assert note == rollout.state.message
    assert env.applier.applied == ["10"]


def test_recover_with_the_snapshot_back_in_place_pauses_and_says_so(env):
    rollout = env.rollout()
    rollout.start(T0)
    rollout.promote(T0 + 1)
    env.applier.disk = dict(env.applier.snapshots["snap-1"])  # someone put the originals back
    rollout, _ = env.restart(T0 + 5)
    assert rollout.state.state == "paused"
    assert "they hold the snapshot taken at start again" in rollout.state.paused_reason
    rollout.abort(T0 + 6)
    assert rollout.state.state == "aborted"
    assert env.applier.restores == []  # nothing to write


def test_recover_paused_with_matching_files_stays_paused(env):
    rollout = env.rollout()
    rollout.start(T0)
    rollout.pause(T0 + 1, "on hold")
    rollout, note = env.restart(T0 + 5)
    assert note is None
    assert rollout.state.state == "paused" and rollout.state.paused_reason == "on hold"


def test_recover_when_the_files_cannot_be_read_pauses(env):
    rollout = env.rollout()
    rollout.start(T0)
    env.applier.fail["files_now"] = [CanaryError("cannot read /etc/nginx/conf.d/upstream.conf: Permission denied")]
    rollout, _ = env.restart(T0 + 5)
    assert rollout.state.state == "paused" and "Permission denied" in rollout.state.paused_reason


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_during_a_rollback(env, when):
    rollout = env.rollout(failure_threshold=1)
    original = env.applier.files_now()
    rollout.start(T0)
    env.traffic.mode = FAIL
    crash(env, "restore", when, lambda: rollout.tick(T0 + 1))
    saved = env.store.load("app")
    assert saved.state == "rolled_back" and saved.snapshot_id == "snap-1"  # a restore still owed
    rollout, note = env.restart(T0 + 5)
    assert rollout.state.state == "rolled_back" and rollout.state.snapshot_id is None
    assert env.applier.files_now() == original == rollout.state.expected_files
    assert env.applier.restores == (["snap-1", "snap-1"] if when == "before" else ["snap-1"])
    assert rollout.state.message.startswith("rolled back: a failed check")
    assert "original files restored" in note


def test_crash_during_a_rollback_with_files_changed_by_someone_fails_without_writing(env):
    rollout = env.rollout(failure_threshold=1)
    rollout.start(T0)
    env.traffic.mode = FAIL
    crash(env, "restore", "before", lambda: rollout.tick(T0 + 1))
    env.applier.edit(UP)
    rollout, _ = env.restart(T0 + 5)
    assert rollout.state.state == "failed"
    assert "changed outside nginx-canary while the restore was interrupted" in rollout.state.message
    assert env.applier.restores == ["snap-1"]  # only the interrupted one
    rollout.abort(T0 + 6)  # the operator decides
    assert rollout.state.state == "aborted" and env.applier.percent_on_disk() == "original"


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_during_an_abort(env, when):
    rollout = env.rollout()
    rollout.start(T0)
    crash(env, "restore", when, lambda: rollout.abort(T0 + 1, "bad build"))
    rollout, _ = env.restart(T0 + 5)
    assert rollout.state.state == "aborted" and rollout.state.message.startswith("aborted: bad build")
    assert env.applier.percent_on_disk() == "original"


def test_busy_while_recovering_an_unfinished_step_change_retries_at_the_next_tick(env):
    rollout = env.rollout()
    crash(env, "apply", "before", lambda: rollout.start(T0))
    env.applier.fail["apply"].append(BusyError("busy"))
    rollout, _ = env.restart(T0 + 5)
    assert rollout.state.state == "progressing" and rollout.state.step_started_at is None
    assert rollout.tick(T0 + 6) is None
    assert rollout.state.step_started_at == T0 + 6 and env.applier.percent_on_disk() == "10"


def test_a_busy_restore_stays_owed_and_is_retried_at_the_next_tick(env):
    rollout = env.rollout(failure_threshold=1)
    rollout.start(T0)
    env.applier.fail["restore"].append(BusyError("busy: another nginx-canary (pid 7) is changing the nginx config"))
    env.traffic.mode = FAIL
    rollout.tick(T0 + 1)
    assert rollout.state.state == "rolled_back" and rollout.state.snapshot_id == "snap-1"
    assert "trying again at the next check" in rollout.state.message
    assert rollout.status(T0 + 1)["snapshot_id"] == "snap-1"
    with pytest.raises(BadInputError, match="still restoring snapshot snap-1"):
        rollout.start(T0 + 1.5)
    with pytest.raises(BadInputError, match="already restoring"):
        rollout.abort(T0 + 1.5)
    assert rollout.tick(T0 + 2) is None
    assert rollout.state.state == "rolled_back" and rollout.state.snapshot_id is None
    assert rollout.state.message.startswith("rolled back: a failed check")
    assert env.applier.percent_on_disk() == "original"
    assert env.applier.restores == ["snap-1", "snap-1"]


def test_a_busy_manual_abort_reports_busy_and_finishes_at_the_next_tick(env):
    rollout = env.rollout()
    rollout.start(T0)
    env.applier.fail["restore"].append(BusyError("busy"))
    with pytest.raises(BusyError):
        rollout.abort(T0 + 1)
    assert rollout.state.state == "aborted" and rollout.state.snapshot_id == "snap-1"
    rollout.tick(T0 + 2)
    assert rollout.state.snapshot_id is None and env.applier.percent_on_disk() == "original"


class FlakyStore(StateStore):
    """A store whose next ``save`` or history appends fail, as on a full disk."""

    def __init__(self, state_dir: str) -> None:
        super().__init__(state_dir, clock=lambda: 0.0)
        self.failing_saves = 0
        self.failing_history = False

    def save(self, state: RolloutState) -> None:
        if self.failing_saves:
            self.failing_saves -= 1
            raise StateError("cannot write: No space left on device")
        super().save(state)

    def append_history(self, name, event, **kwargs):
        if self.failing_history:
            raise StateError("cannot append to history: No space left on device")
        return super().append_history(name, event, **kwargs)


def test_a_rollback_restores_nginx_even_when_its_intent_cannot_be_saved(env, tmp_path):
    env.store = FlakyStore(str(tmp_path / "flaky"))
    rollout = env.rollout(failure_threshold=1)
    rollout.start(T0)
    env.traffic.mode = FAIL
    env.store.failing_saves = 2  # the check's save and the rollback's intent
    rollout.tick(T0 + 1)
    assert env.applier.restores == ["snap-1"] and rollout.state.state == "rolled_back"
    assert env.store.load("app").state == "rolled_back"


def test_history_failures_do_not_stop_a_rollout(env, tmp_path, caplog):
    env.store = FlakyStore(str(tmp_path / "flaky"))
    rollout = env.rollout(step_interval=10.0)
    env.store.failing_history = True
    with caplog.at_level("ERROR", logger="nginx_canary.rollout.machine"):
        rollout.start(T0)
        tick_until(rollout, T0 + 1, T0 + 10)
    assert rollout.state.canary_percent == "25"
    assert any("cannot record" in r.getMessage() for r in caplog.records)
    assert env.store.history("app") == []


def test_a_saved_active_state_without_a_snapshot_fails_loudly_and_abort_ends_it(env):
    env.store.save(RolloutState(name="app", state="progressing", steps=("10", "100"), canary_percent="10",
                                expected_files=env.applier.files_now(), step_started_at=T0))
    rollout, note = env.restart(T0 + 1)
    assert rollout.state.state == "failed"
    assert "records no snapshot" in note
    rollout.abort(T0 + 2)
    assert rollout.state.state == "aborted" and "files are left as they are" in rollout.state.message
    assert env.applier.restores == []


# --- properties -----------------------------------------------------------------------------------


OPERATIONS = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from([PASS, PASS, PASS, FAIL, INCONCLUSIVE]),
              st.sampled_from([1.0, 5.0, 20.0, 45.0])),
    st.tuples(st.just("start"), st.sampled_from([None, 5.0])),
    st.tuples(st.just("pause")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("promote"), st.booleans()),
    st.tuples(st.just("abort")),
    st.tuples(st.just("fail"), st.sampled_from(["apply", "restore", "plan"]),
              st.sampled_from(["rejected", "busy"])),
    st.tuples(st.just("edit")),
)


class Model:
    """Drives a rollout with a random sequence of operations and checks the invariants after each."""

    def __init__(self, env: Env, on_success: str, crash_at: Optional[Tuple[int, str, str]] = None) -> None:
        self.env = env
        self.rollout = env.rollout(on_success=on_success, failure_threshold=2, step_interval=30.0)
        self.now = T0
        self.restore_failure_injected = False
        self.edited = False
        self.crash_at = crash_at
        self.calls = 0

    def run(self, operations) -> None:
        for op in operations:
            self.step(op)

    def step(self, op) -> None:
        env, rollout = self.env, self.rollout
        self.now += op[2] if op[0] == "tick" else 1.0
        before = _copy_state(rollout.state)
        if self.crash_at is not None and self.crash_at[0] == self.calls:
            env.applier.crash = self.crash_at[1:]
        self.calls += 1
        verdict = None
        try:
            if op[0] == "tick":
                env.traffic.mode = op[1]
                verdict = rollout.tick(self.now)
            elif op[0] == "start":
                rollout.start(self.now, step_interval=op[1])
            elif op[0] == "pause":
                rollout.pause(self.now, "model")
            elif op[0] == "resume":
                rollout.resume(self.now)
            elif op[0] == "promote":
                rollout.promote(self.now, full=op[1])
            elif op[0] == "abort":
                rollout.abort(self.now)
            elif op[0] == "fail":
                error = BusyError("busy") if op[2] == "busy" else NginxRejectedError("rejected")
                env.applier.fail[op[1]].append(error)
                if op[1] == "restore" and op[2] != "busy":
                    self.restore_failure_injected = True  # from now on "failed" is possible
                return
            elif op[0] == "edit":
                if self.crash_at is None:  # foreign edits are tested with crashes elsewhere
                    if rollout.state.state in ("promoted", "rolled_back", "aborted") and rollout.state.snapshot_id:
                        # An edit while a restore is owed: the restore refuses to overwrite it.
                        self.restore_failure_injected = True
                    env.applier.edit()
                    self.edited = True
                return
        except BadInputError:
            # A refused command changes nothing.
            assert rollout.state.to_dict() == before.to_dict()
        except BusyError:
            finished = rollout.state.state in ("rolled_back", "aborted", "promoted")
            if before.state in ("progressing", "paused", "failed") and finished:
                assert rollout.state.snapshot_id is not None  # the restore is owed
                return
            # Nothing changed: the rollout is where it was.
            after = {k: v for k, v in rollout.state.to_dict().items() if k not in ("message", "updated_at")}
            assert after == {k: v for k, v in before.to_dict().items() if k not in ("message", "updated_at")}
        except CanaryError:
            # A manual command whose restore failed (failed), whose first step failed (rolled back), or
            # whose step change failed: then the rollout is where it was.
            st = rollout.state
            unchanged = (st.state, st.step_index, st.canary_percent) == \
                (before.state, before.step_index, before.canary_percent)
            assert st.state in ("rolled_back", "failed") or (op[0] in ("promote", "resume") and unchanged)
        except Crash:
            env.applier.crash = None
            env.applier.fail = {k: [] for k in env.applier.fail}  # a restart is a clean slate
            self.rollout, _ = env.restart(self.now)
            self.check_after_recovery()
            return
        self.check(op, before, verdict)

    def check(self, op, before: RolloutState, verdict) -> None:
        rollout, applier = self.rollout, self.env.applier
        state = rollout.state
        assert state.state in STATE_VALUES
        assert state.state != "failed" or self.restore_failure_injected
        if state.state in ("progressing", "paused"):
            assert state.snapshot_id is not None
            assert state.step_started_at is not None
            assert state.expected_files == applier.last_returned
            if not applier.dirty:
                assert applier.disk_hashes() == state.expected_files
                assert applier.percent_on_disk() == state.canary_percent
        restored = state.state in ("rolled_back", "aborted") or (
            state.state == "promoted" and self.rollout.settings.on_success == "restore")
        if restored and state.snapshot_id is not None:
            assert "trying again at the next check" in state.message  # owed since a BusyError
        elif restored and not applier.dirty:  # (edits after the end are the operator's business)
            assert applier.disk_hashes() == applier.hashes(applier.snapshots[f"snap-{len(applier.snapshots)}"])
        if state.state == "promoted" and self.rollout.settings.on_success == "keep":
            assert applier.percent_on_disk() == "100" and state.canary_percent == "100"
        if op[0] == "tick" and before.state in ("progressing", "paused"):
            last = len(before.steps) - 1
            assert before.step_started_at is not None
            if state.state == "promoted":
                # Never promoted blind: a conclusive pass at 100 % after its whole bake time.
                assert before.state == "progressing" and verdict.verdict == PASS
                assert before.step_index == last and before.steps[last] == "100"
                assert self.now - before.step_started_at >= rollout.step_interval
            if state.state == "progressing" and state.step_index > before.step_index:
                assert before.state == "progressing" and verdict.verdict == PASS
                assert state.step_index == before.step_index + 1
                assert self.now - before.step_started_at >= rollout.step_interval
            if state.state in ("rolled_back", "failed") and verdict.verdict == FAIL:
                assert state.failure_streak >= 2
            if before.state == "paused":
                assert state.step_index == before.step_index
        saved = self.env.store.load("app")
        if saved is not None:
            ignore = ("last_verdict", "updated_at")
            assert {k: v for k, v in saved.to_dict().items() if k not in ignore} == \
                {k: v for k, v in state.to_dict().items() if k not in ignore}
        json.dumps(rollout.status(self.now), allow_nan=False)

    def check_after_recovery(self) -> None:
        state, applier = self.rollout.state, self.env.applier
        assert state.state in STATE_VALUES
        assert state.state != "failed" or self.restore_failure_injected
        if state.state in ("progressing", "paused"):
            # Without foreign edits a crash never looks like one.
            assert state.paused_reason is None or "changed outside" not in state.paused_reason
            assert state.step_started_at is not None
            assert applier.disk_hashes() == state.expected_files == applier.last_returned
            assert applier.percent_on_disk() == state.canary_percent
        if state.state in ("rolled_back", "aborted", "promoted"):
            assert state.snapshot_id is None
        if state.state in ("rolled_back", "aborted"):
            assert applier.disk_hashes() == applier.hashes(applier.snapshots[f"snap-{len(applier.snapshots)}"])


def _copy_state(state: RolloutState) -> RolloutState:
    return RolloutState.from_dict(state.to_dict())


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(on_success=st.sampled_from(["keep", "restore"]),
       operations=st.lists(OPERATIONS, min_size=1, max_size=40))
def test_random_operations_keep_the_invariants(tmp_path_factory, on_success, operations):
    env = Env(tmp_path_factory.mktemp("model"))
    model = Model(env, on_success)
    model.run([("start", None)] + operations)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(on_success=st.sampled_from(["keep", "restore"]),
       operations=st.lists(OPERATIONS, min_size=1, max_size=30),
       crash_at=st.tuples(st.integers(0, 30),
                          st.sampled_from(["begin", "apply", "restore", "plan", "files_now", "snapshot_files"]),
                          st.sampled_from(["before", "after"])))
def test_a_crash_anywhere_recovers_consistently(tmp_path_factory, on_success, operations, crash_at):
    env = Env(tmp_path_factory.mktemp("crash"))
    model = Model(env, on_success, crash_at=crash_at)
    model.run([("start", None)] + operations)


def test_listeners_see_every_history_record_and_cannot_break_the_rollout(env, caplog):
    rollout = env.rollout()
    seen: List[Tuple[str, Dict[str, Any]]] = []

    def broken(event: str, record: Dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    rollout.listeners.extend([broken, lambda event, record: seen.append((event, record))])
    rollout.start(T0)
    env.traffic.mode = FAIL
    rollout.tick(T0 + 1)
    rollout.tick(T0 + 2)
    assert rollout.state.state == "rolled_back"
    assert [e for e, _ in seen] == env.events()
    assert [r for _, r in seen] == env.store.history("app")
    assert "a listener failed" in caplog.text


def test_listeners_are_told_even_when_the_history_cannot_be_written(env):
    rollout = env.rollout()
    seen: List[str] = []
    rollout.listeners.append(lambda event, record: seen.append(record["detail"]["message"]))
    rollout.start(T0)
    # A history that cannot be appended to (root writes through modes, so a directory in its place).
    os.unlink(env.store.history_path("app"))
    os.mkdir(env.store.history_path("app"))
    rollout.pause(T0 + 1)
    assert seen[-1].startswith("paused at step 1")


def test_an_edit_between_step_changes_pauses_at_the_next_check(env):
    rollout = env.rollout()
    rollout.start(T0)
    rollout.tick(T0 + 1)
    assert rollout.state.state == "progressing"
    env.applier.edit(UP)
    rollout.tick(T0 + 2)  # long before the bake time is over
    assert rollout.state.state == "paused"
    assert rollout.state.paused_reason.startswith(f"config files changed outside nginx-canary: {UP}")
    assert env.events()[-1] == "drift"
    assert env.applier.applied == ["10"]  # nothing written over the edit


# --- gates and extra checks -------------------------------------------------------------------


class FakeGates:
    def __init__(self, **answers: str) -> None:
        self.answers = dict(answers)  # gate -> "open" | "closed" | "pending"; absent: not configured
        self.asked: List[str] = []

    def __call__(self, name: str, now: float) -> Optional[Tuple[str, str]]:
        self.asked.append(name)
        if name not in self.answers:
            return None
        state = self.answers[name]
        reason = f"gate {name} is open" if state == "open" else f"waiting for gate {name}: answered 403"
        return state, reason


def gated(env: Env, gates: FakeGates, **changes: Any) -> Rollout:
    env.settings = make_settings(**changes)
    return Rollout(env.settings, env.store, env.applier, env.traffic, gates=gates)


def test_pre_rollout_gate_holds_the_first_step_until_it_opens(env):
    gates = FakeGates(pre_rollout="pending")
    rollout = gated(env, gates)
    rollout.start(T0)
    assert env.applier.applied == []
    assert rollout.state.state == "progressing" and rollout.state.canary_percent == "0"
    assert rollout.status()["waiting_for_gate"] == "pre_rollout"
    gates.answers["pre_rollout"] = "closed"
    tick_until(rollout, T0 + 1, T0 + 100)
    assert env.applier.applied == [] and "answered 403" in rollout.state.message
    assert [r["detail"]["gate_state"] for r in env.store.history("app") if r["event"] == "gate"] == ["pending", "closed"]
    # A restart keeps waiting.
    rollout, _ = env.restart(T0 + 101)
    rollout.gates = gates
    assert rollout.state.gate == "pre_rollout"
    gates.answers["pre_rollout"] = "open"
    rollout.tick(T0 + 102)
    assert env.applier.applied == ["10"] and rollout.state.gate is None
    assert rollout.state.canary_percent == "10"


def test_confirm_step_and_confirm_promotion_hold_until_open(env):
    gates = FakeGates(confirm_step="closed", confirm_promotion="closed")
    rollout = gated(env, gates, steps=(Fraction(50), Fraction(100)))
    rollout.start(T0)
    tick_until(rollout, T0 + 1, T0 + 200)
    assert env.applier.applied == ["50"]
    assert rollout.state.gate == "confirm_step"
    assert rollout.state.message.startswith("waiting for gate confirm_step: answered 403 (at step 1 of 2")
    assert len([r for r in env.store.history("app") if r["event"] == "gate"]) == 1  # recorded once, not per check
    gates.answers["confirm_step"] = "open"
    rollout.tick(T0 + 201)
    assert env.applier.applied == ["50", "100"] and rollout.state.gate is None
    tick_until(rollout, T0 + 202, T0 + 400)
    assert rollout.state.state == "progressing" and rollout.state.gate == "confirm_promotion"
    gates.answers["confirm_promotion"] = "open"
    rollout.tick(T0 + 401)
    assert rollout.state.state == "promoted"


def test_a_failing_canary_is_rolled_back_while_waiting_at_a_gate(env):
    gates = FakeGates(confirm_step="closed")
    rollout = gated(env, gates)
    rollout.start(T0)
    tick_until(rollout, T0 + 1, T0 + 100)
    assert rollout.state.gate == "confirm_step"
    env.traffic.mode = FAIL
    rollout.tick(T0 + 101)
    rollout.tick(T0 + 102)
    assert rollout.state.state == "rolled_back"


def test_promote_overrides_gates(env):
    gates = FakeGates(pre_rollout="closed", confirm_step="closed")
    rollout = gated(env, gates)
    rollout.start(T0)
    rollout.promote(T0 + 1)
    assert env.applier.applied == ["10"] and rollout.state.gate is None
    tick_until(rollout, T0 + 2, T0 + 100)
    assert rollout.state.gate == "confirm_step"
    rollout.promote(T0 + 101)
    assert env.applier.applied == ["10", "25"]


def test_extra_checks_take_part_in_the_verdict(env):
    from nginx_canary.rollout.checks import Check
    from nginx_canary.rollout.verdict import CheckResult

    def failing(canary: Stats, stable: Stats, thresholds: Any) -> CheckResult:
        return CheckResult("http_checks", FAIL, None, 0.0, canary.requests, stable.requests,
                           "http://127.0.0.1:1/health answered 500")

    env.settings = make_settings()
    rollout = Rollout(env.settings, env.store, env.applier, env.traffic,
                      extra_checks=lambda now: (Check("http_checks", failing, "a URL failed"),))
    rollout.start(T0)
    verdict = rollout.tick(T0 + 1)
    assert verdict.verdict == FAIL and "answered 500" in verdict.reason
    rollout.tick(T0 + 2)
    assert rollout.state.state == "rolled_back"


def test_a_step_change_redone_at_recovery_that_fails_pauses_at_the_step_before(env):
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)
    env.applier.crash = ("apply", "before")
    with pytest.raises(Crash):
        rollout.tick(T0 + 10)
    env.applier.fail["apply"].append(NginxRejectedError("nginx -t failed"))
    rollout, _ = env.restart(T0 + 11)
    assert rollout.state.state == "paused"
    assert rollout.state.canary_percent == "10" and rollout.state.step_index == 0
    assert rollout.state.expected_files == env.applier.disk_hashes()
    assert "could not apply step 2 of 4 (25 %): nginx -t failed; the canary keeps 10 %" in rollout.state.paused_reason


def test_a_first_step_redone_at_recovery_that_fails_ends_the_run(env):
    rollout = env.rollout()
    env.applier.crash = ("apply", "before")
    with pytest.raises(Crash):
        rollout.start(T0)
    env.applier.fail["apply"].append(NginxRejectedError("nginx -t failed"))
    rollout, _ = env.restart(T0 + 1)
    assert rollout.state.state == "rolled_back"
    assert env.applier.percent_on_disk() == "original"


# --- checks observed while a step change is under way (the daemon's worker thread) ---------------


class ObservingApplier(FakeApplier):
    """Runs ``during_apply()`` inside ``apply``, after the files changed: the daemon's checks meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.during_apply: Optional[Callable[[], None]] = None

    def apply(self, percent: Fraction) -> Dict[str, str]:
        self._enter("apply", percent)
        self.disk = {p: (text, percent_text(percent)) for p, (text, _) in self.disk.items()}
        if self.during_apply is not None:
            hook, self.during_apply = self.during_apply, None
            hook()
        self.last_returned = self.hashes(self.disk)
        self.dirty = False
        return dict(self.last_returned)


def test_observe_counts_a_check_but_changes_nothing_and_tick_acts_on_it(env):
    rollout = env.rollout()
    assert rollout.observe(T0) is None  # idle: nothing to judge
    rollout.start(T0)
    env.traffic.mode = FAIL
    assert rollout.observe(T0 + 1).verdict == FAIL
    verdict = rollout.observe(T0 + 2)
    assert verdict.verdict == FAIL and rollout.state.failure_streak == 2
    assert rollout.state.state == "progressing" and env.applier.restores == []  # observing never acts
    assert [c["detail"]["failure_streak"] for c in env.store.history("app") if c["event"] == "check"] == [1, 2]
    judged = len(env.traffic.calls)
    assert rollout.tick(T0 + 2.1, verdict) is verdict  # acted on as given, not judged again
    assert len(env.traffic.calls) == judged
    assert rollout.state.state == "rolled_back" and env.applier.restores == ["snap-1"]
    assert rollout.state.message.startswith("rolled back: 2 consecutive failed checks (failure_threshold 2): ")


def test_checks_failing_during_a_step_change_count_and_the_rollback_follows_it(env):
    env.applier = ObservingApplier()
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)
    observed = []

    def canary_breaks_meanwhile() -> None:
        assert rollout.state.step_started_at is None  # the step change is in flight
        env.traffic.mode = FAIL
        observed.extend(rollout.observe(T0 + t).verdict for t in (10.25, 10.5))
        assert rollout.state.step_started_at is None  # observing did not touch the crash-recovery intent

    env.applier.during_apply = canary_breaks_meanwhile
    verdict = rollout.tick(T0 + 10)  # passes, then steps to 25 %: the change runs the checks above
    assert verdict.verdict == PASS and observed == [FAIL, FAIL]
    st = rollout.state
    assert (st.state, st.canary_percent, st.failure_streak) == ("progressing", "25", 2)
    assert st.step_started_at == T0 + 10.5  # the bake time of the new step restarts at the failed check
    assert_persisted(env, rollout)
    last = rollout.observe(T0 + 10.6)
    assert last.verdict == FAIL
    rollout.tick(T0 + 10.6, last)
    assert rollout.state.state == "rolled_back" and env.applier.restores == ["snap-1"]
    assert [e for e in env.events() if e != "check"][-3:] == ["step", "rollback", "restored"]


def test_a_failed_step_change_keeps_the_checks_observed_meanwhile(env):
    env.applier = ObservingApplier()
    rollout = env.rollout(step_interval=10.0)
    rollout.start(T0)

    def one_fail_then_nginx_rejects() -> None:
        env.traffic.mode = FAIL
        rollout.observe(T0 + 10.25)
        env.applier.disk = {p: (text, "10") for p, (text, _) in env.applier.disk.items()}  # the transaction undoes
        raise NginxRejectedError("reload did not take effect")

    env.applier.during_apply = one_fail_then_nginx_rejects
    rollout.tick(T0 + 10)
    st = rollout.state
    assert (st.state, st.canary_percent, st.failure_streak) == ("paused", "10", 1)
    assert st.last_verdict["verdict"] == FAIL
    rollout.tick(T0 + 10.5)  # the next failed check completes the streak: protection holds while paused
    assert rollout.state.state == "rolled_back"
