"""The daemon's loop in-process: a real Daemon (not opened: no nginx, no socket) turning over rollouts built from
the state machine's fakes, on an injected clock."""

from __future__ import annotations

import threading
from types import MappingProxyType
from typing import Dict

import pytest

from nginx_canary.config.model import AnalysisSettings, DaemonSettings
from nginx_canary.daemon.runtime import RolloutRuntime, RunTraffic
from nginx_canary.daemon.sd_notify import Notifier
from nginx_canary.daemon.service import POLL_EVERY, Daemon
from nginx_canary.errors import ControlError
from nginx_canary.report.series import SeriesRecorder
from nginx_canary.rollout.verdict import FAIL, PASS
from nginx_canary.rollout.machine import Rollout
from tests.daemon.test_commands import FakeLog
from tests.rollout.test_machine import T0, FakeApplier, FakeTraffic, make_settings

INTERVAL = 1.0


class LiveLog(FakeLog):
    """A fake access log the loop polls: counts the polls, never behind."""

    def __init__(self, traffic: FakeTraffic) -> None:
        super().__init__(traffic)
        self.polls = 0
        self.behind = False

    def poll(self, now: float) -> int:
        self.polls += 1
        return 0


class Clocks:
    def __init__(self) -> None:
        self.now, self.mono = T0, 1000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


@pytest.fixture
def loop(tmp_path):
    clocks = Clocks()
    state_dir = str(tmp_path / "state")
    daemon = Daemon(DaemonSettings(state_dir=state_dir, rollouts=MappingProxyType({})), str(tmp_path / "c.yaml"),
                    clock=lambda: clocks.now, monotonic=lambda: clocks.mono, notifier=Notifier(environ={}))
    traffic = FakeTraffic(PASS)
    log = LiveLog(traffic)
    settings = make_settings(analysis=AnalysisSettings(interval=INTERVAL, window=30.0, min_requests=20,
                                                       failure_threshold=2))
    rollout = Rollout(settings, daemon.store, FakeApplier(), RunTraffic(log))  # type: ignore[arg-type]
    daemon.runtimes["app"] = RolloutRuntime(rollout, rollout.traffic, SeriesRecorder(state_dir, "app"))  # type: ignore[arg-type]
    yield daemon, clocks, traffic, log
    daemon.close()


def test_a_turn_reads_the_logs_and_runs_a_check_only_when_it_is_due(loop):
    daemon, clocks, traffic, log = loop
    daemon.commands.execute("start", {"name": "app"})
    runtime = daemon.runtimes["app"]
    assert runtime.next_check == clocks.mono + INTERVAL
    daemon.turn()
    assert log.polls == 1 and runtime.rollout.state.last_verdict is None  # not due yet
    clocks.advance(INTERVAL)
    daemon.turn()
    # Due: judged on the step's evidence, counted as soon as it is read.
    assert log.polls == 2 and runtime.rollout.state.last_verdict["verdict"] == PASS
    assert runtime.next_check == pytest.approx(clocks.mono + INTERVAL)  # the cadence is kept
    assert daemon.check_lateness.count == 1 and daemon.check_lateness.max == 0.0
    clocks.advance(INTERVAL / 2)
    daemon.turn()
    assert log.polls == 3 and daemon.check_lateness.count == 1  # half an interval later: not due
    clocks.advance(INTERVAL / 2)
    daemon.turn()
    assert runtime.rollout.state.last_verdict["verdict"] == PASS and daemon.check_lateness.count == 2


def test_a_failing_canary_is_rolled_back_after_failure_threshold_due_checks(loop):
    daemon, clocks, traffic, log = loop
    daemon.commands.execute("start", {"name": "app"})
    traffic.mode = FAIL
    verdicts, states = [], []
    for _ in range(4):
        clocks.advance(INTERVAL)
        daemon.turn()
        verdict = daemon.runtimes["app"].rollout.state.last_verdict
        verdicts.append(verdict["verdict"] if verdict else None)
        states.append(str(daemon.runtimes["app"].rollout.state.state))
    # The step's evidence counts from its first request: two failed checks in a row (failure_threshold 2) roll back.
    assert verdicts[:2] == [FAIL, FAIL]
    assert states == ["progressing", "rolled_back", "rolled_back", "rolled_back"]
    assert daemon.summary() == "app: rolled_back"


def test_after_a_stall_the_loop_checks_once_and_starts_the_cadence_afresh(loop):
    daemon, clocks, traffic, log = loop
    daemon.commands.execute("start", {"name": "app"})
    clocks.advance(10 * INTERVAL)  # the loop was held up for ten intervals
    daemon.turn()
    daemon.turn()
    runtime = daemon.runtimes["app"]
    assert runtime.next_check == pytest.approx(clocks.mono + INTERVAL / 2)  # no burst of catch-up checks
    assert daemon.check_lateness.max == pytest.approx(9 * INTERVAL)


def test_a_command_from_another_thread_is_answered_by_the_next_turn(loop):
    daemon, clocks, traffic, log = loop
    answers: Dict[str, object] = {}
    client = threading.Thread(target=lambda: answers.update(status=daemon._submit("status", {"name": "app"})))
    client.start()
    for _ in range(200):  # until the command is queued
        if daemon._sleep_time() == 0.0:
            break
        client.join(0.01)
    assert daemon._sleep_time() == 0.0  # a queued command wakes the loop at once
    daemon.turn()
    client.join(10)
    assert answers["status"]["rollouts"][0]["name"] == "app"  # type: ignore[index]
    assert 0.0 < daemon._sleep_time() <= POLL_EVERY


def test_a_stopping_daemon_refuses_new_commands(loop):
    daemon, clocks, traffic, log = loop
    daemon.stop()
    with pytest.raises(ControlError, match="the daemon is stopping"):
        daemon._submit("status", {})


def test_checks_judged_during_a_step_change_are_acted_on_by_the_next_turn(loop):
    daemon, clocks, traffic, log = loop
    daemon.commands.execute("start", {"name": "app"})
    rollout = daemon.runtimes["app"].rollout
    traffic.mode = FAIL
    for _ in range(3):  # the loop's work while a change runs on the worker thread: judged, counted, not acted on
        clocks.advance(INTERVAL)
        daemon._pump()
    assert rollout.state.failure_streak == 3 and str(rollout.state.state) == "progressing"
    assert rollout.checks.pending is not None and daemon._sleep_time() == 0.0  # the next turn comes at once
    daemon.turn()  # no fresh check is due: the one judged during the change is acted on
    assert str(rollout.state.state) == "rolled_back" and rollout.checks.pending is None
