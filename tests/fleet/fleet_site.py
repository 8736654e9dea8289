"""A fleet on one machine for tests: N real nginx hosts in front of the same two app servers, one real etcd.

Each host is a :class:`~nginx_canary.demo.site.DemoSite` (its own prefix, port,
access log and state dir) whose upstream names the shared ``v1`` (stable)
and ``v2`` (canary) apps, as the nginx VMs of a real fleet do. Each gets the
daemon's own parts (config engine applier, access-log traffic) and a
:class:`FleetNode`; :class:`FleetDriver` ticks them all from one thread the
way each daemon's loop would, and sends load through every host.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from nginx_canary.config.settings import load_settings
from nginx_canary.daemon.runtime import RunTraffic, open_traffic, operation_settings
from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.load import LoadResult, run_load
from nginx_canary.demo.nginx_harness import free_port
from nginx_canary.demo.site import DemoSite
from nginx_canary.fleet.agent import HostAgent, state_file
from nginx_canary.fleet.node import FleetNode
from nginx_canary.fleet.store import FleetStore
from nginx_canary.nginx import operations
from nginx_canary.rollout.applier import NginxSplitApplier
from nginx_canary.rollout.judge import judge

#: Fast analysis for the fleet tests (the judge's own statistics are tested in tests/rollout).
FAST: Dict[str, object] = {"interval": "250ms", "min_requests": 10, "max_p99_latency_ratio": 100.0,
                           "max_p50_latency_ratio": 100.0, "max_error_rate_increase": 0.1, "promotion_risk": 0.2}


@dataclass
class FleetHost:
    name: str
    site: DemoSite
    node: FleetNode
    agent: HostAgent
    traffic: RunTraffic
    originals: Dict[str, bytes]
    ticking: bool = True


class FleetDriver:
    """Ticks every host's node (and reads its access log) every ``interval`` s in one background thread."""

    def __init__(self, hosts: Sequence[FleetHost], interval: float = 0.25) -> None:
        self.hosts = list(hosts)
        self.interval = interval
        self.stop_event = threading.Event()
        self.errors: List[BaseException] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="fleet-driver", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            with self.lock:
                for host in self.hosts:
                    if not host.ticking:
                        continue
                    now = time.time()
                    try:
                        host.traffic.traffic.poll(now)
                        host.node.tick(now)
                    except BaseException as exc:  # noqa: BLE001 - handed to the test by stop()
                        self.errors.append(exc)
                        return

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the fleet driver did not stop"
        if self.errors:
            raise self.errors[0]

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.errors:
                raise self.errors[0]
            with self.lock:
                if predicate():
                    return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; events: "
                             + " | ".join(e for h in self.hosts for e in h.node.events[-12:]))


class Fleet:
    """``hosts`` nginx hosts, the shared apps, a fleet name on the given etcd."""

    def __init__(self, root: Path, nginx_bin: str, etcd_url: str, fleet: str, hosts: int = 2, *,
                 steps: Sequence[object] = (10, 50, 100), step_interval: str = "1s",
                 analysis: Optional[Dict[str, object]] = None, v1: Optional[Dict[str, object]] = None,
                 v2: Optional[Dict[str, object]] = None, on_host_lost: str = "pause", ttl: int = 3) -> None:
        self.ports = {"v1": free_port(), "v2": free_port()}
        self.v1 = DemoApp("v1", port=self.ports["v1"], **(v1 or {}))  # type: ignore[arg-type]
        self.v2 = DemoApp("v2", port=self.ports["v2"], **(v2 or {}))  # type: ignore[arg-type]
        self.v1.start()
        self.v2.start()
        self.hosts: List[FleetHost] = []
        #: Every fleet event each node told its history: (host, event, detail).
        self.told: List[tuple] = []
        self.loads: List[threading.Thread] = []
        self.results: List[LoadResult] = []
        self.load_stop = threading.Event()
        for i in range(hosts):
            name = f"lb-{i + 1}"
            site = DemoSite(root / name, nginx_bin, ports={"front": free_port(), **self.ports})
            site.write(steps=steps, step_interval=step_interval, analysis={**FAST, **(analysis or {})})
            site.start_nginx()
            settings = load_settings(str(site.daemon_config))
            ops = operation_settings(settings)
            config = operations.read_config(ops)
            rollout = settings.rollouts["app"]
            applier = NginxSplitApplier(ops, rollout.upstream, rollout.canary)
            traffic = RunTraffic(open_traffic(rollout, config, ops))
            site.state_dir.mkdir(parents=True, exist_ok=True)
            agent = HostAgent(name, rollout, applier, traffic, state_file(str(site.state_dir), "app"), judge)
            node = FleetNode(FleetStore([etcd_url], fleet, timeout=1.0), name, {"app": agent}, ttl=ttl,
                             on_host_lost=on_host_lost, judge=judge,
                             on_event=lambda rollout, event, now, plan, detail, host=name:
                             self.told.append((host, event, detail)))
            self.hosts.append(FleetHost(name, site, node, agent, traffic, site.config_files()))
        self.driver = FleetDriver(self.hosts)

    def load(self, rate_per_host: float = 60, duration: float = 60) -> None:
        """Load through every host in background threads; :meth:`load_results` stops it and says what clients saw."""
        for host in self.hosts:
            def send(url: str = host.site.url) -> None:
                self.results.append(run_load(url, rate=rate_per_host, duration=duration,
                                             max_requests=int(rate_per_host * duration), concurrency=2,
                                             stop_event=self.load_stop))
            thread = threading.Thread(target=send, daemon=True)
            thread.start()
            self.loads.append(thread)

    def load_results(self) -> List[LoadResult]:
        self.load_stop.set()
        for thread in self.loads:
            thread.join(30)
        return list(self.results)

    def plan_state(self, host: int = 0) -> Optional[str]:
        plan = self.hosts[host].node.status("app")["plan"]
        return None if plan is None else plan["state"]

    def close(self) -> None:
        self.load_stop.set()
        try:
            if self.driver.thread.is_alive():
                self.driver.stop()
        finally:
            for thread in self.loads:
                thread.join(20)
            for host in self.hosts:
                host.node.close()
                host.traffic.traffic.close()
                host.site.stop_nginx(sig=signal.SIGTERM)
                host.site.cleanup()
            self.v1.stop()
            self.v2.stop()
