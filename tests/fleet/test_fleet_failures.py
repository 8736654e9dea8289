"""The fleet when etcd fails: frozen (SIGSTOP), cut off while the canary breaks, its data lost.

Real etcd of the test's own, real nginx hosts with real traffic, the daemon's parts ticked by the test's driver.
The rules (docs/RELIABILITY.md, "Fleet"): no host changes step while it cannot reach etcd; every host keeps
serving; a host whose own canary fails while cut off rolls itself back (the safe direction); the fleet goes on
when etcd answers again; with its data lost, nothing is stepped and abort restores every host of the lost run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from nginx_canary.demo.etcd_harness import PrivateEtcd
from nginx_canary.fleet.plan import Plan, plan_key
from tests.fleet.fleet_site import Fleet


@pytest.fixture
def make_fleet(nginx_bin: str, etcd: PrivateEtcd, tmp_path: Path) -> Iterator:
    made: List[Fleet] = []

    def make(**kwargs: object) -> Fleet:
        fleet = Fleet(tmp_path, nginx_bin, etcd.client_url, "f", **kwargs)  # type: ignore[arg-type]
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


def _plan(fleet: Fleet) -> Plan:
    entry = fleet.hosts[0].node.store.get(plan_key("app"))
    assert entry is not None
    return Plan.from_json(entry.value, "plan")


def _files(fleet: Fleet) -> Dict[str, bytes]:
    return {h.name: h.site.upstream_conf.read_bytes() for h in fleet.hosts}


def _joined_and_baking(fleet: Fleet) -> None:
    fleet.driver.start()
    fleet.driver.wait(lambda: all(h.node.lease is not None for h in fleet.hosts), "every host to join")
    fleet.driver.wait(lambda: any(h.node.coordinator for h in fleet.hosts), "a coordinator")
    fleet.hosts[0].node.command("start", "app", now=time.time())
    fleet.driver.wait(lambda: _plan(fleet).barrier_at is not None, "the first step on every host")


def test_etcd_frozen_for_10_s_mid_step_no_host_moves_and_the_rollout_completes(make_fleet, etcd):
    fleet = make_fleet(hosts=2, steps=(10, 50, 100), step_interval="4s", ttl=2)
    fleet.load(rate_per_host=50, duration=90)
    _joined_and_baking(fleet)
    before = _files(fleet)
    etcd.pause()
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            assert _files(fleet) == before, "a host changed its split while etcd was frozen"
            time.sleep(0.02)
        assert all(h.node.cut_off_since is not None for h in fleet.hosts)
    finally:
        etcd.resume()
    fleet.driver.wait(lambda: _plan(fleet).state.value == "promoted", "the promotion after etcd thawed", timeout=60)
    fleet.driver.wait(lambda: all(h.agent.local is not None and h.agent.local.status == "promoted"
                                  for h in fleet.hosts), "every host to settle")
    results = fleet.load_results()
    assert sum(r.responses for r in results) > 500
    assert sum(r.status_5xx + r.socket_errors + r.status_other for r in results) == 0, results


def test_cut_off_from_etcd_a_failing_canary_is_rolled_back_by_each_host_then_by_the_fleet(make_fleet, etcd):
    fleet = make_fleet(hosts=2, steps=(25, 50, 100), step_interval="30s", ttl=2)
    fleet.load(rate_per_host=80, duration=60)
    _joined_and_baking(fleet)
    etcd.pause()
    try:
        fleet.v2.update(error_rate=1.0)
        fleet.driver.wait(lambda: all(h.agent.local is not None and h.agent.local.status == "restored"
                                      for h in fleet.hosts), "each host to roll itself back", timeout=20)
        for host in fleet.hosts:
            assert host.site.config_files() == host.originals, host.name
            assert "rolled back alone while cut off from etcd" in host.agent.local.detail
    finally:
        etcd.resume()
    fleet.driver.wait(lambda: _plan(fleet).state.value == "rolled_back", "the fleet's rollback once etcd answers")
    assert "rolled itself back" in _plan(fleet).reason


def test_etcd_data_lost_nothing_is_stepped_and_abort_restores_every_host(make_fleet, etcd):
    fleet = make_fleet(hosts=2, steps=(10, 50, 100), step_interval="30s", ttl=2)
    fleet.load(rate_per_host=40, duration=60)
    _joined_and_baking(fleet)
    during = _files(fleet)
    etcd.kill()
    shutil.rmtree(etcd.data_dir)
    etcd.start()
    fleet.driver.wait(lambda: all("etcd holds no plan for run" in h.node.problems.get("app", "") for h in fleet.hosts),
                      "every host to say the plan is gone", timeout=20)
    time.sleep(1.0)
    assert _files(fleet) == during  # nothing stepped, nothing restored on its own
    with pytest.raises(Exception, match="whose plan etcd no longer has"):
        fleet.hosts[1].node.command("resume", "app", now=time.time())
    fleet.hosts[1].node.command("abort", "app", now=time.time())
    fleet.driver.wait(lambda: all(h.agent.local is not None and h.agent.local.status == "restored"
                                  for h in fleet.hosts), "every host to restore")
    for host in fleet.hosts:
        assert host.site.config_files() == host.originals, host.name
