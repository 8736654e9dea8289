"""A host's agent following the fleet's plan, with a fake config engine, fake traffic and a fake judge."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from nginx_canary.config.model import AnalysisSettings, RolloutSettings
from nginx_canary.domain import State
from nginx_canary.errors import CanaryError, NginxRejectedError, StateError
from nginx_canary.fleet.agent import HostAgent, state_file
from nginx_canary.fleet.plan import APPLIED, FAILED, PROMOTED, RESTORE_FAILED, RESTORED, HostReport, Plan
from nginx_canary.logs.window import Stats
from nginx_canary.rollout.verdict import FAIL, PASS, Verdict
from tests.rollout.figures import stats

STEPS = (Fraction(10), Fraction(50), Fraction(100))
T0 = 1_000.0


class FakeApplier:
    """Records begin/apply/restore; ``fail[method]`` is raised by that method (every call) while set."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Any]] = []
        self.fail: Dict[str, CanaryError] = {}
        self.snapshots = 0

    def _call(self, method: str, arg: Any) -> None:
        self.calls.append((method, arg))
        if method in self.fail:
            raise self.fail[method]

    def begin(self, rollout_name: str) -> str:
        self._call("begin", rollout_name)
        self.snapshots += 1
        return f"snap-{self.snapshots}"

    def apply(self, percent: Fraction) -> Dict[str, str]:
        self._call("apply", percent)
        return {}

    def restore(self, snapshot_id: str) -> Dict[str, str]:
        self._call("restore", snapshot_id)
        return {}


class FakeTraffic:
    """The step's evidence is ``canary``/``stable``; records when each step began."""

    def __init__(self) -> None:
        self.canary, self.stable = stats(50), stats(500)
        self.steps: List[float] = []

    def begin_step(self, at: float) -> None:
        self.steps.append(at)

    def evidence(self, now: float) -> Tuple[Stats, Stats]:
        return self.canary.copy(), self.stable.copy()


class FakeJudge:
    def __init__(self, verdict: str = PASS) -> None:
        self.verdict = verdict
        self.calls: List[Tuple[int, float, float]] = []

    def __call__(self, canary: Stats, stable: Stats, limits: AnalysisSettings, at: float, elapsed: float,
                 **_: Any) -> Verdict:
        self.calls.append((canary.requests, limits.risk, elapsed))
        return Verdict(self.verdict, (), f"canary 5xx at 40 % ({self.verdict})", {}, {}, at)


SETTINGS = RolloutSettings(name="app", upstream="backend", canary=("10.0.0.12:8080",), steps=STEPS)


class Host:
    """One host's agent and its fakes, over one state file."""

    def __init__(self, tmp_path: Path, settings: RolloutSettings = SETTINGS,
                 applier: Optional[FakeApplier] = None) -> None:
        self.path = state_file(str(tmp_path), "app")
        self.applier = applier or FakeApplier()
        self.traffic = FakeTraffic()
        self.judge = FakeJudge()
        self.agent = HostAgent("lb-1", settings, self.applier, self.traffic, self.path, self.judge)

    def restart(self) -> "Host":
        """A new daemon on this host: a new agent over the same state file and the same nginx."""
        again = Host.__new__(Host)
        again.path, again.applier, again.traffic, again.judge = self.path, self.applier, FakeTraffic(), self.judge
        again.agent = HostAgent("lb-1", self.agent.settings, self.applier, again.traffic, self.path, self.judge)
        return again

    def converge(self, plan: Optional[Plan], now: float) -> Optional[HostReport]:
        report = self.agent.converge(plan, now)
        if report is not None:
            self.agent.reported(report)
        return report


def make_plan(seq: int = 1, step_index: int = 0, state: State = State.PROGRESSING, run: str = "r1",
              reason: str = "") -> Plan:
    return Plan(rollout="app", run=run, seq=seq, state=state, steps=STEPS, step_index=step_index,
                hosts=("lb-1", "lb-2"), started_at=T0, updated_at=T0, reason=reason)


def saved(host: Host) -> Dict[str, Any]:
    with open(host.path, "rb") as fh:
        return json.loads(fh.read())


# --- following the plan ------------------------------------------------------------------------------------


def test_state_file_is_per_rollout_in_the_state_dir() -> None:
    assert state_file("/var/lib/nginx-canary", "app") == "/var/lib/nginx-canary/fleet-app.json"


def test_no_plan_no_action(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.agent.converge(None, T0) is None
    assert host.applier.calls == []
    assert not os.path.exists(host.path)


def test_joining_a_run_snapshots_once_and_applies_its_step(tmp_path: Path) -> None:
    host = Host(tmp_path)
    report = host.agent.converge(make_plan(), T0)
    assert report == HostReport("lb-1", "r1", 1, APPLIED, "10", T0, "")
    assert host.applier.calls == [("begin", "app"), ("apply", Fraction(10))]
    assert host.traffic.steps == [T0]
    assert saved(host)["snapshot"] == "snap-1"
    assert (saved(host)["seq"], saved(host)["status"], saved(host)["percent"]) == (1, APPLIED, "10")
    assert oct(os.stat(host.path).st_mode & 0o777) == oct(0o600)
    # Until etcd took it, the same report again; then nothing new.
    assert host.agent.converge(make_plan(), T0 + 1) == report
    host.agent.reported(report)
    assert host.agent.converge(make_plan(), T0 + 2) is None
    assert host.applier.calls == [("begin", "app"), ("apply", Fraction(10))]
    # The next steps of the same run: no new snapshot.
    assert host.converge(make_plan(seq=2, step_index=1), T0 + 60) == HostReport("lb-1", "r1", 2, APPLIED, "50",
                                                                                  T0 + 60, "")
    assert host.applier.calls[2:] == [("apply", Fraction(50))]
    assert host.applier.snapshots == 1


def test_a_new_seq_at_the_same_percent_applies_nothing_but_starts_the_evidence_over(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.converge(make_plan(), T0)
    report = host.converge(make_plan(seq=2), T0 + 30)  # resumed: same step, new seq
    assert report == HostReport("lb-1", "r1", 2, APPLIED, "10", T0 + 30, "")
    assert host.applier.calls == [("begin", "app"), ("apply", Fraction(10))]
    assert host.traffic.steps == [T0, T0 + 30]
    figures = host.agent.figures(T0 + 31)
    assert figures is not None and (figures.seq, figures.since) == (2, T0 + 30)


def test_a_restarted_daemon_reports_again_without_touching_nginx(tmp_path: Path) -> None:
    host = Host(tmp_path)
    first = host.converge(make_plan(seq=3, step_index=1), T0)
    assert first is not None
    again = host.restart()
    assert again.agent.local is not None and again.agent.local.snapshot == "snap-1"
    assert again.agent.converge(make_plan(seq=3, step_index=1), T0 + 9) == first
    assert host.applier.calls == [("begin", "app"), ("apply", Fraction(50))]
    # Its next step goes on from what it remembers: no new snapshot.
    again.converge(make_plan(seq=4, step_index=2), T0 + 70)
    assert host.applier.calls[2:] == [("apply", Fraction(100))]


def test_a_run_over_before_this_host_saw_it_is_left_alone(tmp_path: Path) -> None:
    for state in (State.PROMOTED, State.ROLLED_BACK, State.ABORTED):
        host = Host(tmp_path)
        assert host.agent.converge(make_plan(seq=9, state=state), T0) is None
        assert host.applier.calls == []


def test_a_new_run_takes_a_new_snapshot(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.converge(make_plan(seq=1, step_index=1), T0)
    report = host.converge(make_plan(seq=2, run="r2"), T0 + 10)
    assert report == HostReport("lb-1", "r2", 2, APPLIED, "10", T0 + 10, "")
    assert host.applier.calls == [("begin", "app"), ("apply", Fraction(50)), ("begin", "app"), ("apply", Fraction(10))]
    assert saved(host)["snapshot"] == "snap-2"


# --- failures --------------------------------------------------------------------------------------------------


def test_a_step_nginx_rejects_is_reported_failed_and_not_restored_by_the_agent(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.converge(make_plan(), T0)
    host.applier.fail["apply"] = NginxRejectedError("nginx -t: unknown directive")
    report = host.converge(make_plan(seq=2, step_index=1), T0 + 60)
    # The transaction kept the files: this host still serves its previous step.
    assert report == HostReport("lb-1", "r1", 2, FAILED, "10", T0 + 60, "nginx -t: unknown directive")
    assert [c[0] for c in host.applier.calls] == ["begin", "apply", "apply"]
    assert host.agent.figures(T0 + 61) is None
    # The fleet rolls back: now the agent restores its snapshot.
    del host.applier.fail["apply"]
    restored = host.converge(make_plan(seq=3, step_index=1, state=State.ROLLED_BACK, reason="host lb-1 failed"),
                             T0 + 62)
    assert restored == HostReport("lb-1", "r1", 3, RESTORED, "", T0 + 62, "host lb-1 failed")
    assert host.applier.calls[-1] == ("restore", "snap-1")


def test_a_first_step_that_fails_reports_no_percent(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.applier.fail["apply"] = NginxRejectedError("reload failed")
    report = host.converge(make_plan(), T0)
    assert report == HostReport("lb-1", "r1", 1, FAILED, "", T0, "reload failed")
    assert saved(host)["snapshot"] == "snap-1"


def test_a_snapshot_that_cannot_be_taken_is_reported_and_nothing_is_restored(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.applier.fail["begin"] = CanaryError("disk full")
    report = host.converge(make_plan(), T0)
    assert report == HostReport("lb-1", "r1", 1, FAILED, "", T0, "cannot snapshot: disk full")
    assert host.applier.calls == [("begin", "app")]
    # This host changed nothing: the fleet's rollback has nothing here to restore.
    del host.applier.fail["begin"]
    report = host.converge(make_plan(seq=2, state=State.ROLLED_BACK, reason="host lb-1 could not apply"), T0 + 1)
    assert report is not None and report.status == RESTORED
    assert host.applier.calls == [("begin", "app")]


@pytest.mark.parametrize("state", [State.ROLLED_BACK, State.ABORTED])
def test_a_restoring_plan_restores_the_snapshot(tmp_path: Path, state: State) -> None:
    host = Host(tmp_path)
    host.converge(make_plan(), T0)
    host.converge(make_plan(seq=2, step_index=1), T0 + 60)
    report = host.converge(make_plan(seq=3, step_index=1, state=state, reason="canary failed"), T0 + 70)
    assert report == HostReport("lb-1", "r1", 3, RESTORED, "", T0 + 70, "canary failed")
    assert host.applier.calls[-1] == ("restore", "snap-1")
    assert host.agent.figures(T0 + 71) is None
    # Restored once: a later seq of the same ended run restores nothing again.
    calls = len(host.applier.calls)
    assert host.converge(make_plan(seq=4, step_index=1, state=state), T0 + 80) is not None
    assert len(host.applier.calls) == calls


def test_a_failed_restore_is_reported_and_tried_again_at_the_next_seq(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.converge(make_plan(), T0)
    host.applier.fail["restore"] = CanaryError("nginx is not running")
    report = host.converge(make_plan(seq=2, state=State.ROLLED_BACK), T0 + 5)
    assert report == HostReport("lb-1", "r1", 2, RESTORE_FAILED, "10", T0 + 5, "restore failed: nginx is not running")
    del host.applier.fail["restore"]
    report = host.converge(make_plan(seq=3, state=State.ROLLED_BACK), T0 + 6)
    assert report is not None and report.status == RESTORED
    assert [c for c in host.applier.calls if c[0] == "restore"] == [("restore", "snap-1")] * 2


def test_promoted_with_on_success_restore_restores(tmp_path: Path) -> None:
    host = Host(tmp_path, settings=replace(SETTINGS, on_success="restore"))
    host.converge(make_plan(seq=1, step_index=2), T0)
    report = host.converge(make_plan(seq=2, step_index=2, state=State.PROMOTED, reason="passed"), T0 + 60)
    assert report == HostReport("lb-1", "r1", 2, RESTORED, "", T0 + 60, "passed")
    assert host.applier.calls[-1] == ("restore", "snap-1")


def test_promoted_with_on_success_keep_keeps_the_last_step(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.converge(make_plan(seq=1, step_index=2), T0)
    report = host.converge(make_plan(seq=2, step_index=2, state=State.PROMOTED, reason="passed"), T0 + 60)
    assert report == HostReport("lb-1", "r1", 2, PROMOTED, "100", T0 + 60, "passed")
    assert [c[0] for c in host.applier.calls] == ["begin", "apply"]
    assert host.agent.figures(T0 + 61) is None


def test_promoted_from_an_earlier_step_applies_the_last_one(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.converge(make_plan(seq=1, step_index=1), T0)
    report = host.converge(make_plan(seq=2, step_index=2, state=State.PROMOTED), T0 + 5)
    assert report is not None and (report.status, report.percent) == (PROMOTED, "100")
    assert host.applier.calls[-1] == ("apply", Fraction(100))


# --- cut off from etcd ------------------------------------------------------------------------------------------


def test_figures_are_none_before_applying(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.agent.figures(T0) is None
    host.applier.fail["apply"] = CanaryError("busy")
    host.converge(make_plan(), T0)
    assert host.agent.figures(T0 + 1) is None


def test_figures_of_the_applied_step(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.converge(make_plan(seq=5, step_index=1), T0)
    figures = host.agent.figures(T0 + 10)
    assert figures is not None
    assert (figures.host, figures.run, figures.seq, figures.since, figures.at) == ("lb-1", "r1", 5, T0, T0 + 10)
    assert (figures.canary.requests, figures.stable.requests) == (50, 500)


def test_judge_alone_passing_leaves_nginx_alone(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.agent.judge_alone(T0) is None  # nothing applied yet: nothing to judge
    assert host.judge.calls == []
    host.converge(make_plan(), T0)
    assert host.agent.judge_alone(T0 + 20) is None
    assert host.judge.calls == [(50, SETTINGS.analysis.risk, 20.0)]
    assert [c[0] for c in host.applier.calls] == ["begin", "apply"]


def test_judge_alone_failing_restores_and_the_next_converge_reports_it(tmp_path: Path) -> None:
    host = Host(tmp_path)
    plan = make_plan(seq=2, step_index=1)
    host.converge(plan, T0)
    host.judge.verdict = FAIL
    report = host.agent.judge_alone(T0 + 20)
    detail = "rolled back alone while cut off from etcd: canary 5xx at 40 % (fail)"
    assert report == HostReport("lb-1", "r1", 2, RESTORED, "", T0 + 20, detail)
    assert host.applier.calls[-1] == ("restore", "snap-1")
    assert host.agent.figures(T0 + 21) is None
    assert host.agent.judge_alone(T0 + 22) is None  # restored: nothing left to judge
    # etcd answers again with the same plan: the restore is reported at its seq, which rolls the fleet back.
    assert host.agent.converge(plan, T0 + 30) == report
    # A later step of the run does not undo it: this host stays restored.
    later = host.converge(make_plan(seq=3, step_index=2), T0 + 40)
    assert later == HostReport("lb-1", "r1", 3, RESTORED, "", T0 + 40, detail)
    assert [c[0] for c in host.applier.calls] == ["begin", "apply", "restore"]


def test_judge_alone_restore_survives_a_restart(tmp_path: Path) -> None:
    host = Host(tmp_path)
    plan = make_plan(seq=2, step_index=1)
    host.converge(plan, T0)
    host.judge.verdict = FAIL
    report = host.agent.judge_alone(T0 + 20)
    again = host.restart()
    assert again.agent.converge(plan, T0 + 30) == report
    rolled_back = again.converge(make_plan(seq=3, step_index=1, state=State.ROLLED_BACK), T0 + 31)
    assert rolled_back is not None and rolled_back.status == RESTORED
    assert [c[0] for c in host.applier.calls] == ["begin", "apply", "restore"]


# --- the state file ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    b"", b"{", b"\xff\xfe", b"[]", b"null", b'"run"', b'{"run": "r1"}',
    b'{"run": "r1", "snapshot": "s", "colour": "red"}',
    b'{"run": 5, "snapshot": "s"}',
    b'{"run": "r1", "snapshot": "s", "seq": "2"}',
    b'{"run": "r1", "snapshot": "s", "seq": true}',
    b'{"run": "r1", "snapshot": "s", "percent": "ten"}',
    b'{"run": "r1", "snapshot": "s", "percent": 10}',
    b'{"run": "r1", "snapshot": "s", "percent": "1/0"}',
    b'{"run": "r1", "snapshot": "s", "reported": 1}',
    b'{"run": "r1", "snapshot": "s", "since": "now"}',
    b'{"run": "r1", "snapshot": "s", "status": "dancing"}',
])
def test_a_corrupt_state_file_raises_state_error(tmp_path: Path, content: bytes) -> None:
    path = state_file(str(tmp_path), "app")
    with open(path, "wb") as fh:
        fh.write(content)
    with pytest.raises(StateError) as caught:
        HostAgent("lb-1", SETTINGS, FakeApplier(), FakeTraffic(), path, FakeJudge())
    assert str(caught.value).startswith(f"fleet state {path}: unreadable")


def test_a_state_file_that_cannot_be_written_raises_state_error(tmp_path: Path) -> None:
    path = str(tmp_path / "missing" / "fleet-app.json")
    agent = HostAgent("lb-1", SETTINGS, FakeApplier(), FakeTraffic(), path, FakeJudge())
    with pytest.raises(StateError, match="cannot write"):
        agent.converge(make_plan(), T0)
