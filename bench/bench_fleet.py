#!/usr/bin/env python3
"""The fleet at scale (issue #13, item 6): real FleetNodes, a real etcd, 3 / 30 / 300 simulated hosts.

For each fleet size N (``--hosts 3,30,300``) a fresh private etcd is started
(:class:`nginx_canary.demo.etcd_harness.PrivateEtcd`) and N hosts join it.
Each host is the daemon's own :class:`FleetNode` with one
:class:`HostAgent`, whose config engine applies to nothing
(:class:`NullApplier` records the percent) and whose traffic is synthetic
(:class:`SyntheticTraffic`: ``--rate`` req/s through the host, the canary
getting the applied percent of it, 0.5 % 5xx on both groups, latencies
spread over a fixed table of about 60 millisecond values so a figures record
has the size a real host's has). The coordinator judges with the real judge
(:func:`nginx_canary.rollout.judge.judge`). Every host publishes its figures
every ``--publish-interval`` s (the rollout's ``analysis.interval``, as the
daemon does) and is ticked every ``--tick`` s (250 ms, the daemon's check
interval): the hosts are split over ``--procs`` worker processes, each
ticking its hosts round-robin from one loop (a host's next tick is due one
period after its last; a loop that falls behind ticks back to back and the
achieved tick rate says so).

One run per N: ``start`` (from a bench-side node that is no member), steps
``5 10 20 30 50 100`` with a bake time of ``--step-interval`` s; once every
host applied the 50 % step the synthetic canary turns to 100 % 5xx on every
host (the breach); the run ends when every host has reported its restore.
A bench-side observer watches the plan and the reports (etcd watches on
``rollouts/app/plan`` and ``rollouts/app/reports/``) and stamps each event
when it arrives. Figures, per N, beside each other:

* **barrier latency**: per step, the plan of the step seen by the observer
  -> the last host's ``applied`` report seen (p50 / p90 / max over steps);
  and -> the coordinator's barrier write (it saw every host applied).
* **breach**: breach -> the rollback plan written (the decision); -> the last
  host told to restore (its agent called ``restore``); -> the last host's
  ``restored`` report seen.
* **etcd requests/s** over the run (the workers count every call in a
  :class:`FleetStore` subclass, by API), etcd's own view from ``/metrics``
  (``grpc_server_handled_total``, ``etcd_network_client_grpc_sent_bytes_total``:
  the bytes it sent, per host tick), and the CPU of etcd's process (psutil).
* what the machine allowed: ticks per host per second achieved (target
  1 / ``--tick``), the tick gap p90 / max, the coordinator's tick p50 / max,
  the workers' CPU, leases lost, ticks cut off from etcd.

Every wait is bounded: a run stops at ``--max-seconds`` (shared by the sizes),
a size that does not finish says where it stopped. Prints figures, asserts
nothing.

Usage: .venv/bin/python bench/bench_fleet.py [--hosts 3,30,300] [--publish-interval 1] [--tick 0.25]
       [--procs 2] [--rate 100] [--step-interval 1] [--max-seconds 600] [--quick] [--json FILE]

--quick: steps 10 50 100 (breach at 50), bake 0.5 s, 3 hosts unless --hosts says otherwise (~10 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
try:   # the installed package, as users run it
    import nginx_canary  # noqa: F401
except ImportError:
    sys.path.append(REPO)

import psutil  # noqa: E402
import requests  # noqa: E402

from nginx_canary.config.model import AnalysisSettings, RolloutSettings  # noqa: E402
from nginx_canary.demo.etcd_harness import PrivateEtcd  # noqa: E402
from nginx_canary.domain import State  # noqa: E402
from nginx_canary.errors import FleetError  # noqa: E402
from nginx_canary.fleet.agent import HostAgent, state_file  # noqa: E402
from nginx_canary.fleet.members import member_record  # noqa: E402
from nginx_canary.fleet.node import FleetNode  # noqa: E402
from nginx_canary.fleet.plan import APPLIED, RESTORED, HostFigures, HostReport, Plan  # noqa: E402
from nginx_canary.fleet.store import FleetStore, Lease, LeaseLost, Watch  # noqa: E402
from nginx_canary.logs.window import Stats  # noqa: E402
from nginx_canary.rollout.judge import judge  # noqa: E402

FLEET = "bench"
ROLLOUT = "app"
STEPS = (5, 10, 20, 30, 50, 100)
BREACH_PERCENT = 50
QUICK_STEPS = (10, 50, 100)
ERROR_SHARE = 0.005
TTL = 5                     # the daemon's default lease (fleet.lease_ttl)
JOIN_SECONDS = 30.0         # every host a member and a coordinator elected, at most
DRAIN_SECONDS = 15.0        # a worker's stop, at most
# Fast analysis, as the fleet tests use: the judge's statistics are benchmarked in bench_judge.py.
ANALYSIS = dict(min_requests=10, max_p99_latency_ratio=100.0, max_p50_latency_ratio=100.0,
                max_error_rate_increase=0.1, promotion_risk=0.2)


def latency_table(size: int = 120) -> List[float]:
    """``size`` quantiles of a lognormal (median 20 ms, sigma 0.5) with a 3 % tail, rounded to the millisecond."""
    values = []
    for i in range(size):
        q = (i + 0.5) / size
        if q < 0.97:
            z = statistics.NormalDist().inv_cdf(q / 0.97)
            seconds = 0.020 * math.exp(0.5 * z)
        else:
            z = statistics.NormalDist().inv_cdf((q - 0.97) / 0.03)
            seconds = 0.120 * math.exp(z)
        values.append(max(0.001, round(seconds, 3)))
    return values


# -- one simulated host's parts -----------------------------------------------------------------------

class NullApplier:
    """A SplitApplier that changes nothing: remembers the percent and when it was told to restore."""

    def __init__(self) -> None:
        self.percent = Fraction(0)
        self.restored_at: Optional[float] = None

    def begin(self, rollout_name: str) -> str:
        return "snapshot"

    def apply(self, percent: Fraction) -> Dict[str, str]:
        self.percent = percent
        return {}

    def restore(self, snapshot_id: str) -> Dict[str, str]:
        self.percent = Fraction(0)
        self.restored_at = time.time()
        return {}


class SyntheticTraffic:
    """A TrafficSource: ``rate`` req/s, the canary's share the applied percent, ``ERROR_SHARE`` 5xx on both
    groups; every canary request 5xx from the shared ``breach`` time on (0: never)."""

    def __init__(self, applier: NullApplier, rate: float, latencies: Sequence[float], breach: Any) -> None:
        self.applier = applier
        self.rate = rate
        self.latencies = latencies
        self.breach = breach
        self.since = time.time()

    def begin_step(self, at: float) -> None:
        self.since = at

    def evidence(self, now: float) -> Tuple[Stats, Stats]:
        share = float(self.applier.percent) / 100
        total = self.rate * max(0.0, now - self.since)
        canary_n, stable_n = round(total * share), round(total * (1 - share))
        breach = self.breach.value
        broken = 0
        if breach and now > breach:
            broken = round(canary_n * (now - max(breach, self.since)) / max(now - self.since, 1e-9))
        return (self._stats(canary_n, round((canary_n - broken) * ERROR_SHARE) + broken),
                self._stats(stable_n, round(stable_n * ERROR_SHARE)))

    def _stats(self, requests_n: int, errors: int) -> Stats:
        stats = Stats()
        table = self.latencies
        ok = requests_n - errors
        for i, seconds in enumerate(table):
            count = ok // len(table) + (1 if i < ok % len(table) else 0)
            if count:
                stats.add(200, seconds, count)
        if errors:
            stats.add(500, table[len(table) // 2], errors)
        return stats


class CountingStore(FleetStore):
    """A FleetStore that counts its calls by API in one-second buckets, and the leases it found lost."""

    def __init__(self, endpoints: Sequence[str], fleet: str, counts: Counter, lock: threading.Lock,
                 **kwargs: Any) -> None:
        super().__init__(endpoints, fleet, **kwargs)
        self.counts = counts
        self.counts_lock = lock

    def _count(self, what: str) -> None:
        with self.counts_lock:
            self.counts[(int(time.time()), what)] += 1

    def _call(self, what: str, api: str, payload: Dict[str, Any]) -> Dict[str, Any]:
        self._count(api)
        return super()._call(what, api, payload)

    def refresh(self, lease: Lease) -> int:
        try:
            return super().refresh(lease)
        except LeaseLost:
            self._count("lease lost")
            raise


def rollout_settings(steps: Sequence[int], step_interval: float, publish_interval: float) -> RolloutSettings:
    return RolloutSettings(name=ROLLOUT, upstream="backend", canary=("10.0.0.12:8080",),
                           steps=tuple(Fraction(s) for s in steps), step_interval=step_interval,
                           analysis=AnalysisSettings(interval=publish_interval, **ANALYSIS))  # type: ignore[arg-type]


# -- a worker process: ticks its slice of the hosts --------------------------------------------------

@dataclass
class WorkerResult:
    calls: Dict[str, int] = field(default_factory=dict)     # "SECOND API" -> calls
    ticks: List[float] = field(default_factory=list)        # wall-clock time of every tick
    gaps: List[float] = field(default_factory=list)         # seconds between two ticks of the same host
    coordinator_ticks: List[float] = field(default_factory=list)  # seconds one tick of the coordinator took
    restored_at: Dict[str, float] = field(default_factory=dict)
    cut_off_ticks: int = 0
    error: str = ""


def worker(url: str, hosts: Sequence[str], cfg: Dict[str, Any], state_dir: str, breach: Any, stop: Any,
           out: Any) -> None:
    """Build the nodes of ``hosts`` and tick them from ``cfg["threads"]`` threads until ``stop``; the results
    go to ``out``."""
    logging.getLogger("nginx_canary").setLevel(logging.CRITICAL)  # lost leases are counted, not logged 300 times
    result = WorkerResult()
    counts: Counter = Counter()
    lock = threading.Lock()
    appliers: Dict[str, NullApplier] = {}
    try:
        settings = rollout_settings(cfg["steps"], cfg["step_interval"], cfg["publish_interval"])
        latencies = latency_table()
        nodes: List[FleetNode] = []
        for host in hosts:
            applier = NullApplier()
            appliers[host] = applier
            agent = HostAgent(host, settings, applier, SyntheticTraffic(applier, cfg["rate"], latencies, breach),
                              state_file(state_dir, f"{ROLLOUT}-{host}"), judge)
            store = CountingStore([url], FLEET, counts, lock, timeout=2.0)
            nodes.append(FleetNode(store, host, {ROLLOUT: agent}, ttl=cfg["ttl"], judge=judge))
        threads = [threading.Thread(target=_tick_loop, args=(nodes[k::cfg["threads"]], cfg, stop, result, lock),
                                    daemon=True) for k in range(min(cfg["threads"], len(nodes)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, cfg["deadline_mono"] - time.monotonic()) + 5)
    except Exception:  # noqa: BLE001 - handed to the main process, which prints it
        result.error = traceback.format_exc()
    result.restored_at = {h: a.restored_at for h, a in appliers.items() if a.restored_at is not None}
    with lock:
        result.calls = {f"{second} {api}": n for (second, api), n in counts.items()}
    out.put(asdict(result))


def _tick_loop(nodes: Sequence[FleetNode], cfg: Dict[str, Any], stop: Any, result: WorkerResult,
               lock: threading.Lock) -> None:
    """Tick ``nodes`` round-robin, each every ``cfg["tick"]`` s at best, until ``stop`` or the deadline."""
    period = cfg["tick"]
    start = time.monotonic()
    due = [start + period * i / len(nodes) for i in range(len(nodes))]
    last = [0.0] * len(nodes)
    i = 0
    try:
        while not stop.is_set() and time.monotonic() < cfg["deadline_mono"]:
            wait = due[i] - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            began = time.monotonic()
            node = nodes[i]
            node.tick(time.time())
            took = time.monotonic() - began
            with lock:
                result.ticks.append(time.time())
                if last[i]:
                    result.gaps.append(began - last[i])
                if node.coordinator:
                    result.coordinator_ticks.append(took)
                if node.cut_off_since is not None:
                    result.cut_off_ticks += 1
            last[i] = began
            due[i] = max(due[i] + period, began)
            i = (i + 1) % len(nodes)
    except Exception:  # noqa: BLE001 - handed to the main process, which prints it
        with lock:
            result.error += traceback.format_exc()


# -- the observer in the main process -----------------------------------------------------------------

@dataclass
class Observed:
    plan_seen: Dict[int, float] = field(default_factory=dict)      # seq -> when its plan was seen
    plans: Dict[int, Plan] = field(default_factory=dict)
    applied: Dict[int, Dict[str, float]] = field(default_factory=dict)   # seq -> host -> when seen
    restored: Dict[int, Dict[str, float]] = field(default_factory=dict)
    barrier_seen: Dict[int, float] = field(default_factory=dict)   # seq -> when the plan with barrier_at was seen
    last_plan: Optional[Plan] = None

    def take(self, key: str, value: bytes, at: float) -> None:
        if key.endswith("/plan"):
            plan = Plan.from_json(value, key)
            self.plan_seen.setdefault(plan.seq, at)
            self.plans.setdefault(plan.seq, plan)
            if plan.barrier_at is not None:
                self.barrier_seen.setdefault(plan.seq, at)
            self.last_plan = plan
        elif "/reports/" in key:
            report = HostReport.from_json(value, key)
            if report.status == APPLIED:
                self.applied.setdefault(report.seq, {}).setdefault(report.host, at)
            elif report.status == RESTORED:
                self.restored.setdefault(report.seq, {}).setdefault(report.host, at)


def etcd_metrics(url: str) -> Dict[str, float]:
    """Requests etcd's gRPC server handled (by method) and bytes it sent and received, from ``/metrics``."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    found: Dict[str, float] = Counter()
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{"):
            method = line.split('grpc_method="', 1)[1].split('"', 1)[0]
            found[f"handled {method}"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith(("etcd_network_client_grpc_sent_bytes_total ",
                              "etcd_network_client_grpc_received_bytes_total ")):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def quantiles(values: Sequence[float]) -> Optional[Tuple[float, float, float]]:
    """(p50, p90, max), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = lambda q: ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # noqa: E731
    return rank(0.5), rank(0.9), ordered[-1]


def run_size(n: int, args: argparse.Namespace, root: Path, deadline: float) -> Dict[str, Any]:
    """One fleet of ``n`` hosts from start to the last restore (or ``deadline``, monotonic): its figures."""
    figures: Dict[str, Any] = {"hosts": n, "ended": "not started"}
    steps = QUICK_STEPS if args.quick else STEPS
    cfg = {"steps": steps, "step_interval": args.step_interval, "publish_interval": args.publish_interval,
           "tick": args.tick, "rate": args.rate, "threads": args.threads, "ttl": args.ttl,
           "deadline_mono": deadline + DRAIN_SECONDS}
    ctx = multiprocessing.get_context("fork")
    breach = ctx.Value("d", 0.0)
    stop = ctx.Event()
    out = ctx.Queue()
    state_dir = root / f"state-{n}"
    state_dir.mkdir(parents=True)
    hosts = [f"h{i:03d}" for i in range(n)]
    procs = max(1, min(args.procs, n))
    with PrivateEtcd(root / f"etcd-{n}" / "data") as etcd:
        workers = [ctx.Process(target=worker, args=(etcd.client_url, hosts[k::procs], cfg, str(state_dir), breach,
                                                    stop, out), daemon=True) for k in range(procs)]
        for proc in workers:
            proc.start()
        observer = FleetStore([etcd.client_url], FLEET, timeout=5.0)
        watches: List[Watch] = []
        results: List[Dict[str, Any]] = []
        try:
            joining = Load(etcd, workers)
            join_seconds = max(JOIN_SECONDS, 0.2 * n)
            joined = _wait_joined(observer, n, min(deadline, time.monotonic() + join_seconds))
            if joined < n:
                figures.update(joining.figures())
                figures["ended"] = f"only {joined} of {n} hosts joined in {join_seconds:g} s (figures: joining)"
            else:
                figures.update(_rollout(n, args, steps, observer, etcd, workers, breach, deadline, state_dir,
                                        watches))
        finally:
            stop.set()
            for _ in workers:
                try:
                    results.append(out.get(timeout=DRAIN_SECONDS))
                except Exception:  # noqa: BLE001 - queue.Empty: a worker that did not answer is reported
                    break
            for proc in workers:
                proc.join(5)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(5)
            for watch in watches:
                watch.close()
            observer.close()
    figures.update(_worker_figures(results, figures.get("window"), n, args.tick))
    return figures


def _wait_joined(observer: FleetStore, n: int, until: float) -> int:
    members = 0
    while time.monotonic() < until:
        try:
            members = len(observer.get_prefix("members/").entries)
            if members >= n and observer.get("coordinator") is not None:
                return members
        except FleetError:
            pass
        time.sleep(0.2)
    return members


class Load:
    """etcd's counters and CPU, and the workers' CPU, from its creation to :meth:`figures`."""

    def __init__(self, etcd: PrivateEtcd, workers: Sequence[Any]) -> None:
        self.url = etcd.client_url
        self.etcd = psutil.Process(etcd.pid)
        self.workers = [psutil.Process(p.pid) for p in workers]
        self.metrics = etcd_metrics(self.url)
        self.cpu, self.workers_cpu = self._cpu([self.etcd]), self._cpu(self.workers)
        self.t0 = time.time()

    @staticmethod
    def _cpu(procs: Sequence[psutil.Process]) -> float:
        return sum(c.user + c.system for c in (p.cpu_times() for p in procs))

    def figures(self) -> Dict[str, Any]:
        t1 = time.time()
        wall = t1 - self.t0
        metrics = etcd_metrics(self.url)
        delta = {k: metrics.get(k, 0.0) - self.metrics.get(k, 0.0) for k in metrics}
        return {"window": [self.t0, t1], "seconds": wall,
                "etcd_cpu": (self._cpu([self.etcd]) - self.cpu) / wall,
                "workers_cpu": (self._cpu(self.workers) - self.workers_cpu) / wall,
                "etcd_handled_per_s": sum(v for k, v in delta.items() if k.startswith("handled ")) / wall,
                "etcd_sent_bytes_per_s": delta.get("etcd_network_client_grpc_sent_bytes_total", 0.0) / wall,
                "etcd_received_bytes_per_s": delta.get("etcd_network_client_grpc_received_bytes_total", 0.0) / wall,
                "etcd_handled": {k[len("handled "):]: round(v / wall, 1) for k, v in delta.items()
                                 if k.startswith("handled ") and v}}


def _rollout(n: int, args: argparse.Namespace, steps: Sequence[int], observer: FleetStore, etcd: PrivateEtcd,
             workers: Sequence[Any], breach: Any, deadline: float, state_dir: Path,
             watches: List[Watch]) -> Dict[str, Any]:
    revision = observer.revision() + 1
    watches += [observer.watch(f"rollouts/{ROLLOUT}/plan", revision),
                observer.watch(f"rollouts/{ROLLOUT}/reports/", revision)]
    settings = rollout_settings(steps, args.step_interval, args.publish_interval)
    cli = FleetNode(observer, "bench-cli", {ROLLOUT: HostAgent("bench-cli", settings, NullApplier(), None,  # type: ignore[arg-type]
                                                                 str(state_dir / "cli.json"), judge)}, judge=judge)
    load = Load(etcd, workers)
    cli.command("start", ROLLOUT, now=time.time())
    seen = Observed()
    breach_at = 0.0
    breach_index = steps.index(BREACH_PERCENT)
    ended = "--max-seconds reached"
    while time.monotonic() < deadline:
        for watch in watches:
            try:
                events = watch.poll(0.01)
            except FleetError:
                continue
            now = time.time()
            for event in events:
                if event.kind == "put":
                    seen.take(event.key, event.value, now)
        plan = seen.last_plan
        if plan is None:
            continue
        if not breach_at and plan.step_index == breach_index and plan.barrier_at is not None:
            breach_at = time.time()
            breach.value = breach_at
        if plan.state == State.PAUSED:
            ended = f"paused: {plan.reason}"
            break
        if plan.state == State.PROMOTED:
            ended = "promoted before the breach"
            break
        if plan.state == State.ROLLED_BACK and len(seen.restored.get(plan.seq, {})) >= n:
            ended = "every host restored" + ("" if breach_at else " (rolled back before the breach)")
            break
    out: Dict[str, Any] = {"ended": ended}
    out.update(load.figures())
    # Barrier latency: the steps every host applied, before the breach.
    barrier, barrier_written = [], []
    for seq, plan_at in seen.plan_seen.items():
        plan = seen.plans[seq]
        applied = seen.applied.get(seq, {})
        if plan.state == State.PROGRESSING and len(applied) >= n:
            barrier.append(max(applied.values()) - plan_at)
            if seq in seen.barrier_seen:
                barrier_written.append(seen.barrier_seen[seq] - plan_at)
    out["barrier"] = quantiles(barrier)
    out["barrier_steps"] = len(barrier)
    out["barrier_written"] = quantiles(barrier_written)
    rollback = next((s for s, p in seen.plans.items() if p.state == State.ROLLED_BACK), None)
    if rollback is not None:
        out["rollback_reason"] = seen.plans[rollback].reason
    if breach_at and rollback is not None:
        out["breach_decided"] = seen.plan_seen[rollback] - breach_at
        restored = seen.restored.get(rollback, {})
        out["breach_restored_reported"] = max(restored.values()) - breach_at if len(restored) >= n else None
    out["breach_at"] = breach_at
    return out


def _worker_figures(results: Sequence[Dict[str, Any]], window: Optional[Sequence[float]], n: int,
                    tick: float) -> Dict[str, Any]:
    out: Dict[str, Any] = {"worker_errors": [r["error"] for r in results if r["error"]]}
    restored_at = {h: t for r in results for h, t in r["restored_at"].items()}
    out["told_restore_at"] = max(restored_at.values()) if len(restored_at) >= n else None
    if not window:
        return out
    t0, t1 = window
    wall = t1 - t0
    calls: Counter = Counter()
    for r in results:
        for key, count in r["calls"].items():
            second, api = key.split(" ", 1)
            if t0 <= int(second) + 0.5 <= t1:
                calls[api] += count
    span = max(1.0, round(t1) - round(t0))
    out["calls_per_s"] = {api: round(c / span, 1) for api, c in sorted(calls.items())}
    out["requests_per_s"] = sum(c for api, c in calls.items() if api.startswith("/")) / span
    ticks = sum(1 for r in results for t in r["ticks"] if t0 <= t <= t1)
    out["ticks_per_host_s"] = ticks / (n * wall)
    out["target_ticks_per_host_s"] = 1 / tick
    out["tick_gap"] = quantiles([g for r in results for g in r["gaps"]])
    out["coordinator_tick"] = quantiles([c for r in results for c in r["coordinator_ticks"]])
    out["cut_off_ticks"] = sum(r["cut_off_ticks"] for r in results)
    out["leases_lost"] = calls.get("lease lost", 0)
    return out


# -- the report ---------------------------------------------------------------------------------------

def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 1000:,.0f} ms"


def _q(value: Optional[Sequence[float]]) -> str:
    return "-" if not value else " / ".join(f"{v * 1000:,.0f}" for v in value) + " ms"


def record_sizes() -> Dict[str, int]:
    """Bytes of one host's figures (after 1 s at 10 % and 100 req/s), report and member record, as stored."""
    applier = NullApplier()
    applier.percent = Fraction(10)

    class Never:
        value = 0.0

    traffic = SyntheticTraffic(applier, 100.0, latency_table(), Never())
    traffic.since = 0.0
    canary, stable = traffic.evidence(1.0)
    settings = rollout_settings(STEPS, 1.0, 1.0)
    return {"figures": len(HostFigures("h000", "0" * 32, 3, 0.0, 1.0, canary, stable).to_json()),
            "report": len(HostReport("h000", "0" * 32, 3, APPLIED, "10", 1.0).to_json()),
            "member": len(member_record("h000", {ROLLOUT: settings}))}


def table(sizes: Sequence[Dict[str, Any]], args: argparse.Namespace) -> str:
    def after(value: Any, key: str) -> Optional[float]:
        return None if value is None or not value.get("breach_at") or value.get(key) is None else \
            value[key] - value["breach_at"]

    rows: List[Tuple[str, List[str]]] = [
        ("ended", [s["ended"] for s in sizes]),
        ("rollout seconds (start -> end)", [f"{s['seconds']:.1f}" if "barrier_steps" in s else "-" for s in sizes]),
        ("barrier: step written -> every host applied, p50 / p90 / max",
         [_q(s.get("barrier")) + f" ({s.get('barrier_steps', 0)} steps)" for s in sizes]),
        ("barrier: step written -> coordinator wrote barrier, p50 / p90 / max",
         [_q(s.get("barrier_written")) for s in sizes]),
        ("breach -> rollback decided (plan seen)", [_ms(s.get("breach_decided")) for s in sizes]),
        ("breach -> every host told to restore", [_ms(after(s, "told_restore_at")) for s in sizes]),
        ("breach -> every host reported restored", [_ms(s.get("breach_restored_reported")) for s in sizes]),
        ("etcd requests/s (clients' count)", [f"{s['requests_per_s']:,.0f}" if "requests_per_s" in s else "-"
                                              for s in sizes]),
        ("etcd gRPC handled/s (etcd /metrics)", [f"{s['etcd_handled_per_s']:,.0f}" if "etcd_handled_per_s" in s
                                                 else "-" for s in sizes]),
        ("etcd sent MB/s", [f"{s['etcd_sent_bytes_per_s'] / 1e6:,.2f}" if "etcd_sent_bytes_per_s" in s else "-"
                            for s in sizes]),
        ("etcd sent bytes per host tick", [f"{s['etcd_sent_bytes_per_s'] / (s['ticks_per_host_s'] * s['hosts']):,.0f}"
                                           if s.get("ticks_per_host_s") else "-" for s in sizes]),
        ("etcd CPU (% of one core)", [f"{s['etcd_cpu'] * 100:.0f} %" if "etcd_cpu" in s else "-" for s in sizes]),
        ("workers' CPU (% of one core)", [f"{s['workers_cpu'] * 100:.0f} %" if "workers_cpu" in s else "-"
                                          for s in sizes]),
        (f"ticks per host per s (target {1 / args.tick:g})",
         [f"{s['ticks_per_host_s']:.2f}" if "ticks_per_host_s" in s else "-" for s in sizes]),
        ("tick gap of a host, p50 / p90 / max", [_q(s.get("tick_gap")) for s in sizes]),
        ("coordinator's tick, p50 / p90 / max", [_q(s.get("coordinator_tick")) for s in sizes]),
        ("leases lost / ticks cut off from etcd", [f"{s.get('leases_lost', '-')} / {s.get('cut_off_ticks', '-')}"
                                                   for s in sizes]),
    ]
    head = "| | " + " | ".join(f"{s['hosts']} hosts" for s in sizes) + " |"
    lines = [head, "|---" * (len(sizes) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]
    return "\n".join(lines)


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{os.cpu_count()} cores ({model}), load average {load}, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default=None, help="fleet sizes, comma-separated (default 3,30,300; --quick: 3)")
    parser.add_argument("--publish-interval", type=float, default=1.0, help="seconds between a host's figures")
    parser.add_argument("--tick", type=float, default=0.25, help="seconds between two ticks of a host")
    parser.add_argument("--procs", type=int, default=2, help="worker processes ticking the hosts")
    parser.add_argument("--threads", type=int, default=8, help="ticking threads in each worker process")
    parser.add_argument("--ttl", type=int, default=TTL, help="the hosts' lease TTL (the daemon's default: 5)")
    parser.add_argument("--rate", type=float, default=100.0, help="synthetic requests/s through each host")
    parser.add_argument("--step-interval", type=float, default=None, help="bake time of a step (1 s; --quick 0.5)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="the whole run stops after this")
    parser.add_argument("--quick", action="store_true", help="3 steps, short bake, 3 hosts by default")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    sizes_text = args.hosts or ("3" if args.quick else "3,30,300")
    try:
        sizes = [int(v) for v in sizes_text.split(",")]
    except ValueError:
        parser.error(f"--hosts: expected numbers like 3,30,300, not {sizes_text!r}")
    if any(n < 1 for n in sizes) or args.publish_interval <= 0 or args.tick <= 0 or min(args.procs, args.threads) < 1:
        parser.error("--hosts, --publish-interval, --tick, --procs and --threads must be positive")
    if args.step_interval is None:
        args.step_interval = 0.5 if args.quick else 1.0
    deadline_all = time.monotonic() + args.max_seconds
    print(f"bench_fleet: {machine()}", flush=True)
    sizes_of = record_sizes()
    print(f"records: figures {sizes_of['figures']} B, report {sizes_of['report']} B, member "
          f"{sizes_of['member']} B; tick {args.tick:g} s, publish every {args.publish_interval:g} s, "
          f"{args.rate:g} req/s per host, {args.procs} worker process(es) of {args.threads} ticking threads",
          flush=True)
    done: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for index, n in enumerate(sizes):
            left = deadline_all - time.monotonic()
            if left <= 5:
                done.append({"hosts": n, "ended": "skipped: --max-seconds spent"})
                continue
            # Each size gets an equal share of what is left, the larger sizes the rest.
            share = left / (len(sizes) - index)
            started = time.monotonic()
            figures = run_size(n, args, Path(tmp), time.monotonic() + share)
            print(f"  {n} hosts: {figures['ended']} in {time.monotonic() - started:.1f} s", flush=True)
            if figures.get("rollback_reason"):
                print(f"  rolled back: {figures['rollback_reason']}", flush=True)
            for error in figures.get("worker_errors", []):
                print(f"  worker error: {error}", flush=True)
            done.append(figures)
    print(table(done, args))
    for figures in done:
        if figures.get("calls_per_s"):
            print(f"{figures['hosts']} hosts, client calls/s by API: {figures['calls_per_s']}; etcd handled/s: "
                  f"{figures.get('etcd_handled', {})}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "records": sizes_of, "sizes": done}, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
