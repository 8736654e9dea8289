"""``nginx-canary demo``: a healthy rollout to promotion, then a failing and a slow one to automatic rollback.

Everything lives in one temporary directory and on free 127.0.0.1 ports: a
private nginx (:class:`~nginx_canary.demo.site.DemoSite`), demo apps v1 and v2
(threads of this process), a bounded load generator (threads) and the daemon (a
subprocess in its own session, so that Ctrl-C reaches only this process, which
then stops everything in order). Nothing is installed or written elsewhere.

Both apps answer with a realistic latency (a lognormal of median
:data:`LATENCY_MEDIAN` and p99 :data:`LATENCY_P99`, each with its own seed).
Run 1: v2 is healthy; the daemon steps it 25 -> 50 -> 100 % and promotes it.
Then v2 is staged ``down`` again (the same transaction as ``set-weight 0``)
and made to answer 30 % of its requests with 500. Run 2: the daemon starts the
same rollout, sees the canary's 5xx rate in the access log and restores the
original config (v2 down). Then v2 answers every request with 200 again, but
:data:`SLOW_LATENCY_SCALE` times slower. Run 3: the same rollout, rolled back
on the canary's latency. The summary gives each run's outcome and the
daemon's reason, the time to each rollback, the requests served and the
errors clients saw.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO

from nginx_canary.daemon import control_socket

from nginx_canary.nginx import operations
from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.load import LoadResult, run_load
from nginx_canary.demo.site import DemoSite
from nginx_canary.errors import CanaryError, NginxNotRunningError

#: The first step gives the canary enough of LOAD_RATE for the judge to decide within a few seconds: a pass
#: needs a few hundred canary requests as evidence that its 5xx rate is within tolerance (75 req/s here).
STEPS = (25, 50, 100)
STEP_INTERVAL = "4s"
ANALYSIS = {"interval": "250ms", "min_requests": 20, "failure_threshold": 1}
BAD_ERROR_RATE = 0.3
#: Both apps' latency (seconds): a few ms to tens of ms, with a long tail.
LATENCY_MEDIAN = 0.02
LATENCY_P99 = 0.1
#: Run 3's canary is this many times slower in every quantile.
SLOW_LATENCY_SCALE = 3.0
LOAD_RATE = 300.0
#: Enough connections for LOAD_RATE at the slow canary's latency (mean ~60 ms at 3x) without falling behind.
LOAD_CONCURRENCY = 32
#: Each run must end within this; the whole demo (three runs) stays under 90 s.
RUN_TIMEOUT = 24.0
MAX_DEMO_SECONDS = 85.0
EXPECTED_STATES = ["promoted", "rolled_back", "rolled_back"]


def find_nginx() -> str:
    """The nginx binary: ``nginx`` in PATH, else /usr/sbin/nginx. Raises NginxNotRunningError when absent."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise NginxNotRunningError("nginx is not installed; the demo runs a private copy of it: "
                                   "sudo apt-get install -y nginx (or run `make demo`)")
    return found


@dataclass
class RunOutcome:
    """What one rollout of the demo ended in, from the daemon's status and history."""

    label: str
    key: str = "run"  # in the report's file name
    state: str = "unknown"
    seconds: float = 0.0
    message: str = ""
    first_failed_check: Optional[float] = None  # seconds after the canary first got traffic
    restored_after: Optional[float] = None
    report_path: Optional[str] = None


@dataclass
class DemoReport:
    """The demo's summary figures."""

    runs: List[RunOutcome] = field(default_factory=list)
    load: Optional[LoadResult] = None
    directory: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Each run ended as the demo promises, the slow canary's on its latency."""
        states = [r.state for r in self.runs]
        return states == EXPECTED_STATES and "latency" in self.runs[2].message


class Demo:
    """One demo run. ``out`` receives the progress lines; ``clock`` is monotonic seconds."""

    def __init__(self, out: TextIO = sys.stdout, *, nginx_bin: Optional[str] = None, keep: bool = False,
                 clock: Callable[[], float] = time.monotonic, poll_every: float = 1.0,
                 report_dir: Optional[str] = None) -> None:
        """``report_dir``: where each run's HTML report goes (default: the system's temp directory)."""
        self.out = out
        self.report_dir = report_dir if report_dir is not None else tempfile.gettempdir()
        self.nginx_bin = nginx_bin
        self.keep = keep
        self.clock = clock
        self.poll_every = poll_every
        self.root: Optional[Path] = None
        self.site: Optional[DemoSite] = None
        self.apps: Dict[str, DemoApp] = {}
        self.daemon: Optional[subprocess.Popen] = None
        self.daemon_log: Optional[TextIO] = None
        self.load_stop = threading.Event()
        self.load_thread: Optional[threading.Thread] = None
        self.load_result: Optional[LoadResult] = None
        self.nginx_pid: Optional[int] = None
        self._started = 0.0

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- set-up and tear-down ---------------------------------------------------------

    def setup(self) -> DemoSite:
        """Create the temp site, start nginx, the apps, the daemon and the load. Raises CanaryError/OSError."""
        nginx_bin = self.nginx_bin or find_nginx()
        self.root = Path(tempfile.mkdtemp(prefix="nginx-canary-demo-"))
        site = self.site = DemoSite(self.root, nginx_bin)
        site.write(steps=STEPS, step_interval=STEP_INTERVAL, analysis=ANALYSIS, on_success="keep")
        latency = {"latency_median": LATENCY_MEDIAN, "latency_p99": LATENCY_P99}
        self.apps["v1"] = DemoApp("v1", port=site.ports["v1"], seed=1, **latency)
        self.apps["v2"] = DemoApp("v2", port=site.ports["v2"], seed=2, **latency)
        for app in self.apps.values():
            app.start()
        site.start_nginx()
        self.nginx_pid = site.nginx_pid()
        self.daemon_log = open(self.root / "daemon.log", "w")
        env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(nginx_bin), os.environ.get("PATH", "")]))
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(key, None)
        self.daemon = subprocess.Popen(site.daemon_command(sys.executable), stdout=subprocess.DEVNULL,
                                       stderr=self.daemon_log, env=env, start_new_session=True)
        self._wait_for_daemon()
        self.say(f"nginx-canary demo: everything runs on 127.0.0.1 from {self.root}")
        self.say(f"  nginx   {site.url}  upstream backend: v1 {site.v1}, v2 {site.v2} (staged down)")
        self.say(f"  daemon  pid {self.daemon.pid}, log {self.root / 'daemon.log'}, checks every "
                 f"{ANALYSIS['interval']} on every request since the step began")
        self.say(f"  apps    answer in {LATENCY_MEDIAN * 1000:.0f} ms (median), {LATENCY_P99 * 1000:.0f} ms (p99)")
        self.say(f"  load    {LOAD_RATE:.0f} req/s from {LOAD_CONCURRENCY} connections")
        self.load_thread = threading.Thread(target=self._load, name="demo-load", daemon=True)
        self.load_thread.start()
        return site

    def _wait_for_daemon(self, timeout: float = 20.0) -> None:
        assert self.site is not None and self.daemon is not None
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            if self.daemon.poll() is not None:
                raise CanaryError(f"the daemon exited with {self.daemon.returncode}: {self._daemon_tail()}")
            try:
                control_socket.call(self.site.socket_path, "ping", timeout=5)
                return
            except CanaryError:
                time.sleep(0.1)
        raise CanaryError(f"the daemon did not answer within {timeout:g} s: {self._daemon_tail()}")

    def _daemon_tail(self) -> str:
        if self.root is None:
            return ""
        try:
            lines = (self.root / "daemon.log").read_text().strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else "(no output)"

    def _load(self) -> None:
        assert self.site is not None
        self.load_result = run_load(self.site.url, rate=LOAD_RATE, duration=MAX_DEMO_SECONDS,
                                    max_requests=int(LOAD_RATE * MAX_DEMO_SECONDS), concurrency=LOAD_CONCURRENCY,
                                    timeout=5.0, stop_event=self.load_stop)

    def teardown(self) -> None:
        """Stop everything started, in order, and remove the temp directory (unless ``keep``).

        A second Ctrl-C during the tear-down is ignored, so that it completes.
        """
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._teardown()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _teardown(self) -> None:
        self.load_stop.set()
        if self.load_thread is not None:
            self.load_thread.join(timeout=15)
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.daemon_log is not None:
            self.daemon_log.close()
        if self.site is not None:
            self.site.stop_nginx()
            self.site.cleanup()
        for app in self.apps.values():
            app.stop()
        if self.root is not None and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- the three runs --------------------------------------------------------------------

    def run(self) -> DemoReport:
        """Set up, run the three rollouts, tear down; the report says how they ended. Raises CanaryError/OSError."""
        self._started = self.clock()
        report = DemoReport()
        try:
            site = self.setup()
            report.directory = str(self.root)
            time.sleep(1.0)  # a second of stable traffic before the first rollout
            self.say(f"\nrun 1: v2 is healthy; rollout {' -> '.join(map(str, STEPS))} % every {STEP_INTERVAL}")
            report.runs.append(self._rollout("healthy v2", "healthy"))
            self._stage_v2_down(site)
            self.apps["v2"].update(error_rate=BAD_ERROR_RATE)
            self.say(f"\nrun 2: v2 now answers {BAD_ERROR_RATE:.0%} of its requests with 500; same rollout")
            report.runs.append(self._rollout("v2 with 30 % 5xx", "errors"))
            self.apps["v2"].update(error_rate=0.0, latency_scale=SLOW_LATENCY_SCALE)
            self.say(f"\nrun 3: v2 answers 200 again but {SLOW_LATENCY_SCALE:g}x slower "
                     f"({LATENCY_MEDIAN * SLOW_LATENCY_SCALE * 1000:.0f} ms median, "
                     f"{LATENCY_P99 * SLOW_LATENCY_SCALE * 1000:.0f} ms p99); same rollout")
            report.runs.append(self._rollout(f"v2 {SLOW_LATENCY_SCALE:g}x slower", "slow"))
        finally:
            self.load_stop.set()
            if self.load_thread is not None:
                self.load_thread.join(timeout=15)
            report.load = self.load_result
            report.seconds = self.clock() - self._started
            self.teardown()
        return report

    def _call(self, command: str, **args: Any) -> Any:
        assert self.site is not None
        return control_socket.call(self.site.socket_path, command, args, timeout=60)

    def _rollout(self, label: str, key: str) -> RunOutcome:
        outcome = RunOutcome(label, key)
        start = self.clock()
        status = self._call("start", name="app")
        last_line = ""
        while status["state"] in ("progressing", "paused") and self.clock() - start < RUN_TIMEOUT:
            line = self._progress_line(status, self.clock() - start)
            if line != last_line:
                self.say(line)
                last_line = line
            time.sleep(self.poll_every)
            status = self._call("status", name="app")["rollouts"][0]
        outcome.state = status["state"]
        outcome.seconds = self.clock() - start
        outcome.message = status.get("message", "")
        if status["state"] in ("progressing", "paused"):
            self._call("abort", name="app")
            outcome.state = "timed out (aborted)"
        self._timings(outcome)
        self.say(f"  -> {outcome.state} after {outcome.seconds:.1f} s: {outcome.message}")
        outcome.report_path = self._write_report(outcome)
        return outcome

    def _write_report(self, outcome: RunOutcome) -> Optional[str]:
        """The run's HTML report, outside the temp directory (it outlives the demo); None if it cannot be written."""
        from nginx_canary.report.html import render_report

        time.sleep(1.5)  # the daemon records a few more seconds of the series after a run ends
        answer = self._call("report", name="app")
        generated_at = time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(generated_at))
        slug = "promoted" if outcome.state == "promoted" else "rolled-back" if outcome.state == "rolled_back" else "run"
        path = os.path.join(self.report_dir, f"nginx-canary-demo-{outcome.key}-{slug}-{stamp}.html")
        page = render_report("app", answer["history"], answer["points"], generated_at=generated_at,
                             source=f"nginx-canary demo: {outcome.label}")
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(page)
        except OSError as exc:
            self.say(f"  (report not written: {path}: {exc.strerror})")
            return None
        self.say(f"  report: {path}")
        return path

    @staticmethod
    def _progress_line(status: Dict[str, Any], elapsed: float) -> str:
        def group(name: str) -> str:
            figures = status.get(name) or {}
            p99 = figures.get("p99")
            return (f"{name} {figures.get('requests', 0):>4} req {figures.get('error_rate', 0.0) * 100:5.1f}% 5xx "
                    f"p99 {'-' if p99 is None else f'{p99 * 1000:.1f}ms'}")

        check = status.get("last_check") or {}
        steps = status.get("steps") or []
        return (f"  [{elapsed:5.1f}s] {status['state']:<11} canary {status['canary_percent']:>3} % "
                f"(step {status['step'] + 1}/{len(steps)})  {group('canary')} | {group('stable')}  "
                f"{check.get('verdict', '-')}")

    def _timings(self, outcome: RunOutcome) -> None:
        """Fill in when the canary first got traffic, the first failed check and the restore, from the history."""
        records = self._call("history", name="app", limit=400)["records"]
        starts = [i for i, r in enumerate(records) if r["event"] == "start"]
        if not starts:
            return
        run = records[starts[-1]:]
        first_step = next((r["time"] for r in run if r["event"] == "step"), None)
        failed = next((r["time"] for r in run if r["event"] == "check"
                       and (r["detail"].get("verdict") or {}).get("verdict") == "fail"), None)
        restored = next((r["time"] for r in run if r["event"] == "restored"), None)
        if first_step is not None and failed is not None:
            outcome.first_failed_check = failed - first_step
        if first_step is not None and restored is not None:
            outcome.restored_after = restored - first_step

    def _stage_v2_down(self, site: DemoSite) -> None:
        settings = operations.Settings(str(site.conf), site.nginx_bin, str(site.prefix), str(site.state_dir))
        operations.set_weight(settings, "backend", Fraction(0), [site.v2])
        self.say("\nv2 staged down again (set-weight backend 0 --canary v2): all traffic on v1")


def format_summary(report: DemoReport) -> str:
    """The closing lines: each run's outcome and the daemon's reason, the times to rollback, what clients saw."""
    lines = ["", "summary"]
    for run in report.runs:
        lines.append(f"  {run.label:<18} {run.state} after {run.seconds:.1f} s")
        if run.message:
            lines.append(f"  {'':<18}   why: {run.message}")
    for run in report.runs:
        if run.restored_after is None:
            continue
        detected = "" if run.first_failed_check is None else (
            f"first failed check {run.first_failed_check:.2f} s, ")
        lines.append(f"  time to rollback   {run.restored_after:.2f} s after the canary got traffic "
                     f"({run.label}: {detected}original config restored and reloaded)")
    for run in report.runs:
        if run.report_path:
            lines.append(f"  report             {run.report_path}  ({run.label})")
    load = report.load
    if load is not None:
        lines.append(f"  requests served    {load.responses} in {load.elapsed:.0f} s ({load.rate:.0f} req/s); "
                     f"by version: " + ", ".join(f"{k} {v}" for k, v in sorted(load.versions.items())))
        errors = load.status_5xx + load.socket_errors
        by_version = ", ".join(f"{k} {v}" for k, v in sorted(load.versions_5xx.items())) or "none"
        lines.append(f"  errors clients saw {errors} ({load.status_5xx} 5xx: {by_version}; "
                     f"{load.socket_errors} socket errors)")
    lines.append(f"  total              {report.seconds:.1f} s; everything stopped and "
                 + ("kept in " + report.directory if report.directory and os.path.exists(report.directory)
                    else "removed"))
    return "\n".join(lines)
