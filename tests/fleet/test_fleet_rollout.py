"""One rollout across several real nginx hosts, coordinated through a real etcd, with real traffic.

Each host is driven by its own :class:`FleetNode` (the parts a daemon runs),
all ticked from the test's driver thread; only the daemon's process and
socket are left out (tests/daemon covers those).
"""

from __future__ import annotations

import itertools
import time
import re
from pathlib import Path
from typing import Iterator, List

import pytest

from nginx_canary.demo.etcd_harness import PrivateEtcd
from nginx_canary.fleet.plan import Plan, plan_key
from tests.fleet.fleet_site import Fleet

_names = itertools.count()


@pytest.fixture
def make_fleet(nginx_bin: str, shared_etcd: PrivateEtcd, tmp_path: Path) -> Iterator:
    made: List[Fleet] = []

    def make(**kwargs: object) -> Fleet:
        fleet = Fleet(tmp_path, nginx_bin, shared_etcd.client_url, f"t{next(_names)}", **kwargs)  # type: ignore[arg-type]
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


def _weights(text: str) -> List[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("server ")]


def _plan(fleet: Fleet) -> Plan:
    entry = fleet.hosts[0].node.store.get(plan_key("app"))
    assert entry is not None
    return Plan.from_json(entry.value, "plan")


def test_a_healthy_canary_steps_in_lock_step_on_every_host_and_is_promoted(make_fleet):
    fleet = make_fleet(hosts=2, steps=(10, 50, 100), step_interval="1s")
    fleet.driver.start()
    fleet.driver.wait(lambda: all(h.node.lease is not None for h in fleet.hosts), "both hosts to join")
    fleet.load(rate_per_host=60, duration=60)
    plan = fleet.hosts[1].node.command("start", "app", now=time.time())
    assert plan.hosts == ("lb-1", "lb-2")
    fleet.driver.wait(lambda: _plan(fleet).state.value == "promoted", "the fleet's promotion", timeout=60)
    fleet.driver.wait(lambda: all(h.agent.local is not None and h.agent.local.status == "promoted"
                                  for h in fleet.hosts), "every host to settle")
    events = [e for h in fleet.hosts for e in h.node.events]
    # The barrier: every step's bake began only once both hosts had applied it, one event per step.
    barriers = [e for e in events if "every host (lb-1, lb-2) applied" in e]
    assert [re.search(r"step \d/3", e).group(0) for e in barriers] == ["step 1/3", "step 2/3", "step 3/3"]
    for host in fleet.hosts:
        text = (host.site.upstream_conf).read_text()
        assert host.agent.local is not None and host.agent.local.status == "promoted"
        assert host.agent.local.percent == "100"
        servers = _weights(text)
        assert any(fleet.hosts[0].site.v2 in s and "down" not in s for s in servers), text
        assert any(fleet.hosts[0].site.v1 in s and "down" in s for s in servers), text
    # Exactly one host coordinated, and the fleet's events were told once (webhooks fire from there only),
    # each host's own reports by that host.
    assert sum(h.node.coordinator for h in fleet.hosts) == 1
    fleet_events = [event for _, event, detail in fleet.told if detail.get("fleet")]
    assert fleet_events == ["start", "step", "step", "promoted"], fleet.told
    for host in fleet.hosts:
        own = [event for who, event, _ in fleet.told if who == host.name and event.startswith("host_")]
        assert own == ["host_applied"] * 3 + ["host_promoted"], (host.name, own)


def test_a_canary_broken_from_its_first_request_is_rolled_back_on_every_host_byte_for_byte(make_fleet):
    fleet = make_fleet(hosts=2, steps=(10, 50, 100), step_interval="5s", v2={"error_rate": 1.0})
    fleet.driver.start()
    fleet.driver.wait(lambda: all(h.node.lease is not None for h in fleet.hosts), "both hosts to join")
    fleet.load(rate_per_host=80, duration=60)
    fleet.hosts[0].node.command("start", "app", now=time.time())
    fleet.driver.wait(lambda: _plan(fleet).state.value == "rolled_back", "the fleet's rollback", timeout=30)
    fleet.driver.wait(lambda: all(h.agent.local is not None and h.agent.local.status == "restored"
                                  for h in fleet.hosts), "every host to restore")
    plan = _plan(fleet)
    assert "5xx" in plan.reason, plan.reason
    for host in fleet.hosts:
        assert host.site.config_files() == host.originals, host.name
    status = fleet.hosts[1].node.status("app")
    assert {h: s["status"] for h, s in status["hosts"].items()} == {"lb-1": "restored", "lb-2": "restored"}
    assert [event for _, event, detail in fleet.told if detail.get("fleet")] == ["start", "rollback"]


def test_the_coordinator_killed_mid_rollout_another_host_takes_over_and_finishes(make_fleet):
    fleet = make_fleet(hosts=3, steps=(10, 50, 100), step_interval="2s", on_host_lost="continue", ttl=2)
    fleet.driver.start()
    fleet.driver.wait(lambda: all(h.node.lease is not None for h in fleet.hosts), "every host to join")
    fleet.driver.wait(lambda: any(h.node.coordinator for h in fleet.hosts), "a coordinator")
    fleet.load(rate_per_host=50, duration=60)
    fleet.hosts[2].node.command("start", "app", now=time.time())
    fleet.driver.wait(lambda: _plan(fleet).step_index >= 1, "step 2")
    with fleet.driver.lock:
        victim = next(h for h in fleet.hosts if h.node.coordinator)
        victim.ticking = False  # its daemon is gone: no refresh, its lease expires
    survivors = [h for h in fleet.hosts if h is not victim]
    fleet.driver.wait(lambda: any(h.node.coordinator for h in survivors), "another coordinator", timeout=15)
    fleet.driver.wait(lambda: _plan(fleet).state.value == "promoted", "the promotion", timeout=60)
    fleet.driver.wait(lambda: all(h.agent.local is not None and h.agent.local.status == "promoted"
                                  for h in survivors), "the survivors to settle")
    plan = _plan(fleet)
    assert victim.name not in plan.hosts
    events = [e for h in survivors for e in h.node.events]
    assert any(f"host {victim.name} lost" in e for e in events), events
    for host in survivors:
        assert host.agent.local is not None and host.agent.local.status == "promoted"


def test_a_host_lost_mid_step_pauses_the_fleet_by_default(make_fleet):
    fleet = make_fleet(hosts=2, steps=(10, 50, 100), step_interval="30s", ttl=2)
    fleet.driver.start()
    fleet.driver.wait(lambda: all(h.node.lease is not None for h in fleet.hosts), "both hosts to join")
    fleet.driver.wait(lambda: any(h.node.coordinator for h in fleet.hosts), "a coordinator")
    coordinator = next(h for h in fleet.hosts if h.node.coordinator)
    other = next(h for h in fleet.hosts if h is not coordinator)
    fleet.load(rate_per_host=40, duration=40)
    coordinator.node.command("start", "app", now=time.time())
    fleet.driver.wait(lambda: _plan(fleet).barrier_at is not None, "the first step on both hosts")
    with fleet.driver.lock:
        other.ticking = False
    fleet.driver.wait(lambda: _plan(fleet).state.value == "paused", "the pause", timeout=15)
    plan = _plan(fleet)
    assert f"host {other.name} lost" in plan.reason and "on_host_lost: pause" in plan.reason
    assert plan.step_index == 0
