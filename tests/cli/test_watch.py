"""`status NAME --watch` (the loop with an injected clock, sleep and terminal; then the real CLI on a pipe and
on a pseudo-terminal against a stub daemon) and the client side of `report` (daemon, fallback to the state dir)."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from nginx_canary.cli.rollout import watch_status
from nginx_canary.daemon.control_socket import ControlServer
from nginx_canary.errors import BadInputError, ControlError, DaemonNotRunningError, UnknownRolloutError
from nginx_canary.rollout.store import RolloutState, StateStore

BASE = {"name": "app", "upstream": "backend", "state": "progressing", "step": 0, "steps": [10, 50, 100],
        "canary_percent": 10, "time_left_in_step": 50.0, "step_interval": 60.0, "failure_streak": 0,
        "failure_threshold": 2, "paused_reason": None, "window_seconds": 30.0, "snapshot_id": "app-1",
        "canary": {"requests": 30, "error_rate": 0.0, "p99": 0.01},
        "stable": {"requests": 270, "error_rate": 0.0, "p99": 0.01},
        "last_check": {"verdict": "pass", "reason": "all 4 checks passed"}, "message": "at step 1 of 3 (10 %)"}
ROLLING_BACK = {**BASE, "state": "rolled_back", "canary_percent": 10, "time_left_in_step": None,
                "message": "rolled back: 2 consecutive failed checks; restoring the snapshot taken at start",
                "last_check": {"verdict": "fail", "reason": "error_rate: canary 5xx rate 40.0 % exceeds 5.0 %"}}
ROLLED_BACK = {**ROLLING_BACK, "snapshot_id": None, "canary_percent": 0,
               "message": "rolled back: 2 consecutive failed checks; original files restored (snapshot app-1)"}


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: List[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fetcher(*answers: Any, clock: FakeTime = None, cost: float = 0.0) -> Callable[[], Dict[str, Any]]:
    """Answers in turn (an exception is raised); the last one repeats. ``cost`` seconds pass per call."""
    queue = list(answers)

    def fetch() -> Dict[str, Any]:
        if clock is not None:
            clock.now += cost
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return fetch


def test_on_a_terminal_each_frame_overwrites_the_last_and_the_watch_ends_when_restored():
    clock = FakeTime()
    out = io.StringIO()
    fetch = fetcher(BASE, {**BASE, "time_left_in_step": 49.0}, ROLLING_BACK, ROLLED_BACK, clock=clock, cost=0.2)
    watch_status(fetch, out, interval=1.0, isatty=lambda: True, clock=clock.clock, sleep=clock.sleep,
                 width=lambda: 80)
    text = out.getvalue()
    assert text.startswith("\x1b[?25l") and text.endswith("\x1b[?25h")
    frames = text[len("\x1b[?25l"):-len("\x1b[?25h")].split("\x1b[J")[:-1]
    assert len(frames) == 4  # ends at the first frame with the restore done, not at "rolled_back" owing it
    assert "\x1b[" not in frames[0].replace("\x1b[2K", "")  # the first frame moves nothing
    for previous, frame in zip(frames, frames[1:]):
        # Each later frame goes up exactly as many lines as the one before it drew.
        assert frame.startswith(f"\x1b[{previous.count(chr(10))}F")
    assert "50 s left in step 1 of 3" in frames[0] and "49 s left" in frames[1]
    assert "restoring the snapshot" in frames[2] and "original files restored" in frames[3]
    assert all(len(re.sub(r"\x1b\[[0-9?]*[A-Za-z]", "", line)) < 80 for frame in frames for line in frame.split("\n"))
    # A steady cadence: the time each fetch took is taken off the sleep.
    assert clock.sleeps == pytest.approx([0.8, 0.8, 0.8])


def test_not_a_terminal_prints_one_plain_line_per_refresh():
    clock = FakeTime()
    out = io.StringIO()
    watch_status(fetcher(BASE, BASE, ROLLED_BACK), out, interval=2.0, isatty=lambda: False, clock=clock.clock,
                 sleep=clock.sleep)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\x1b" not in out.getvalue()
    assert "app progressing 10 % step 1/3 50s left | canary 1.00 req/s" in lines[0]
    assert "app rolled_back 0 %" in lines[2] and "fail: error_rate" in lines[2]
    assert clock.sleeps == [2.0, 2.0]


def test_json_lines_when_asked():
    out = io.StringIO()
    clock = FakeTime()
    watch_status(fetcher(BASE, ROLLED_BACK), out, as_json=True, isatty=lambda: False, clock=clock.clock,
                 sleep=clock.sleep)
    assert [json.loads(line)["state"] for line in out.getvalue().splitlines()] == ["progressing", "rolled_back"]


def test_a_finished_rollout_shows_one_frame_and_returns():
    out = io.StringIO()
    clock = FakeTime()
    watch_status(fetcher(ROLLED_BACK), out, isatty=lambda: False, clock=clock.clock, sleep=clock.sleep)
    assert len(out.getvalue().splitlines()) == 1 and clock.sleeps == []


def test_ctrl_c_ends_the_watch_quietly_and_shows_the_cursor_again():
    out = io.StringIO()
    clock = FakeTime()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    watch_status(fetcher(BASE), out, isatty=lambda: True, clock=clock.clock, sleep=interrupted, width=lambda: 80)
    assert out.getvalue().endswith("\x1b[?25h")


def test_a_daemon_that_goes_away_is_retried_then_given_up_on():
    clock = FakeTime()
    out = io.StringIO()
    gone = DaemonNotRunningError("the nginx-canary daemon is not running (nothing listens on /x)")
    watch_status(fetcher(BASE, gone, gone, ROLLED_BACK), out, isatty=lambda: False, clock=clock.clock,
                 sleep=clock.sleep)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "! the nginx-canary daemon is not running" in lines[1] and "(retrying)" in lines[1]
    assert "progressing" in lines[1]  # the last figures received stay on screen
    out = io.StringIO()
    with pytest.raises(DaemonNotRunningError):
        watch_status(fetcher(BASE, gone), out, isatty=lambda: True, clock=clock.clock, sleep=clock.sleep,
                     width=lambda: 80, give_up=5.0)
    assert out.getvalue().endswith("\x1b[?25h")
    assert out.getvalue().count("retrying") == 5  # one frame per second for 5 s


@pytest.mark.parametrize("error", [DaemonNotRunningError("not running"), ControlError("garbled"),
                                   UnknownRolloutError("no rollout named 'app'")])
def test_a_first_fetch_that_fails_raises_at_once(error):
    with pytest.raises(type(error)):
        watch_status(fetcher(error), io.StringIO(), isatty=lambda: False, sleep=lambda s: None)


def test_other_errors_are_not_retried():
    clock = FakeTime()
    with pytest.raises(UnknownRolloutError):
        watch_status(fetcher(BASE, UnknownRolloutError("removed")), io.StringIO(), isatty=lambda: False,
                     clock=clock.clock, sleep=clock.sleep)


# --- the real CLI against a stub daemon ------------------------------------------------------------------


class StubDaemon:
    """Answers ``status`` from a list of statuses (the last repeats) and ``report`` as told."""

    def __init__(self, statuses: List[Dict[str, Any]], report: Any = None) -> None:
        self.statuses = list(statuses)
        self.report = report
        self.calls: List[str] = []

    def __call__(self, command: str, args: Dict[str, Any]) -> Any:
        self.calls.append(command)
        if command == "status":
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            return {"daemon": {"pid": 1}, "rollouts": [status]}
        if command == "report" and self.report is not None:
            if isinstance(self.report, Exception):
                raise self.report
            return self.report
        raise BadInputError(f"unknown command {command!r}")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nc-w-"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def serve(short_dir: Path, stub: StubDaemon) -> ControlServer:
    server = ControlServer(str(short_dir / "run" / "control.sock"), stub)
    server.start()
    return server


def cli(*args: str, cwd: Path = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nginx_canary", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def test_status_watch_on_a_pipe_prints_lines_until_the_rollout_ends(short_dir):
    stub = StubDaemon([BASE, BASE, ROLLING_BACK, ROLLED_BACK])
    server = serve(short_dir, stub)
    try:
        result = cli("--socket", server.path, "status", "app", "--watch", "--interval", "50ms")
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and "\x1b" not in result.stdout
    assert "rolled_back 0 %" in lines[-1]
    assert stub.calls == ["status"] * 4


@pytest.mark.parametrize("args, message", [
    (["status", "--watch"], "--watch needs a rollout NAME"),
    (["status", "app", "--interval", "1s"], "--interval goes with --watch"),
    (["status", "app", "--watch", "--interval", "0s"], "--interval: must be greater than 0"),
])
def test_watch_usage_errors_exit_2(args, message):
    result = cli("--socket", "/nonexistent/none.sock", *args)
    assert result.returncode == 2 and message in result.stderr


def test_status_watch_without_a_daemon_exits_3():
    result = cli("--socket", "/nonexistent/none.sock", "status", "app", "--watch")
    assert result.returncode == 3 and "daemon is not running" in result.stderr


def test_status_watch_on_a_terminal_redraws_and_ctrl_c_exits_0(short_dir):
    stub = StubDaemon([BASE])  # never ends by itself
    server = serve(short_dir, stub)
    master, slave = pty.openpty()
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "nginx_canary", "--socket", server.path, "status", "app",
                                 "--watch", "--interval", "100ms"], stdin=slave, stdout=slave, stderr=slave,
                                start_new_session=True, env={**os.environ, "COLUMNS": "100", "LINES": "40"})
        os.close(slave)
        output = b""
        deadline = time.monotonic() + 30
        while output.count(b"\x1b[J") < 3 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                output += os.read(master, 65536)
        assert output.count(b"\x1b[J") >= 3, output[-2000:]
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        while True:
            if not select.select([master], [], [], 5)[0]:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(timeout=10) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        server.close()
    text = output.decode("utf-8", "replace")
    assert text.startswith("\x1b[?25l") and text.rstrip().endswith("\x1b[?25h")
    assert "app  PROGRESSING  upstream backend" in text and "50 s left in step 1 of 3" in text
    frame_lines = text.split("\x1b[J")[0].count("\n")
    assert f"\x1b[{frame_lines}F" in text
    assert "Traceback" not in text and "aborted" not in text


def save_rollout(state_dir: Path) -> None:
    store = StateStore(str(state_dir))
    state = RolloutState(name="app", state="rolled_back", steps=("10", "100"), canary_percent="0", started_at=1.0,
                         upstream="backend", message="rolled back: offline reason")
    store.save(state)
    store.append_history("app", "start", rollout=state, at=1_700_000_000.0, steps=["10", "100"])
    store.append_history("app", "rollback", rollout=state, at=1_700_000_050.0, reason="offline reason",
                         message="rolled back: offline reason")


def test_report_comes_from_the_daemon_when_it_runs(short_dir, tmp_path):
    history = [{"time": 1_700_000_000.0, "event": "start", "state": "progressing", "step": 0, "canary_percent": "0",
                "detail": {"message": "starting", "steps": ["10", "100"]}},
               {"time": 1_700_000_030.0, "event": "promoted", "state": "promoted", "step": 1, "canary_percent": "100",
                "detail": {"message": "promoted: from the daemon", "reason": "all steps passed"}}]
    points = [{"time": 1_700_000_000.0 + i, "canary_percent": 10, "state": "progressing",
               "canary": {"requests": 5, "errors_5xx": 0, "error_rate": 0.0, "p99": 0.01},
               "stable": {"requests": 45, "errors_5xx": 0, "error_rate": 0.0, "p99": 0.01}} for i in range(1, 30)]
    stub = StubDaemon([BASE], report={"history": history, "points": points})
    server = serve(short_dir, stub)
    save_rollout(tmp_path / "state")  # not used: the daemon answers
    try:
        result = cli("--socket", server.path, "--state-dir", str(tmp_path / "state"), "report", "app", "-o",
                     str(tmp_path / "r.html"))
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "r.html") and result.stderr == ""
    text = (tmp_path / "r.html").read_text()
    assert "promoted: from the daemon" in text and "offline reason" not in text
    assert f"data: the daemon on {server.path}" in text and "29 series points" in text
    assert stub.calls == ["report"]


def test_report_falls_back_to_the_state_dir_for_a_daemon_without_the_command(short_dir, tmp_path):
    save_rollout(tmp_path / "state")
    server = serve(short_dir, StubDaemon([BASE]))  # answers "unknown command 'report'"
    try:
        result = cli("--socket", server.path, "--state-dir", str(tmp_path / "state"), "report", "app", "-o",
                     str(tmp_path / "r.html"))
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert "(the daemon has no report command)" in result.stderr
    assert "offline reason" in (tmp_path / "r.html").read_text()


def test_report_passes_on_the_daemons_errors(short_dir, tmp_path):
    server = serve(short_dir, StubDaemon([BASE], report=UnknownRolloutError("no rollout named 'app' in x.yaml")))
    try:
        result = cli("--socket", server.path, "report", "app", "-o", str(tmp_path / "r.html"))
    finally:
        server.close()
    assert result.returncode == 2 and "no rollout named 'app' in x.yaml" in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_to_an_unwritable_path_is_one_line_exit_1(tmp_path):
    save_rollout(tmp_path / "state")
    result = cli("--socket", str(tmp_path / "none.sock"), "--state-dir", str(tmp_path / "state"), "report", "app",
                 "-o", str(tmp_path / "missing" / "r.html"))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot write the report to" in result.stderr


def test_report_refuses_a_bad_name_with_exit_2(tmp_path):
    result = cli("--socket", str(tmp_path / "none.sock"), "--state-dir", str(tmp_path), "report", "../etc")
    assert result.returncode == 2 and "invalid rollout name" in result.stderr
