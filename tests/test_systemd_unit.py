"""systemd/nginx-canary.service: verify clean, exposure <= 2.5, and the settings the daemon relies on."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "nginx-canary.service"
INSTALLED_PATH = "/usr/local/bin/nginx-canary"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: run `make test` (it installs the Debian package systemd)")
    return found


def entry_point() -> str:
    candidate = Path(sys.executable).parent / "nginx-canary"
    found = str(candidate) if candidate.exists() else shutil.which("nginx-canary")
    assert found, "the nginx-canary entry point is not installed"
    return found


def unit_sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_analyze_verify_is_clean(tmp_path: Path):
    # verify insists that ExecStart exists: point it at this installation's entry point.
    text = UNIT.read_text()
    assert INSTALLED_PATH in text
    unit = tmp_path / "nginx-canary.service"
    unit.write_text(text.replace(INSTALLED_PATH, entry_point()))
    result = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_exposure_is_at_most_2_5(tmp_path: Path):
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for nginx-canary\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5


def test_the_unit_runs_the_daemon_as_a_notify_service():
    service = unit_sections()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"].split()[-1] == "daemon" and "--config" in service["ExecStart"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["WatchdogSec"]
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    # The daemon's default paths are the ones the unit makes and allows.
    assert service["RuntimeDirectory"] == "nginx-canary" and service["StateDirectory"] == "nginx-canary"
    from nginx_canary.config.model import DaemonSettings

    defaults = DaemonSettings()
    assert defaults.control_socket.startswith("/run/nginx-canary/")
    assert defaults.state_dir == "/var/lib/nginx-canary"
    assert "/etc/nginx" in service["ReadWritePaths"].split()


def test_the_limits_leave_room_for_a_rollback_whatever_clients_do():
    """LimitNOFILE= and TasksMax= are set, and the servers' fixed bounds fit well inside them."""
    from nginx_canary.daemon import control_socket
    from nginx_canary.integrations import metrics_server as metrics
    from nginx_canary.daemon.bounded_server import NOFILE_SHARE

    service = unit_sections()["Service"]
    nofile, tasks_max = int(service["LimitNOFILE"]), int(service["TasksMax"])
    servers = (metrics.LIMITS, control_socket.LIMITS)
    # Each server holds at most an eighth of the open-file limit: a quarter for both, the rest for restores.
    assert all(limits.fit(nofile) == limits for limits in servers)
    assert sum(limits.descriptors() for limits in servers) <= nofile // (NOFILE_SHARE // 2)
    # Fixed threads of both servers (workers and one I/O thread each), beside the daemon's own ~10 and nginx -t.
    assert sum(limits.workers + 1 for limits in servers) + 64 <= tasks_max
