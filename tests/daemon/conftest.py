"""Harness for the daemon's integration tests: every part is real, nothing is mocked.

One :class:`Harness` per test: a :class:`~nginx_canary.demo.site.DemoSite`
under ``tmp_path`` (its control socket in a short ``/tmp`` directory), a real
nginx started from the site's prefix, two :class:`~nginx_canary.demo.app.DemoApp`
backends (v1 stable, v2 canary) served from threads of the test process, load
from :func:`nginx_canary.demo.load.run_load` in background threads (bounded in
count and time, loopback only), and the daemon as a subprocess
(``python -m nginx_canary --config daemon.yaml daemon``) whose stderr goes to
a file that is printed at teardown (pytest shows it for a failing test).

Waiting is always polling with a deadline (``wait_status``); tests assert
outcomes, never durations. Teardown stops, in this order, the load threads,
the daemon (SIGTERM, SIGKILL after a grace period), nginx (fast shutdown with
SIGTERM, then SIGKILL for the master and any worker left), the apps and the
socket directory, and then fails the test if any process it started is still
alive (any child of the test process, or any process of that nginx).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import psutil
import pytest

from nginx_canary.daemon import control_socket
from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.load import LoadResult, run_load
from nginx_canary.demo.site import DemoSite
from nginx_canary.errors import CanaryError

#: Analysis settings for fast tests: a check every 250 ms, 10 canary requests to judge. The latency
#: ratios are loosened from their defaults everywhere but in the latency tests and
#: test_promote.py::test_identical_canary_is_promoted_with_default_thresholds: the other tests are
#: about steps, state and control, and on a shared 2-core machine (other suites running beside this
#: one) the demo apps, served from this test process, do have 25 ms hiccups. The promotion evidence
#: asked for is loosened likewise (a step passes after ~50 clean canary requests instead of ~350): the
#: judge's statistics are tested in tests/rollout/test_judge.py and with the defaults in test_promote.py.
FAST_ANALYSIS: Dict[str, object] = {"interval": "250ms", "min_requests": 10, "failure_threshold": 2,
                                    "max_p99_latency_ratio": 100.0, "max_p50_latency_ratio": 100.0,
                                    "max_error_rate_increase": 0.1, "promotion_risk": 0.2}
#: The analysis defaults of the daemon (docs/CONFIG.md), but on the fast clock of these tests.
DEFAULT_THRESHOLDS: Dict[str, object] = {"min_requests": 20, "max_error_rate": 0.05, "max_error_rate_increase": 0.02,
                                         "max_p99_latency": "1s", "max_p99_latency_ratio": 2.0}
#: Deadline for one condition to come true (a step, a rollback, a promotion).
WAIT = 20.0


def subprocess_env() -> Dict[str, str]:
    """The environment for the daemon and CLI subprocesses: no NGINX_CANARY_* from outside, /usr/sbin on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NGINX_CANARY_")}
    env["PATH"] = "/usr/sbin:" + env.get("PATH", "/usr/bin:/bin")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Load:
    """``run_load`` in a background thread; :meth:`finish` stops it and returns what the clients saw."""

    def __init__(self, url: str, rate: float, duration: float, max_requests: int, concurrency: int) -> None:
        self.stop_event = threading.Event()
        self.result: Optional[LoadResult] = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(url, rate, duration, max_requests, concurrency),
                                       name="test-load", daemon=True)
        self.thread.start()

    def _run(self, url: str, rate: float, duration: float, max_requests: int, concurrency: int) -> None:
        try:
            self.result = run_load(url, rate=rate, duration=duration, max_requests=max_requests,
                                   concurrency=concurrency, timeout=5.0, stop_event=self.stop_event)
        except BaseException as exc:  # noqa: BLE001 - handed to the test by finish()
            self.error = exc

    def finish(self, timeout: float = 30.0) -> LoadResult:
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the load thread did not stop"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Harness:
    """One private site with nginx, both apps, the daemon subprocess and the loads of one test."""

    def __init__(self, site: DemoSite, v1: DemoApp, v2: DemoApp, tmp_path: Path) -> None:
        self.site = site
        self.v1 = v1
        self.v2 = v2
        self.tmp_path = tmp_path
        self.env = subprocess_env()
        self.daemon: Optional[subprocess.Popen] = None
        self.daemon_runs = 0
        self.loads: List[Load] = []
        self.originals: Dict[str, bytes] = site.config_files()

    # -- the daemon --------------------------------------------------------------------

    def log_path(self, run: int) -> Path:
        return self.tmp_path / f"daemon-{run}.log"

    def start_daemon(self, timeout: float = WAIT) -> subprocess.Popen:
        """Start the daemon subprocess and wait until it answers ``ping``."""
        assert self.daemon is None or self.daemon.poll() is not None, "a daemon is already running"
        self.daemon_runs += 1
        with open(self.log_path(self.daemon_runs), "wb") as log:
            proc = subprocess.Popen(self.site.daemon_command(sys.executable), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.tmp_path))
        self.daemon = proc
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the daemon exited with {proc.returncode} before answering:\n{self.daemon_log()}")
            try:
                result = control_socket.call(self.site.socket_path, "ping", timeout=5.0)
            except CanaryError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the daemon did not answer ping within {timeout:g} s:\n{self.daemon_log()}")
                time.sleep(0.05)
                continue
            assert result["pid"] == proc.pid
            return proc

    def signal_daemon(self, signum: int, timeout: float = WAIT) -> int:
        """Send ``signum`` to the daemon and wait for it to exit; returns its exit status."""
        proc = self.daemon
        assert proc is not None
        proc.send_signal(signum)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            pytest.fail(f"the daemon did not exit within {timeout:g} s of {signal.Signals(signum).name}:\n"
                        f"{self.daemon_log()}")

    def daemon_log(self, run: Optional[int] = None) -> str:
        runs = [run] if run is not None else range(1, self.daemon_runs + 1)
        parts = []
        for r in runs:
            try:
                parts.append(f"--- daemon run {r} ---\n" + self.log_path(r).read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    # -- the control socket ------------------------------------------------------------

    def call(self, command: str, **args: Any) -> Any:
        return control_socket.call(self.site.socket_path, command, args, timeout=60.0)

    def status(self) -> Dict[str, Any]:
        return self.call("status", name="app")["rollouts"][0]

    def status_and_now(self) -> Tuple[Dict[str, Any], float]:
        """The rollout's status and the daemon's clock when it answered."""
        answer = self.call("status", name="app")
        return answer["rollouts"][0], answer["daemon"]["now"]

    def start_rollout(self, **args: Any) -> Dict[str, Any]:
        return self.call("start", name="app", **args)

    def wait_status(self, predicate: Callable[[Dict[str, Any]], bool], what: str,
                    timeout: float = WAIT) -> Dict[str, Any]:
        """Poll ``status`` until ``predicate`` holds; fail with the last status and the daemon's log after ``timeout``."""
        deadline = time.monotonic() + timeout
        status: Dict[str, Any] = {}
        while True:
            status = self.status()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                pytest.fail(f"waited {timeout:g} s for {what}; last status:\n{json.dumps(status, indent=1)}\n"
                            f"{self.daemon_log()}")
            time.sleep(0.05)

    def wait_state(self, *states: str, timeout: float = WAIT) -> Dict[str, Any]:
        return self.wait_status(lambda s: s["state"] in states, f"state {' or '.join(states)}", timeout)

    def wait_step(self, step: int, timeout: float = WAIT) -> Dict[str, Any]:
        """Wait until the rollout is at step index ``step`` or beyond (or finished)."""
        return self.wait_status(lambda s: s["step"] >= step or s["state"] not in ("progressing", "paused"),
                                f"step index {step}", timeout)

    # -- the CLI -------------------------------------------------------------------------

    def cli(self, *args: str, config: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """``python -m nginx_canary [--config daemon.yaml] ARGS``; output as text."""
        command = [sys.executable, "-m", "nginx_canary"]
        if config:
            command += ["--config", str(self.site.daemon_config)]
        return subprocess.run(command + list(args), capture_output=True, text=True, env=self.env,
                              cwd=str(self.tmp_path), timeout=timeout)

    def nginx_options(self) -> List[str]:
        """Global options naming the site's nginx and state dir (no daemon config)."""
        return ["--nginx-conf", str(self.site.conf), "--nginx-prefix", str(self.site.prefix),
                "--nginx-bin", self.site.nginx_bin, "--state-dir", str(self.site.state_dir)]

    # -- state on disk ------------------------------------------------------------------

    def saved_state(self) -> Dict[str, Any]:
        return json.loads((self.site.state_dir / "rollouts" / "app.json").read_text())

    def history(self) -> List[Dict[str, Any]]:
        """Every record of the history file, oldest first; every line must be complete JSON."""
        path = self.site.state_dir / "rollouts" / "app.history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def events(self) -> List[str]:
        return [r["event"] for r in self.history()]

    def file_hashes(self, paths: Sequence[str]) -> Dict[str, str]:
        return {p: sha256(Path(p).read_bytes()) for p in paths}

    def assert_state_matches_files(self) -> Dict[str, Any]:
        """The saved state's ``expected_files`` are the files on disk; returns the saved state."""
        state = self.saved_state()
        assert state["expected_files"], state
        assert str(self.site.upstream_conf) in state["expected_files"]
        assert self.file_hashes(list(state["expected_files"])) == state["expected_files"], state
        return state

    # -- traffic ---------------------------------------------------------------------------

    def load(self, rate: float = 150, duration: float = 40, max_requests: int = 8000, concurrency: int = 4) -> Load:
        """Start load through nginx in a background thread (stopped at teardown at the latest)."""
        load = Load(self.site.url, rate, duration, max_requests, concurrency)
        self.loads.append(load)
        return load

    def probe(self, requests: int = 100) -> LoadResult:
        """Send ``requests`` requests through nginx now (new connections) and return what they saw."""
        return run_load(self.site.url, rate=0, duration=20, max_requests=requests, concurrency=2, timeout=5.0)

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> List[str]:
        """Stop everything; returns the problems found (processes that would not go away)."""
        problems: List[str] = []
        for load in self.loads:
            load.stop_event.set()
        for load in self.loads:
            load.thread.join(30)
            if load.thread.is_alive():
                problems.append("a load thread did not stop")
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                problems.append(f"daemon {self.daemon.pid} ignored SIGTERM for 10 s; killed")
                self.daemon.kill()
                self.daemon.wait(10)
        problems += self._stop_nginx()
        for app in (self.v1, self.v2):
            app.stop()
        self.site.cleanup()
        for child in psutil.Process().children(recursive=True):
            try:
                problems.append(f"process left behind: {child.pid} {' '.join(child.cmdline())}")
                child.kill()
            except psutil.NoSuchProcess:
                pass
        return problems

    def _stop_nginx(self) -> List[str]:
        """nginx's fast shutdown (SIGTERM: no test needs a graceful one here), then SIGKILL for what is left."""
        killed = self.site.stop_nginx(timeout=10.0, sig=signal.SIGTERM)
        return [f"nginx process {pid} still alive 10 s after SIGTERM; killed" for pid in killed]


@pytest.fixture
def make_harness(nginx_bin: str, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """``make_harness(steps=..., step_interval=..., analysis=..., v1=..., v2=..., daemon=True)`` -> a running Harness.

    ``analysis`` is merged over :data:`FAST_ANALYSIS`; ``v1`` / ``v2`` are
    DemoApp settings (error_rate, latency, ...). nginx and the apps are
    running when it returns, and the daemon too unless ``daemon=False``.
    """
    made: List[Harness] = []

    def make(*, steps: Sequence[object] = (10, 50, 100), step_interval: str = "1s",
             analysis: Optional[Dict[str, object]] = None, on_success: str = "keep",
             v1: Optional[Dict[str, Any]] = None, v2: Optional[Dict[str, Any]] = None,
             daemon: bool = True) -> Harness:
        assert not made, "one harness per test"
        root = tmp_path / "site"
        root.mkdir()
        site = DemoSite(root, nginx_bin)
        site.write(steps=steps, step_interval=step_interval, analysis={**FAST_ANALYSIS, **(analysis or {})},
                   on_success=on_success)
        app1 = DemoApp("v1", port=site.ports["v1"], **(v1 or {}))
        app2 = DemoApp("v2", port=site.ports["v2"], **(v2 or {}))
        harness = Harness(site, app1, app2, tmp_path)
        made.append(harness)
        app1.start()
        app2.start()
        site.start_nginx()
        if daemon:
            harness.start_daemon()
        return harness

    yield make
    for harness in made:
        problems = harness.close()
        log = harness.daemon_log()
        if log:
            print(log)
        assert not problems, problems


# -- assertions shared by the test files -------------------------------------------------------------

SERVER_LINE = re.compile(r"^(\s*server\s+)(\S+?)((?:\s+[^;#\s]+)*);(.*)$")


def server_params(text: str) -> Dict[str, List[str]]:
    """The parameters of each ``server`` line of an upstream file, by address."""
    found = {}
    for line in text.splitlines():
        match = SERVER_LINE.match(line)
        if match:
            found[match.group(2)] = match.group(3).split()
    return found


def without_server_params(text: str) -> List[str]:
    """The file's lines with the parameters of ``server`` lines cut out (what a rollout must never touch)."""
    return [SERVER_LINE.sub(r"\1\2;\4", line) for line in text.splitlines(keepends=True)]


def assert_files_give_canary_everything(h: Harness) -> None:
    """nginx.conf untouched; upstream.conf differs from the original only in the two servers' parameters,

    with the stable server ``down`` and the canary up: the canary has 100 %.
    """
    now = h.site.config_files()
    assert set(now) == set(h.originals)
    for name, data in now.items():
        if name != "conf.d/upstream.conf":
            assert data == h.originals[name], name
    text = now["conf.d/upstream.conf"].decode()
    assert without_server_params(text) == without_server_params(h.originals["conf.d/upstream.conf"].decode())
    params = server_params(text)
    assert "down" in params[h.site.v1], text
    assert "down" not in params[h.site.v2], text


def non_check_events(h: Harness) -> List[str]:
    return [r["event"] for r in h.history() if r["event"] != "check"]


def records(h: Harness, event: str) -> List[Dict[str, Any]]:
    return [r for r in h.history() if r["event"] == event]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed CLI command (no traceback), checked for the usual prefix."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nginx-canary: error: "), lines[0]
    return lines[0]


def catch_step_change_in_flight(h: Harness, min_step: int, timeout: float = WAIT) -> Optional[Dict[str, Any]]:
    """Watch the saved state until it shows an automatic step change in flight (``step_started_at`` None).

    Returns that saved state, as soon as it is seen (the caller then signals
    the daemon), or None if the rollout ended or ``timeout`` passed first.
    """
    path = h.site.state_dir / "rollouts" / "app.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if state["state"] == "progressing" and state["step_started_at"] is None and state["step_index"] >= min_step:
            return state
        if state["state"] not in ("progressing", "paused"):
            return None
        time.sleep(0.001)
    return None


def catch_files_written(h: Harness, min_step: int, timeout: float = WAIT) -> Optional[Dict[str, Any]]:
    """Watch until a step change in flight has written nginx's file but not finished its transaction.

    That is: the saved state shows the change's intent, the transaction journal
    exists, and upstream.conf already holds the planned bytes (nginx -t, the
    reload or its verification are still to come). Returns the saved state
    then, or None if the rollout ended or ``timeout`` passed first.
    """
    path = h.site.state_dir / "rollouts" / "app.json"
    journal = h.site.state_dir / "journal.json"
    upstream = str(h.site.upstream_conf)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = json.loads(path.read_bytes())
            if state["state"] not in ("progressing", "paused"):
                return None
            if state["step_started_at"] is None and state["step_index"] >= min_step and journal.exists() \
                    and sha256(h.site.upstream_conf.read_bytes()) == state["expected_files"][upstream]:
                return state
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.0005)
    return None
