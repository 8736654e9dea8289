"""Real daemons in a fleet: one ``nginx-canary daemon`` process per nginx host, a real etcd, the CLI on any host.

What the issue's operators do: ``nginx-canary start app`` on one host moves
every host, ``status`` on another shows the fleet, and a coordinator killed
with SIGKILL is replaced by another daemon which finishes the rollout.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.etcd_harness import PrivateEtcd
from nginx_canary.demo.load import run_load
from nginx_canary.demo.nginx_harness import free_port
from nginx_canary.demo.site import DemoSite
from tests.fleet.fleet_site import FAST

_fleets = itertools.count()
WAIT = 45.0


def _env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NGINX_CANARY_")}
    env["PATH"] = "/usr/sbin:" + env.get("PATH", "/usr/bin:/bin")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DaemonFleet:
    """``count`` sites in front of shared apps, each with its daemon process, all in one etcd fleet."""

    def __init__(self, root: Path, nginx_bin: str, etcd_url: str, count: int, *, v2: Dict[str, Any],
                 step_interval: str, on_host_lost: str = "pause") -> None:
        ports = {"v1": free_port(), "v2": free_port()}
        self.apps = [DemoApp("v1", port=ports["v1"]), DemoApp("v2", port=ports["v2"], **v2)]
        for app in self.apps:
            app.start()
        fleet = f"d{next(_fleets)}"
        self.sites: List[DemoSite] = []
        self.daemons: Dict[str, subprocess.Popen] = {}
        self.logs: Dict[str, Path] = {}
        self.originals: Dict[str, Dict[str, bytes]] = {}
        self.stop_load = threading.Event()
        self.loads: List[threading.Thread] = []
        for i in range(count):
            host = f"lb-{i + 1}"
            site = DemoSite(root / host, nginx_bin, ports={"front": free_port(), **ports})
            site.write(steps=(10, 50, 100), step_interval=step_interval, analysis=dict(FAST),
                       fleet={"etcd": [etcd_url], "name": fleet, "host": host, "on_host_lost": on_host_lost,
                              "lease_ttl": "2s"})
            site.start_nginx()
            self.sites.append(site)
            self.originals[host] = site.config_files()
            self.start_daemon(host)

    def site(self, host: str) -> DemoSite:
        return self.sites[int(host.split("-")[1]) - 1]

    def start_daemon(self, host: str) -> None:
        site = self.site(host)
        log = site.root / f"daemon-{len(self.logs)}.log"
        self.logs[host] = log
        with open(log, "wb") as out:
            self.daemons[host] = subprocess.Popen(site.daemon_command(sys.executable), stdout=out,
                                                  stderr=subprocess.STDOUT, env=_env())
        self.wait(lambda: self.cli(host, "status", "app", "--json").returncode == 0, f"{host}'s daemon to answer")

    def cli(self, host: str, *args: str) -> subprocess.CompletedProcess:
        site = self.site(host)
        return subprocess.run([sys.executable, "-m", "nginx_canary", "--config", str(site.daemon_config), *args],
                              capture_output=True, text=True, timeout=60, env=_env())

    def status(self, host: str) -> Dict[str, Any]:
        done = self.cli(host, "status", "app", "--json")
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        return data["rollouts"][0] if "rollouts" in data else data

    def load(self, rate: float, duration: float) -> None:
        for site in self.sites:
            thread = threading.Thread(target=run_load, args=(site.url,), daemon=True,
                                      kwargs={"rate": rate, "duration": duration, "max_requests": int(rate * duration),
                                              "concurrency": 2, "stop_event": self.stop_load})
            thread.start()
            self.loads.append(thread)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n" + self.tails())

    def tails(self) -> str:
        return "\n".join(f"--- {h}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                         for h, p in self.logs.items() if p.exists())

    def close(self) -> None:
        self.stop_load.set()
        for proc in self.daemons.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.daemons.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for thread in self.loads:
            thread.join(20)
        for site in self.sites:
            site.stop_nginx(sig=signal.SIGTERM)
            site.cleanup()
        for app in self.apps:
            app.stop()


@pytest.fixture
def make_daemons(nginx_bin: str, shared_etcd: PrivateEtcd, tmp_path: Path) -> Iterator[Callable[..., DaemonFleet]]:
    made: List[DaemonFleet] = []

    def make(count: int = 2, **kwargs: Any) -> DaemonFleet:
        fleet = DaemonFleet(tmp_path, nginx_bin, shared_etcd.client_url, count, **kwargs)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


def _state(status: Dict[str, Any]) -> str:
    return str(status.get("state"))


def test_start_on_one_host_promotes_a_healthy_canary_on_every_host(make_daemons):
    fleet = make_daemons(2, v2={}, step_interval="1s")
    fleet.load(rate=60, duration=60)
    started = fleet.cli("lb-2", "start", "app")
    assert started.returncode == 0, started.stderr
    fleet.wait(lambda: _state(fleet.status("lb-1")) == "promoted", "the fleet's promotion")
    fleet.wait(lambda: all(h.get("status") == "promoted" for h in fleet.status("lb-1")["fleet"]["hosts"].values()),
               "every host to settle")
    status = fleet.status("lb-1")
    assert sorted(status["fleet"]["hosts"]) == ["lb-1", "lb-2"]
    assert [(h["host"], h["state"], h["canary_percent"]) for h in status["hosts"]] == \
        [("lb-1", "promoted", "100"), ("lb-2", "promoted", "100")]
    shown = fleet.cli("lb-1", "status", "app")
    assert "fleet: this host lb-1, coordinator" in shown.stdout and "lb-2: promoted 100 %" in shown.stdout, shown.stdout
    for site in fleet.sites:
        assert f"server {site.v1} down" in site.upstream_conf.read_text().replace(" weight=1", "")


def test_a_broken_canary_is_rolled_back_on_every_host_and_the_files_are_byte_identical(make_daemons):
    fleet = make_daemons(2, v2={"error_rate": 1.0}, step_interval="5s")
    fleet.load(rate=80, duration=60)
    assert fleet.cli("lb-1", "start", "app").returncode == 0
    fleet.wait(lambda: _state(fleet.status("lb-2")) == "rolled_back", "the fleet's rollback")
    fleet.wait(lambda: all(h.get("status") == "restored" for h in fleet.status("lb-2")["fleet"]["hosts"].values()),
               "every host to restore")
    for site in fleet.sites:
        host = site.root.name
        assert site.config_files() == fleet.originals[host], host
    # The fleet's rollback is in one daemon's history (the coordinator's: webhooks fire once), each host's
    # own restore in its own.
    events = {h: [json.loads(line)["event"] for line in fleet.cli(h, "history", "app", "--json").stdout.splitlines()]
              for h in ("lb-1", "lb-2")}
    assert sum(e.count("rollback") for e in events.values()) == 1, events
    assert all("host_restored" in e for e in events.values()), events


def test_the_coordinator_killed_with_sigkill_another_daemon_finishes_the_rollout(make_daemons):
    fleet = make_daemons(3, v2={}, step_interval="3s", on_host_lost="continue")
    fleet.load(rate=50, duration=90)
    assert fleet.cli("lb-3", "start", "app").returncode == 0
    fleet.wait(lambda: fleet.status("lb-3").get("step") == 1, "the second step")
    coordinator = fleet.status("lb-3")["fleet"]["coordinator"]
    assert coordinator in fleet.daemons
    fleet.daemons[coordinator].send_signal(signal.SIGKILL)
    fleet.daemons[coordinator].wait(10)
    survivor = next(h for h in fleet.daemons if h != coordinator)
    fleet.wait(lambda: fleet.status(survivor)["fleet"]["coordinator"] not in (None, coordinator),
               "another coordinator", timeout=20)
    fleet.wait(lambda: _state(fleet.status(survivor)) == "promoted", "the promotion without the killed host")
    hosts = fleet.status(survivor)["fleet"]["hosts"]
    assert coordinator not in hosts  # its reports went with its lease
    assert all(h["status"] == "promoted" for h in hosts.values()), hosts
