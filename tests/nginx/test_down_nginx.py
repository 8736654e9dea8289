"""Maintenance ``down`` and own-line parameters on a real nginx with real traffic (issue #16).

The config is tests/data/real-world/down-maintenance.conf: in ``backend``, v3 is
``down`` for maintenance on a line of its own with a comment, the canary v2 is
staged ``down`` the same way, v1 has ``weight=90``; in ``reports`` the only
stable server is down. set-weight and a rollout's steps must never send v3 a
request nor take its ``down`` away, and the original split must give back the
original bytes.
"""

from __future__ import annotations

import re
from fractions import Fraction
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Dict, List

import pytest

from nginx_canary.demo.nginx_harness import PrivateNginx, free_port
from nginx_canary.nginx.operations import Settings
from nginx_canary.rollout.applier import NginxSplitApplier

REAL_WORLD = Path(__file__).resolve().parents[1] / "data" / "real-world"


class Site(PrivateNginx):
    """nginx running down-maintenance.conf, and nginx-canary's state dir for it."""

    def __init__(self, binary: str, root: Path) -> None:
        prefix = root / "nginx"
        (prefix / "logs").mkdir(parents=True)
        ports = {"front": free_port(), "v1": free_port(), "v2": free_port(), "v3": free_port()}
        text = (REAL_WORLD / "down-maintenance.conf").read_text()
        for name, port in ports.items():
            text = text.replace(f"@{name.upper()}_PORT@", str(port))
        (prefix / "nginx.conf").write_text(text)
        super().__init__(binary, prefix, ports, worker_processes=2)
        self.state_dir = root / "state"

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def canary(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nginx_canary", "--nginx-conf", str(self.conf), "--nginx-prefix", str(self.prefix),
             "--nginx-bin", self.binary, "--state-dir", str(self.state_dir), *args],
            capture_output=True, text=True, timeout=60)

    def set_weight(self, upstream: str, percent: int) -> subprocess.CompletedProcess:
        return self.canary("set-weight", upstream, str(percent), "--canary", self.address("v2"))

    def answers(self, requests: int, path: str = "/") -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for _ in range(requests):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['front']}{path}", timeout=5) as resp:
                body = resp.read().decode()
            counts[body] = counts.get(body, 0) + 1
        return counts

    def logged_upstreams(self) -> List[str]:
        """The ``$upstream_addr`` of every request in the access log."""
        return [line.split(" ", 1)[0] for line in (self.prefix / "logs" / "access.log").read_text().splitlines()]

    def maintenance_lines(self) -> List[str]:
        """v3's directives, from ``server`` to ``;``, in file order."""
        text = self.conf.read_text()
        return re.findall(rf"server\s+{re.escape(self.address('v3'))}[^;]*;[^\n]*", text)


@pytest.fixture
def site(nginx_bin: str, tmp_path: Path):
    inst = Site(nginx_bin, tmp_path)
    inst.start()
    yield inst
    inst.stop()


def check_step(site: Site, percent: int, maintenance: List[str]) -> None:
    """nginx -t passes, v3 keeps its bytes and gets nothing, the canary its share, nothing in column 0."""
    assert site.run("-t").returncode == 0
    assert site.maintenance_lines() == maintenance
    text = site.conf.read_text()
    assert not re.search(r"(?m)^[;d]", text), text
    counts = site.answers(100)
    assert "v3" not in counts, (percent, counts)
    assert abs(counts.get("v2", 0) - percent) <= 6, (percent, counts)


def test_set_weight_never_wakes_a_maintenance_server_and_zero_gives_the_bytes_back(site: Site) -> None:
    original = site.conf.read_bytes()
    maintenance = site.maintenance_lines()
    assert len(maintenance) == 2 and all("down" in line for line in maintenance)
    for percent in (10, 0, 50, 100, 25, 0, 100, 0):
        result = site.set_weight("backend", percent)
        assert result.returncode == 0, result.stderr
        assert "left down (down before nginx-canary changed anything" in result.stdout + result.stderr
        assert site.address("v3") in result.stdout + result.stderr
        check_step(site, percent, maintenance)
        text = site.conf.read_text()
        if percent == 0:
            # The original split: v1's weight=90, no weight= on v2, every own-line down and comment as written.
            assert site.conf.read_bytes() == original
        if percent == 100:
            assert re.search(rf"server {re.escape(site.address('v1'))} weight=90 max_fails=3 fail_timeout=10s down;",
                             text), text
            assert f"server\t{site.address('v2')}   # the canary, staged\n" in text
            assert "\n                ;\n" in text  # v2's ";" stays in the column its "down" started
    assert site.address("v3") not in site.logged_upstreams()
    assert any(addr == site.address("v2") for addr in site.logged_upstreams())


def test_every_stable_server_down_refuses_splits_that_need_them(site: Site) -> None:
    original = site.conf.read_bytes()
    workers = sorted(site.worker_pids())
    for percent in (10, 0, 50):
        result = site.set_weight("reports", percent)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "every stable server of upstream 'reports' was down" in lines[0]
        assert site.address("v3") in lines[0]
        assert site.conf.read_bytes() == original
        assert sorted(site.worker_pids()) == workers
    # 100 % needs none of them: the canary takes it all, the maintenance server keeps its down.
    result = site.set_weight("reports", 100)
    assert result.returncode == 0, result.stderr
    assert site.answers(20, "/reports") == {"v2": 20}
    assert f"server {site.address('v3')} down;   # the only stable one" in site.conf.read_text()


def test_rollout_steps_never_wake_a_maintenance_server(site: Site) -> None:
    original = site.conf.read_bytes()
    maintenance = site.maintenance_lines()
    settings = Settings(str(site.conf), site.binary, str(site.prefix), str(site.state_dir))
    applier = NginxSplitApplier(settings, "backend", [site.address("v2")])
    snapshot = applier.begin("maintenance")
    for percent in (10, 25, 50, 100):
        planned = applier.plan(Fraction(percent))
        assert applier.apply(Fraction(percent)) == planned
        check_step(site, percent, maintenance)
    applier.restore(snapshot)
    assert site.conf.read_bytes() == original
    assert site.address("v3") not in site.logged_upstreams()
