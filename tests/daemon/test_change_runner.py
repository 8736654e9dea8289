"""ChangeRunner: a change runs on the worker thread while the caller pumps; results, errors and nesting."""

from __future__ import annotations

import threading
from typing import Any, Dict, List

import pytest

from nginx_canary.daemon.change_runner import ChangeRunner, OffLoopApplier
from nginx_canary.errors import NginxRejectedError

#: Bound on every wait in these tests (a broken runner fails them instead of hanging).
BOUND = 10.0


class Loop:
    """The daemon's side of a runner: a wake event, a pump that counts its rounds, and a log of threads."""

    def __init__(self) -> None:
        self.woken = threading.Event()
        self.pumps = 0
        self.pump_threads: List[int] = []
        self.on_pump: Any = None
        self.runner = ChangeRunner(wait=self.wait, wake=self.woken.set, pump=self.pump, next_wait=lambda: 0.01)

    def wait(self, timeout: float) -> None:
        self.woken.wait(timeout)
        self.woken.clear()

    def pump(self) -> None:
        self.pumps += 1
        self.pump_threads.append(threading.get_ident())
        if self.on_pump is not None:
            self.on_pump(self.pumps)


@pytest.fixture
def loop():
    made = Loop()
    yield made
    made.runner.close()


def test_before_enable_a_call_runs_inline(loop):
    assert loop.runner.run(threading.get_ident) == threading.get_ident()
    assert loop.pumps == 0


def test_a_change_runs_on_the_worker_while_the_caller_pumps(loop):
    loop.runner.enable()
    release = threading.Event()
    # The change can only finish once the caller has pumped three times: proof that it pumped meanwhile.
    loop.on_pump = lambda n: release.set() if n == 3 else None

    def change(value: int) -> Dict[str, Any]:
        assert release.wait(BOUND), "the caller did not pump while the change was under way"
        return {"value": value, "thread": threading.get_ident(), "busy": loop.runner.busy}

    result = loop.runner.run(change, 7)
    assert result["value"] == 7 and result["busy"] is True
    assert result["thread"] != threading.get_ident()
    assert loop.pumps >= 3 and set(loop.pump_threads) == {threading.get_ident()}
    assert loop.runner.busy is False


def test_the_changes_error_is_raised_in_the_caller(loop):
    loop.runner.enable()

    def change() -> None:
        raise NginxRejectedError("nginx -t failed: unknown directive")

    with pytest.raises(NginxRejectedError, match="unknown directive"):
        loop.runner.run(change)
    assert loop.runner.busy is False
    assert loop.runner.run(lambda: "next") == "next"  # the worker is still there


def test_a_failing_pump_does_not_abandon_the_change(loop, caplog):
    loop.runner.enable()
    release = threading.Event()

    def pump_fails(n: int) -> None:
        if n == 2:
            release.set()
        raise RuntimeError(f"pump {n} broke")

    loop.on_pump = pump_fails
    finished = []

    def change() -> str:
        assert release.wait(BOUND)
        finished.append(True)
        return "done"

    assert loop.runner.run(change) == "done"
    assert finished == [True]
    assert "the loop's work failed" in caplog.text and "pump 1 broke" in caplog.text


def test_a_call_made_while_pumping_runs_inline(loop):
    loop.runner.enable()
    release = threading.Event()
    nested: List[int] = []

    def pump(n: int) -> None:
        if n == 1:
            nested.append(loop.runner.run(threading.get_ident))
            release.set()

    loop.on_pump = pump
    loop.runner.run(lambda: release.wait(BOUND))
    assert nested == [threading.get_ident()]  # on the caller's thread: it did not wait for itself


class RecordingApplier:
    def __init__(self) -> None:
        self.calls: List[tuple] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append((name, args, threading.get_ident()))
            return {"name": name}
        return call


def test_off_loop_applier_sends_only_the_writing_calls_to_the_worker(loop):
    loop.runner.enable()
    inner = RecordingApplier()
    applier = OffLoopApplier(inner, loop.runner)
    here = threading.get_ident()
    applier.begin("app")
    applier.apply(10)
    applier.restore("snap")
    applier.restore_weights("snap")
    applier.plan(10)
    applier.plan_restore_weights("snap")
    applier.snapshot_files("snap")
    applier.files_now()
    applier.hashes_of(["a"])
    where = {name: ("worker" if thread != here else "caller") for name, _, thread in inner.calls}
    assert where == {"begin": "worker", "apply": "worker", "restore": "worker", "restore_weights": "worker",
                     "plan": "caller", "plan_restore_weights": "caller", "snapshot_files": "caller",
                     "files_now": "caller", "hashes_of": "caller"}
    assert [args for _, args, _ in inner.calls][:2] == [("app",), (10,)]


def test_a_restore_is_urgent_while_it_runs_and_a_step_change_is_not(loop):
    loop.runner.enable()

    class Inner:
        def apply(self, percent: Any) -> Dict[str, Any]:
            return {"urgent": loop.runner.urgent}

        def restore(self, snapshot_id: str) -> Dict[str, Any]:
            return {"urgent": loop.runner.urgent}

        def restore_weights(self, snapshot_id: str) -> Dict[str, Any]:
            return {"urgent": loop.runner.urgent}

    applier = OffLoopApplier(Inner(), loop.runner)
    assert applier.apply(10) == {"urgent": False}
    assert applier.restore("s") == {"urgent": True} and loop.runner.urgent is False
    assert applier.restore_weights("s") == {"urgent": True} and loop.runner.urgent is False
