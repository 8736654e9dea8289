"""``nginx-canary demo --fleet``: one rollout across three nginx hosts coordinated through etcd.

Everything runs on free 127.0.0.1 ports from one temporary directory: a
private etcd (:class:`~nginx_canary.demo.etcd_harness.PrivateEtcd`), three
private nginx hosts ``lb-1..3`` (:class:`~nginx_canary.demo.site.DemoSite`,
each with its own prefix, access log and state dir) in front of the same two
demo apps v1 and v2 (threads of this process), one ``nginx-canary daemon``
process per host with the same ``fleet:`` section, and a bounded load on every
host (the hosts, daemons and load are :class:`~nginx_canary.demo.fleet_hosts.FleetHosts`).
Each daemon runs in its own session, so Ctrl-C reaches only this process,
which then stops every process it started by PID.

Run 1: v2 is healthy; ``start app`` on lb-2 moves all three hosts in
lock-step (every host applies a step before its bake time counts) to
promotion. v2 is then staged ``down`` again on every host. Run 2: v2 answers
:data:`BAD_ERROR_RATE` of its requests with 500; ``start`` on lb-3; the pooled
verdict fails and every host restores its own snapshot, byte for byte. Run 3:
v2 healthy again, ``start`` on lb-1; at the second step the coordinator's
daemon is SIGKILLed, another daemon takes over from the plan in etcd, the
killed one is started again and rejoins, and the rollout completes.

The summary gives, per host, when it applied each step and when it restored
(the hosts' own reports, in seconds after ``start``), how far apart the hosts'
upstream files ever were (polled every :data:`FILE_POLL` s), and what clients saw.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO

from nginx_canary.daemon import control_socket
from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.etcd_harness import PrivateEtcd
from nginx_canary.demo.fleet_hosts import FleetHosts
from nginx_canary.demo.load import LoadResult
from nginx_canary.demo.run import find_nginx
from nginx_canary.demo.site import DemoSite
from nginx_canary.errors import CanaryError
from nginx_canary.nginx import operations

HOSTS = ("lb-1", "lb-2", "lb-3")
FLEET_NAME = "demo"
STEPS = (10, 50, 100)
STEP_INTERVAL = "3s"
#: The hosts' shared analysis: a pooled 5xx breach decides within a second or two at this load; latency limits
#: are loose because the tour's failures are 5xx (the single-host demo shows a latency rollback).
ANALYSIS: Dict[str, object] = {"interval": "250ms", "min_requests": 10, "max_p99_latency_ratio": 100.0,
                               "max_p50_latency_ratio": 100.0, "max_error_rate_increase": 0.1,
                               "promotion_risk": 0.2}
#: A lost host (run 3's killed daemon) is left behind rather than pausing the fleet; it rejoins when restarted.
FLEET_SETTINGS: Dict[str, object] = {"on_host_lost": "continue", "lease_ttl": "2s"}
BAD_ERROR_RATE = 0.5
LATENCY_MEDIAN = 0.01
LATENCY_P99 = 0.05
LOAD_RATE = 60.0  # per host
LOAD_CONCURRENCY = 4
FILE_POLL = 0.02
STATUS_POLL = 0.2
RUN_TIMEOUT = 45.0
#: The load stops by itself after this, whatever happens to the tour.
MAX_TOUR_SECONDS = 180.0
EXPECTED_STATES = ["promoted", "rolled_back", "promoted"]

_SERVER = re.compile(r"^[ \t]*server[ \t]+([^\s;]+)([^;\n]*);", re.M)


def find_etcd() -> str:
    """The etcd binary. Raises CanaryError when absent."""
    found = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)
    if found is None:
        raise CanaryError("etcd is not installed; the fleet demo runs a private copy of it: "
                          "sudo apt-get install -y etcd-server")
    return found


def canary_percent(upstream_text: str, canary: str) -> Optional[Fraction]:
    """The share of weight (0-100) ``canary`` has in an upstream file; None when no server takes traffic."""
    weights: Dict[str, int] = {}
    for address, params in _SERVER.findall(upstream_text):
        words = params.split()
        weight = next((int(w[7:]) for w in reversed(words) if w.startswith("weight=") and w[7:].isdigit()), 1)
        weights[address] = 0 if "down" in words else weight
    total = sum(weights.values())
    return None if total == 0 else Fraction(100 * weights.get(canary, 0), total)


class FileWatch:
    """Reads every host's upstream file every :data:`FILE_POLL` s: which step each host's nginx is at.

    ``max_spread`` is the largest gap, in steps, between two hosts at one poll since :meth:`reset`.
    """

    def __init__(self, sites: Dict[str, DemoSite], steps: List[Fraction]) -> None:
        self.sites = sites
        self.levels = [Fraction(0), *steps]
        self.max_spread = 0
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="fleet-tour-files", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)

    def reset(self) -> None:
        with self.lock:
            self.max_spread = 0

    def _level(self, site: DemoSite) -> Optional[int]:
        try:
            percent = canary_percent(site.upstream_conf.read_text(), site.v2)
        except OSError:
            return None  # between the transaction's write and rename: read it at the next poll
        return self.levels.index(percent) if percent in self.levels else None

    def _run(self) -> None:
        while not self.stop_event.wait(FILE_POLL):
            levels = [level for level in map(self._level, self.sites.values()) if level is not None]
            if levels:
                with self.lock:
                    self.max_spread = max(self.max_spread, max(levels) - min(levels))


@dataclass
class HostTimeline:
    """One host's reports in one run: seconds after ``start`` at which it reported each thing."""

    applied: Dict[str, float] = field(default_factory=dict)  # by canary percent
    promoted: Optional[float] = None
    restored: Optional[float] = None
    last_status: str = ""


@dataclass
class FleetRun:
    """How one fleet rollout ended, from the daemons' status."""

    label: str
    state: str = "unknown"
    seconds: float = 0.0
    message: str = ""
    started_on: str = ""
    hosts: Dict[str, HostTimeline] = field(default_factory=dict)
    max_spread: int = 0
    files_identical: Optional[bool] = None  # run 2: every host's nginx files as before the run
    killed: Optional[str] = None  # run 3: the coordinator whose daemon was SIGKILLed, and when
    killed_at: Optional[float] = None
    takeover: Optional[str] = None
    takeover_at: Optional[float] = None
    restarted_at: Optional[float] = None

    def hosts_ending(self, status: str) -> List[str]:
        return sorted(h for h, t in self.hosts.items() if t.last_status == status)


@dataclass
class FleetTourReport:
    runs: List[FleetRun] = field(default_factory=list)
    loads: Dict[str, LoadResult] = field(default_factory=dict)
    pids: List[int] = field(default_factory=list)  # every process the tour started (all stopped when it returns)
    directory: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Promoted on every host; rolled back on every host with the files as before; finished after the kill."""
        if [r.state for r in self.runs] != EXPECTED_STATES:
            return False
        healthy, broken, killed = self.runs
        return (healthy.hosts_ending("promoted") == list(HOSTS) and healthy.max_spread <= 1
                and broken.hosts_ending("restored") == list(HOSTS) and broken.files_identical is True
                and killed.killed is not None and killed.takeover not in (None, killed.killed)
                and killed.hosts_ending("promoted") == list(HOSTS))


class FleetTour:
    """One tour. ``out`` receives the progress lines; ``step_interval`` is every step's bake time."""

    def __init__(self, out: TextIO = sys.stdout, *, step_interval: str = STEP_INTERVAL, keep: bool = False,
                 nginx_bin: Optional[str] = None, etcd_bin: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic, analysis: Optional[Dict[str, object]] = None,
                 load_rate: float = LOAD_RATE) -> None:
        """``analysis``: the rollout's analysis settings (default :data:`ANALYSIS`); ``load_rate``: req/s on each
        host for the whole tour (0: none; bench/bench_fleet_rollout.py sends its own per scenario)."""
        self.analysis = dict(ANALYSIS if analysis is None else analysis)
        self.load_rate = load_rate
        self.out = out
        self.step_interval = step_interval
        self.keep = keep
        self.nginx_bin = nginx_bin
        self.etcd_bin = etcd_bin
        self.clock = clock
        self.root: Optional[Path] = None
        self.etcd: Optional[PrivateEtcd] = None
        self.hosts: Optional[FleetHosts] = None
        self.files: Optional[FileWatch] = None
        self.etcd_pid: Optional[int] = None

    @property
    def sites(self) -> Dict[str, DemoSite]:
        """Each host's site by name; none before :meth:`setup`."""
        return {} if self.hosts is None else self.hosts.sites

    @property
    def apps(self) -> Dict[str, DemoApp]:
        """The shared apps v1 and v2; none before :meth:`setup`."""
        return {} if self.hosts is None else self.hosts.apps

    @property
    def pids(self) -> List[int]:
        """Every process started: etcd, each nginx and each daemon."""
        return ([] if self.etcd_pid is None else [self.etcd_pid]) + ([] if self.hosts is None else self.hosts.pids)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- set-up and tear-down ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Start etcd, the apps, three nginx hosts, their daemons, the file watch and the load.

        Raises CanaryError, OSError, EtcdHarnessError or NginxHarnessError; :meth:`teardown` stops what started.
        """
        nginx_bin = self.nginx_bin or find_nginx()
        etcd_bin = self.etcd_bin or find_etcd()
        self.root = Path(tempfile.mkdtemp(prefix="nginx-canary-fleet-demo-"))
        self.root.chmod(0o755)
        self.etcd = PrivateEtcd(self.root / "etcd" / "data", binary=etcd_bin, name="fleet-demo")
        self.etcd.start()
        self.etcd_pid = self.etcd.pid
        latency = {"latency_median": LATENCY_MEDIAN, "latency_p99": LATENCY_P99}
        self.hosts = FleetHosts(self.root, nginx_bin, HOSTS,
                                {"etcd": [self.etcd.client_url], "name": FLEET_NAME, **FLEET_SETTINGS},
                                site={"steps": STEPS, "step_interval": self.step_interval,
                                      "analysis": self.analysis, "on_success": "keep"},
                                apps={v: {"seed": i + 1, **latency} for i, v in enumerate(("v1", "v2"))})
        self.hosts.start_sites()
        self.hosts.start_daemons()
        self.files = FileWatch(self.sites, [Fraction(s) for s in STEPS])
        self.files.start()
        some = self.sites[HOSTS[0]]
        self.say(f"nginx-canary demo --fleet: everything runs on 127.0.0.1 from {self.root}")
        self.say(f"  etcd    {self.etcd.client_url} (pid {self.etcd.pid}), fleet {FLEET_NAME!r}")
        for host, site in self.sites.items():
            self.say(f"  {host:<7} nginx {site.url}, daemon pid {self.hosts.daemons[host].pid}")
        self.say(f"  apps    v1 {some.v1}, v2 {some.v2} (staged down), shared by every host")
        self.say(f"  load    {self.load_rate:.0f} req/s on each host; steps {' -> '.join(map(str, STEPS))} %, "
                 f"each baked {self.step_interval} once every host applied it")
        if self.load_rate > 0:
            self.hosts.start_load(self.load_rate, MAX_TOUR_SECONDS, concurrency=LOAD_CONCURRENCY)

    def teardown(self) -> None:
        """Stop everything started (by PID, in order) and remove the directory unless ``keep``; Ctrl-C waits."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if self.files is not None:
                self.files.stop()
            if self.hosts is not None:
                self.hosts.stop()
            if self.etcd is not None:
                self.etcd.stop()
            if self.root is not None and not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    # -- the three runs ----------------------------------------------------------------------------------------

    def run(self) -> FleetTourReport:
        """Set up, run the three fleet rollouts, tear down. Raises CanaryError/OSError (after the tear-down)."""
        started = self.clock()
        report = FleetTourReport()
        try:
            self.setup()
            report.directory = str(self.root)
            time.sleep(1.0)  # a second of stable traffic first
            self.say("\nrun 1: v2 is healthy; `start app` on lb-2 moves every host")
            report.runs.append(self._rollout("healthy v2", "lb-2"))
            self._stage_v2_down()
            self.apps["v2"].update(error_rate=BAD_ERROR_RATE)
            self.say(f"\nrun 2: v2 now answers {BAD_ERROR_RATE:.0%} of its requests with 500; `start app` on lb-3")
            originals = {h: s.config_files() for h, s in self.sites.items()}
            broken = self._rollout(f"v2 {BAD_ERROR_RATE:.0%} 5xx", "lb-3", settle="restored")
            broken.files_identical = all(s.config_files() == originals[h] for h, s in self.sites.items())
            report.runs.append(broken)
            self.apps["v2"].update(error_rate=0.0)
            self.say("\nrun 3: v2 healthy again; `start app` on lb-1; the coordinator is SIGKILLed at the second step")
            report.runs.append(self._rollout("coordinator killed", "lb-1", kill_at_step=1))
        finally:
            if self.hosts is not None:
                self.hosts.stop_load()
                report.loads = dict(self.hosts.loads)
            self.teardown()
            report.pids = list(self.pids)
            report.seconds = self.clock() - started
        return report

    def _call(self, host: str, command: str, **args: Any) -> Dict[str, Any]:
        return control_socket.call(self.sites[host].socket_path, command, args, timeout=30)

    def _status(self, host: str) -> Dict[str, Any]:
        data = self._call(host, "status", name="app")
        return data["rollouts"][0] if "rollouts" in data else data

    def _alive(self) -> List[str]:
        return [] if self.hosts is None else self.hosts.alive()

    def _rollout(self, label: str, on: str, *, settle: str = "promoted", kill_at_step: Optional[int] = None
                 ) -> FleetRun:
        """Start the rollout on host ``on`` and follow it until it ended and every live host reported ``settle``."""
        assert self.files is not None and self.hosts is not None
        outcome = FleetRun(label, started_on=on, hosts={h: HostTimeline() for h in HOSTS})
        self.files.reset()
        start, wall = self.clock(), time.time()
        self._call(on, "start", name="app")
        viewer, last_line = on, ""
        while self.clock() - start < RUN_TIMEOUT:
            if viewer not in self._alive():
                viewer = self._alive()[0]
            status = self._status(viewer)
            fleet = status.get("fleet") or {}
            self._record(outcome, fleet.get("hosts") or {}, wall)
            line = self._progress_line(status)
            if line != last_line:
                self.say(f"  [{self.clock() - start:5.1f}s] {line}")
                last_line = line
            if kill_at_step is not None and outcome.killed is None and status.get("step") == kill_at_step:
                self._kill_coordinator(outcome, fleet.get("coordinator"), start)
                viewer = self._alive()[0]
                continue
            if outcome.killed is not None and outcome.takeover is None:
                holder = fleet.get("coordinator")
                if holder not in (None, outcome.killed):
                    outcome.takeover, outcome.takeover_at = holder, self.clock() - start
                    self.say(f"  [{outcome.takeover_at:5.1f}s] {holder} coordinates now; "
                             f"starting {outcome.killed}'s daemon again")
                    outcome.restarted_at = self.clock() - start
                    self.hosts.start_daemon(outcome.killed)
            ended = status["state"] not in ("progressing", "paused", "idle")
            hosts = fleet.get("hosts") or {}
            if ended and (kill_at_step is None or outcome.takeover is not None) and len(hosts) == len(HOSTS) \
                    and all(r.get("status") == settle for r in hosts.values()):
                break
            time.sleep(STATUS_POLL)
        outcome.state, outcome.message = status["state"], status.get("message") or ""
        outcome.seconds = self.clock() - start
        outcome.max_spread = self.files.max_spread
        if outcome.state in ("progressing", "paused"):
            self._call(viewer, "abort", name="app")
            outcome.state = "timed out (aborted)"
        self.say(f"  -> {outcome.state} after {outcome.seconds:.1f} s: {outcome.message}")
        return outcome

    def _kill_coordinator(self, outcome: FleetRun, coordinator: Optional[str], start: float) -> None:
        assert self.hosts is not None
        if coordinator not in self.hosts.daemons:
            return  # not known yet: look again at the next poll
        proc = self.hosts.daemons[coordinator]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        outcome.killed, outcome.killed_at = coordinator, self.clock() - start
        self.say(f"  [{outcome.killed_at:5.1f}s] SIGKILL to {coordinator}'s daemon (pid {proc.pid}), "
                 "the coordinator; its nginx keeps serving")

    @staticmethod
    def _record(outcome: FleetRun, hosts: Dict[str, Dict[str, Any]], wall: float) -> None:
        for host, report in hosts.items():
            at = float(report.get("at") or 0.0) - wall
            if at < 0:
                continue  # the previous run's report, until this host acts on this run's plan
            timeline = outcome.hosts.setdefault(host, HostTimeline())
            status = str(report.get("status"))
            timeline.last_status = status
            if status == "applied":
                timeline.applied.setdefault(str(report.get("percent")), at)
            elif status == "promoted" and timeline.promoted is None:
                timeline.promoted = at
            elif status == "restored" and timeline.restored is None:
                timeline.restored = at

    @staticmethod
    def _progress_line(status: Dict[str, Any]) -> str:
        fleet = status.get("fleet") or {}
        hosts = fleet.get("hosts") or {}
        steps = status.get("steps") or []
        rows = "  ".join(f"{h} {r.get('status')}" + (f" {r['percent']} %" if r.get("percent") else "")
                         for h, r in sorted(hosts.items()))
        return (f"{status['state']:<11} step {(status.get('step') or 0) + 1}/{len(steps)} "
                f"coordinator {fleet.get('coordinator') or '-'}  {rows}")

    def _stage_v2_down(self) -> None:
        for site in self.sites.values():
            settings = operations.Settings(str(site.conf), site.nginx_bin, str(site.prefix), str(site.state_dir))
            operations.set_weight(settings, "backend", Fraction(0), [site.v2])
        self.say("\nv2 staged down again on every host (set-weight backend 0 --canary v2): all traffic on v1")


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_summary(report: FleetTourReport) -> str:
    """Each run's outcome and reason, every host's timings (s after ``start``), what clients saw."""
    percents = [str(s) for s in STEPS]
    lines = ["", f"summary: fleet {FLEET_NAME!r} of {len(HOSTS)} hosts ({', '.join(HOSTS)}) on one etcd; "
             "times are seconds after `start`, from each host's own report"]
    for run in report.runs:
        lines.append(f"  {run.label:<19} {run.state} after {run.seconds:.1f} s (started on {run.started_on})")
        if run.message:
            lines.append(f"  {'':<19}   why: {run.message}")
        if run.killed is not None:
            lines.append(f"  {'':<19}   {run.killed} (coordinator) SIGKILLed at {_seconds(run.killed_at)} s; "
                         f"{run.takeover or 'no host'} took over at {_seconds(run.takeover_at)} s; "
                         f"{run.killed}'s daemon restarted at {_seconds(run.restarted_at)} s")
        header = "".join(f"{p + ' %':>8}" for p in percents) + f"{'promoted':>10}{'restored':>10}   last report"
        lines.append(f"  {'':<19}   {'host':<6}{header}")
        for host in HOSTS:
            t = run.hosts.get(host, HostTimeline())
            cells = "".join(f"{_seconds(t.applied.get(p)):>8}" for p in percents)
            lines.append(f"  {'':<19}   {host:<6}{cells}{_seconds(t.promoted):>10}{_seconds(t.restored):>10}   "
                         f"{t.last_status or '-'}")
        facts = [f"hosts' files at most {run.max_spread} step(s) apart (polled every {FILE_POLL * 1000:.0f} ms)"]
        if run.files_identical is not None:
            facts.append("every host's nginx files byte-identical to before the run: "
                         + ("yes" if run.files_identical else "NO"))
        lines.append(f"  {'':<19}   " + "; ".join(facts))
    if report.loads:
        total = sum(r.responses for r in report.loads.values())
        errors = sum(r.status_5xx for r in report.loads.values())
        sockets = sum(r.socket_errors for r in report.loads.values())
        by_version: Dict[str, int] = {}
        for result in report.loads.values():
            for version, count in result.versions_5xx.items():
                by_version[version] = by_version.get(version, 0) + count
        lines.append(f"  requests served     {total} through {len(report.loads)} hosts; errors clients saw: "
                     f"{errors} 5xx ({', '.join(f'{k} {v}' for k, v in sorted(by_version.items())) or 'none'}), "
                     f"{sockets} socket errors")
    lines.append(f"  total               {report.seconds:.1f} s; {len(report.pids)} processes started, all stopped; "
                 + ("kept in " + report.directory if report.directory and os.path.exists(report.directory)
                    else "files removed"))
    return "\n".join(lines)
