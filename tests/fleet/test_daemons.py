"""Real daemons in a fleet: one ``nginx-canary daemon`` process per nginx host, a real etcd, the CLI on any host.

What the issue's operators do: ``nginx-canary start app`` on one host moves
every host, ``status`` on another shows the fleet, and a coordinator killed
with SIGKILL is replaced by another daemon which finishes the rollout.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from nginx_canary.demo.etcd_harness import PrivateEtcd
from nginx_canary.demo.fleet_hosts import FleetHosts, daemon_env
from tests.fleet.fleet_site import FAST

_fleets = itertools.count()
WAIT = 45.0


class DaemonFleet(FleetHosts):
    """The fleet tour's hosts (``count`` sites, shared apps, a daemon each, one etcd fleet), driven by the CLI."""

    def __init__(self, root: Path, nginx_bin: str, etcd_url: str, count: int, *, v2: Dict[str, Any],
                 step_interval: str, on_host_lost: str = "pause") -> None:
        super().__init__(root, nginx_bin, [f"lb-{i + 1}" for i in range(count)],
                         {"etcd": [etcd_url], "name": f"d{next(_fleets)}", "on_host_lost": on_host_lost,
                          "lease_ttl": "2s"},
                         site={"steps": (10, 50, 100), "step_interval": step_interval, "analysis": dict(FAST)},
                         apps={"v2": v2})
        self.originals: Dict[str, Dict[str, bytes]] = {}

    def start(self) -> None:
        self.start_sites()
        self.originals = {host: site.config_files() for host, site in self.sites.items()}
        self.start_daemons()

    def cli(self, host: str, *args: str) -> subprocess.CompletedProcess:
        site = self.sites[host]
        return subprocess.run([sys.executable, "-m", "nginx_canary", "--config", str(site.daemon_config), *args],
                              capture_output=True, text=True, timeout=60, env=daemon_env(self.nginx_bin))

    def status(self, host: str) -> Dict[str, Any]:
        done = self.cli(host, "status", "app", "--json")
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        return data["rollouts"][0] if "rollouts" in data else data

    def load(self, rate: float, duration: float) -> None:
        self.start_load(rate, duration, concurrency=2)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n" + self.tails())

    def tails(self) -> str:
        return "\n".join(f"--- {host}\n" + self.log_tail(host, 15) for host in self.hosts)


@pytest.fixture
def make_daemons(nginx_bin: str, shared_etcd: PrivateEtcd, tmp_path: Path) -> Iterator[Callable[..., DaemonFleet]]:
    made: List[DaemonFleet] = []

    def make(count: int = 2, **kwargs: Any) -> DaemonFleet:
        fleet = DaemonFleet(tmp_path, nginx_bin, shared_etcd.client_url, count, **kwargs)
        made.append(fleet)
        fleet.start()
        return fleet

    yield make
    for fleet in made:
        fleet.stop()


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
    for site in fleet.sites.values():
        assert f"server {site.v1} down" in site.upstream_conf.read_text().replace(" weight=1", "")


def test_a_broken_canary_is_rolled_back_on_every_host_and_the_files_are_byte_identical(make_daemons):
    fleet = make_daemons(2, v2={"error_rate": 1.0}, step_interval="5s")
    fleet.load(rate=80, duration=60)
    assert fleet.cli("lb-1", "start", "app").returncode == 0
    fleet.wait(lambda: _state(fleet.status("lb-2")) == "rolled_back", "the fleet's rollback")
    fleet.wait(lambda: all(h.get("status") == "restored" for h in fleet.status("lb-2")["fleet"]["hosts"].values()),
               "every host to restore")
    for host, site in fleet.sites.items():
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
