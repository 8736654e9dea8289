"""The control commands in-process: real Rollouts over the state machine's fakes, no socket, no nginx."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import pytest

from nginx_canary.daemon.commands import CommandHandlers, for_rollout
from nginx_canary.daemon.runtime import RolloutRuntime, RunTraffic
from nginx_canary.errors import BadInputError, NginxRejectedError, UnknownRolloutError
from nginx_canary.logs.health import UnparsedWatch
from nginx_canary.logs.sketch import LatencySketch
from nginx_canary.report.series import SeriesRecorder
from nginx_canary.rollout.machine import Rollout
from nginx_canary.rollout.store import StateStore
from tests.rollout.test_machine import T0, FakeApplier, FakeTraffic, make_settings


class FakeLog:
    """Stands where the live access log would: the fake traffic's windows, nothing unread."""

    def __init__(self, traffic: FakeTraffic) -> None:
        self.fake = traffic
        self.unparsed = UnparsedWatch()

    def begin_step(self, at: float) -> None:
        self.fake.begin_step(at)

    def evidence(self, now: float):
        return self.fake.evidence(now)

    def groups(self, window_seconds: float, now: float):
        """The report series' one-second figures."""
        return self.fake.evidence(now)

    def reading(self) -> Dict[str, int]:
        return {"backlog_bytes": 0, "skipped_bytes": 0, "skips": 0}

    def close(self) -> None:
        return None


@dataclass
class Host:
    store: StateStore
    runtimes: Dict[str, RolloutRuntime] = field(default_factory=dict)
    config_path: str = "/etc/nginx-canary/config.yaml"
    now: float = T0
    mono: float = 100.0
    started_at: Optional[float] = T0 - 60
    check_lateness: LatencySketch = field(default_factory=LatencySketch)
    fleet: None = None

    def clock(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def metrics_url(self) -> Optional[str]:
        return "http://127.0.0.1:9145/metrics"


@pytest.fixture
def host(tmp_path) -> Host:
    store = StateStore(str(tmp_path / "state"), clock=lambda: T0)
    h = Host(store)
    for name in ("app", "api"):
        applier = FakeApplier()
        traffic = RunTraffic(FakeLog(FakeTraffic()))  # type: ignore[arg-type]
        rollout = Rollout(make_settings(name=name), store, applier, traffic)
        h.runtimes[name] = RolloutRuntime(rollout, traffic, SeriesRecorder(str(tmp_path / "state"), name))
    return h


def test_status_of_every_rollout_and_of_one(host):
    commands = CommandHandlers(host)
    every = commands.execute("status", {})
    assert [r["name"] for r in every["rollouts"]] == ["app", "api"]
    assert every["daemon"]["config"] == host.config_path and every["daemon"]["now"] == T0
    assert every["daemon"]["metrics"] == "http://127.0.0.1:9145/metrics"
    assert every["daemon"]["check_lateness_seconds"]["checks"] == 0
    one = commands.execute("status", {"name": "api"})["rollouts"]
    assert len(one) == 1 and one[0]["state"] == "idle" and one[0]["canary_servers"] == ["10.0.0.12:8080"]
    assert one[0]["access_log"] == {"backlog_bytes": 0, "skipped_bytes": 0, "skips": 0}


def test_unknown_rollouts_commands_and_names_are_refused(host):
    commands = CommandHandlers(host)
    with pytest.raises(UnknownRolloutError, match=r"no rollout named 'web' in /etc/nginx-canary/config.yaml "
                                                  r"\(configured: app, api\)"):
        commands.execute("pause", {"name": "web"})
    with pytest.raises(BadInputError, match="unknown command 'reboot'"):
        commands.execute("reboot", {})
    with pytest.raises(BadInputError, match="invalid rollout name"):
        commands.execute("start", {"name": "a b"})
    assert for_rollout({"name": "x" * 200}) == f" for rollout {'x' * 80!r}" and for_rollout({}) == ""


def test_start_applies_the_first_step_schedules_the_check_and_opens_a_series(host):
    commands = CommandHandlers(host)
    runtime = host.runtimes["app"]
    status = commands.execute("start", {"name": "app", "steps": ["5", "50", "100"], "step_interval": 30})
    assert status["state"] == "progressing" and status["steps"] == [5, 50, 100] and status["canary_percent"] == 5
    assert runtime.rollout.judging.since == T0 and status["window_seconds"] == 0.0  # the step's evidence begins
    assert runtime.next_check == host.mono + runtime.rollout.settings.analysis.interval
    assert runtime.series_second == int(T0) and runtime.series_until == T0 + 5.0
    assert host.runtimes["api"].rollout.state.state == "idle"


@pytest.mark.parametrize("args, message", [
    ({"steps": "10,100"}, "steps must be a list of percents"),
    ({"steps": [10, 100]}, "steps must be a list of percents"),
    ({"steps": ["10", "x"]}, "PERCENT must be a number"),
    ({"step_interval": 0}, "step_interval must be a number of seconds above 0"),
    ({"step_interval": True}, "step_interval must be a number of seconds above 0"),
    ({"step_interval": 10 ** 400}, "step_interval must be a number of seconds above 0"),
])
def test_bad_start_arguments_change_nothing(host, args, message):
    commands = CommandHandlers(host)
    with pytest.raises(BadInputError, match=message):
        commands.execute("start", {"name": "app", **args})
    runtime = host.runtimes["app"]
    assert runtime.rollout.state.state == "idle" and runtime.rollout.judging.since is None
    assert host.store.history("app") == []


def test_a_start_whose_first_step_fails_is_rolled_back_and_recorded(host):
    commands = CommandHandlers(host)
    runtime = host.runtimes["app"]
    runtime.rollout.applier.fail["apply"].append(NginxRejectedError("nginx -t failed: boom"))  # type: ignore[attr-defined]
    with pytest.raises(NginxRejectedError):
        commands.execute("start", {"name": "app"})
    assert runtime.rollout.state.state == "rolled_back"
    # A run began and ended at once: a series records it; the step's evidence began with its change.
    assert runtime.series_until == T0 + 5.0 and runtime.rollout.judging.since == T0


def test_pause_resume_promote_abort_answer_the_new_status(host):
    commands = CommandHandlers(host)
    commands.execute("start", {"name": "app"})
    host.now += 1
    assert commands.execute("pause", {"name": "app", "reason": "looking"})["state"] == "paused"
    assert "looking" in host.runtimes["app"].rollout.state.message
    host.now += 1
    assert commands.execute("resume", {"name": "app"})["state"] == "progressing"
    host.now += 1
    assert commands.execute("promote", {"name": "app"})["canary_percent"] == 25
    host.now += 1
    aborted = commands.execute("abort", {"name": "app"})
    assert aborted["state"] == "aborted" and aborted["canary_percent"] == 0


def test_history_is_merged_in_time_order_and_limited(host):
    commands = CommandHandlers(host)
    commands.execute("start", {"name": "app"})
    host.now += 1
    commands.execute("start", {"name": "api"})
    host.now += 1
    commands.execute("pause", {"name": "app"})
    records = commands.execute("history", {})["records"]
    assert [(r["rollout"], r["event"]) for r in records] == [
        ("app", "start"), ("app", "step"), ("api", "start"), ("api", "step"), ("app", "pause")]
    assert [r["event"] for r in commands.execute("history", {"limit": 2})["records"]] == ["step", "pause"]
    assert [r["rollout"] for r in commands.execute("history", {"name": "api"})["records"]] == ["api", "api"]
    for bad in (0, -1, True, "3", 1.5):
        with pytest.raises(BadInputError, match="limit must be a positive number"):
            commands.execute("history", {"limit": bad})


def test_report_gives_the_last_run_and_ping_who_answers(host):
    commands = CommandHandlers(host)
    commands.execute("start", {"name": "app"})
    report = commands.execute("report", {"name": "app"})
    assert [r["event"] for r in report["history"]] == ["start", "step"] and report["points"] == []
    ping = commands.execute("ping", {})
    assert ping["started_at"] == T0 - 60 and ping["metrics"] == "http://127.0.0.1:9145/metrics"
