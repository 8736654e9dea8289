"""bench/bench_fleet.py: its synthetic hosts, and a --quick run of 3 real FleetNodes on a real etcd."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_fleet.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_fleet", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fleet"] = module   # dataclasses look it up by name
    spec.loader.exec_module(module)
    return module


class Breach:
    def __init__(self, at: float = 0.0) -> None:
        self.value = at


def test_synthetic_traffic_gives_the_canary_its_percent_and_half_a_percent_of_5xx(bench: Any) -> None:
    applier = bench.NullApplier()
    applier.apply(Fraction(10))
    traffic = bench.SyntheticTraffic(applier, 100.0, bench.latency_table(), Breach())
    traffic.begin_step(1000.0)
    canary, stable = traffic.evidence(1020.0)
    assert (canary.requests, stable.requests) == (200, 1800)
    assert (canary.errors_5xx, stable.errors_5xx) == (1, 9)
    assert canary.latency.count == 200
    assert 0.015 <= canary.summary()["p50"] <= 0.025


def test_synthetic_canary_fails_every_request_after_the_breach(bench: Any) -> None:
    applier = bench.NullApplier()
    applier.apply(Fraction(50))
    traffic = bench.SyntheticTraffic(applier, 100.0, bench.latency_table(), Breach(1010.0))
    traffic.begin_step(1000.0)
    canary, stable = traffic.evidence(1020.0)
    assert canary.requests == 1000 and canary.errors_5xx == 500 + round(500 * bench.ERROR_SHARE)
    assert stable.errors_5xx == 5
    applier.restore("snapshot")
    assert applier.percent == 0 and applier.restored_at is not None


def test_quick_run_of_three_hosts_on_a_real_etcd(bench: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if shutil.which("etcd") is None:
        if os.environ.get("NGINX_CANARY_REQUIRE_NGINX") == "1":
            pytest.fail("etcd not installed (Debian: apt-get install etcd-server; or make test-tools)")
        pytest.skip("etcd not installed")
    out = tmp_path / "fleet.json"
    assert bench.main(["--quick", "--hosts", "3", "--max-seconds", "40", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| | 3 hosts |" in printed and "breach -> every host reported restored" in printed
    size = json.loads(out.read_text())["sizes"][0]
    assert size["ended"] == "every host restored", size
    assert not size["worker_errors"]
    # Every step before the breach waited for all 3 hosts: 10 % and 50 % (the breach comes once 50 % is applied).
    assert size["barrier_steps"] == 2
    p50, p90, top = size["barrier"]
    assert 0 < p50 <= p90 <= top < 10
    assert "5xx" in size["rollback_reason"]
    assert 0 < size["breach_decided"] <= size["breach_restored_reported"] < 10
    assert size["told_restore_at"] - size["breach_at"] <= size["breach_restored_reported"]
    assert size["requests_per_s"] > 0 and size["etcd_handled_per_s"] > 0 and size["etcd_cpu"] > 0
    assert size["calls_per_s"]["/kv/range"] > 0
