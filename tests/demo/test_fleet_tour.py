"""`nginx-canary demo --fleet` for real: etcd, three nginx hosts and their daemons, shared apps, load.

The tour runs with 1 s bake times; its report must show the three promised
outcomes from the hosts' own reports, and nothing it started may outlive it.
"""

from __future__ import annotations

import io
import os
import re
from fractions import Fraction

import psutil
from click.testing import CliRunner

from nginx_canary.cli.app import cli
from nginx_canary.demo.fleet_tour import HOSTS, STEPS, FleetTour, canary_percent, find_etcd, format_summary


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_fleet_tour_promotes_in_lock_step_rolls_back_everywhere_and_survives_its_coordinators_death(nginx_bin):
    out = io.StringIO()
    report = FleetTour(out, step_interval="1s", nginx_bin=nginx_bin, etcd_bin=find_etcd()).run()
    text = out.getvalue()
    assert [r.state for r in report.runs] == ["promoted", "rolled_back", "promoted"], text
    healthy, broken, killed = report.runs
    percents = [str(s) for s in STEPS]

    # Run 1: every host applied every step, and none began a step before all had applied the one before.
    for host in HOSTS:
        timeline = healthy.hosts[host]
        assert sorted(timeline.applied) == sorted(percents) and timeline.promoted is not None, (host, text)
    for before, after in zip(percents, percents[1:]):
        assert (max(healthy.hosts[h].applied[before] for h in HOSTS)
                <= min(healthy.hosts[h].applied[after] for h in HOSTS)), text
    assert healthy.max_spread <= 1

    # Run 2: the broken canary is restored on all three hosts, their nginx files byte for byte as before.
    assert "5xx" in broken.message, broken.message
    assert broken.hosts_ending("restored") == list(HOSTS), text
    assert all(broken.hosts[h].restored is not None for h in HOSTS)
    assert broken.files_identical is True

    # Run 3: the coordinator died by SIGKILL mid-rollout; another daemon took over and every host, the
    # restarted one included, ended promoted.
    assert killed.killed in HOSTS and killed.takeover in HOSTS and killed.takeover != killed.killed, text
    assert killed.killed_at is not None and killed.takeover_at is not None and killed.restarted_at is not None
    assert killed.killed_at < killed.takeover_at <= killed.restarted_at
    assert killed.hosts_ending("promoted") == list(HOSTS), text
    assert killed.hosts[killed.killed].promoted > killed.restarted_at

    assert report.ok
    summary = format_summary(report)
    assert "every host's nginx files byte-identical to before the run: yes" in summary
    assert f"{killed.takeover} took over at" in summary
    for host in HOSTS:  # a row of timings per host and run
        assert len(re.findall(rf"(?m)^ +{host} +(\d+\.\d\d|-) ", summary)) == 3, summary

    # Bounded load through every host, and every process started (etcd, nginx, daemons) is gone.
    assert sorted(report.loads) == sorted(HOSTS)
    assert all(r.responses > 0 and r.socket_errors == 0 for r in report.loads.values())
    assert len(report.pids) >= 1 + 2 * len(HOSTS) + 1  # etcd, each nginx master and worker, each daemon, a restart
    assert [pid for pid in report.pids if alive(pid)] == []
    assert not os.path.exists(report.directory)


def test_canary_percent_reads_the_split_from_an_upstream_file():
    text = ("# v2; a comment\nupstream backend {\n    server 127.0.0.1:1 weight=9;\n"
            "    server 127.0.0.1:2 weight=1 max_fails=3;\n    keepalive 32;\n}\n")
    assert canary_percent(text, "127.0.0.1:2") == 10
    assert canary_percent(text.replace("weight=1 ", "down "), "127.0.0.1:2") == 0
    assert canary_percent(text.replace("weight=9;", "down;"), "127.0.0.1:2") == 100
    assert canary_percent(text.replace("weight=9;", "weight=1;"), "127.0.0.1:2") == Fraction(50)
    assert canary_percent("upstream b {\n    server 127.0.0.1:1 down;\n}\n", "127.0.0.1:1") is None


def test_demo_help_offers_the_fleet_tour():
    result = CliRunner().invoke(cli, ["demo", "--help"])
    assert result.exit_code == 0 and "--fleet" in result.output, result.output
