"""The rollout commands without a daemon, and set-weight's guard against steering an upstream under a rollout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from nginx_canary.rollout.store import RolloutState, StateStore


@pytest.fixture
def socket_path() -> Iterator[Path]:
    """A socket path nothing listens on, short enough for sun_path; its directory is removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="nc-"))
    yield directory / "none.sock"
    shutil.rmtree(directory, ignore_errors=True)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nginx_canary", *args], capture_output=True, text=True,
                          timeout=timeout)


def save_rollout(state_dir: Path, state: str, upstream: str = "backend", **extra) -> None:
    StateStore(str(state_dir)).save(RolloutState(
        name="app", state=state, steps=("10", "100"), canary_percent="10", snapshot_id=extra.pop("snapshot_id", "app-1"),
        started_at=1.0, step_started_at=2.0, upstream=upstream, **extra))


@pytest.mark.parametrize("command", [["status"], ["status", "app"], ["start", "app"], ["pause", "app"],
                                     ["resume", "app"], ["promote", "app"], ["abort", "app"], ["history"]])
def test_every_command_says_the_daemon_is_not_running_with_exit_3(command, socket_path):
    result = cli("--socket", str(socket_path), *command)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "daemon is not running" in result.stderr and str(socket_path) in result.stderr


@pytest.mark.parametrize("args, message", [
    (["start", "app", "--steps", "10,abc,100"], "abc"),
    (["start", "app", "--step-interval", "10 seconds"], "--step-interval"),
    (["start", "app", "--step-interval", "0s"], "greater than 0"),
    (["history", "--limit", "0"], "--limit"),
])
def test_bad_arguments_are_refused_before_the_daemon_is_asked(args, message):
    result = cli("--socket", "/nonexistent/none.sock", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_set_weight_refuses_an_upstream_under_an_active_rollout(nginx):
    save_rollout(nginx.state_dir, "progressing")
    before = nginx.config_files()
    result = cli(*nginx.cli_args(), "set-weight", "backend", "30", "--canary", nginx.v2)
    assert result.returncode == 2
    assert "under rollout 'app'" in result.stderr and "--force" in result.stderr
    assert nginx.config_files() == before
    # A dry run changes nothing and is allowed.
    assert cli(*nginx.cli_args(), "set-weight", "backend", "30", "--canary", nginx.v2, "--dry-run").returncode == 0


@pytest.mark.parametrize("state, extra", [("paused", {}), ("failed", {}), ("rolled_back", {})])
def test_set_weight_guards_paused_failed_and_owed_restores(nginx, state, extra):
    save_rollout(nginx.state_dir, state, **extra)
    result = cli(*nginx.cli_args(), "set-weight", "backend", "30", "--canary", nginx.v2)
    assert result.returncode == 2 and "under rollout 'app'" in result.stderr


def test_set_weight_ignores_finished_rollouts_and_other_upstreams(nginx):
    save_rollout(nginx.state_dir, "promoted", snapshot_id=None)
    assert cli(*nginx.cli_args(), "set-weight", "backend", "30", "--canary", nginx.v2).returncode == 0
    save_rollout(nginx.state_dir, "progressing", upstream="other")
    assert cli(*nginx.cli_args(), "set-weight", "backend", "40", "--canary", nginx.v2).returncode == 0


def test_set_weight_force_without_a_daemon_applies_and_says_the_rollout_will_pause(nginx, socket_path):
    save_rollout(nginx.state_dir, "progressing")
    result = cli("--socket", str(socket_path), *nginx.cli_args(), "set-weight", "backend", "30", "--canary", nginx.v2,
                 "--force")
    assert result.returncode == 0, result.stderr
    assert f"no daemon answers on {socket_path}" in result.stderr and "pauses it at its next check" in result.stderr
    assert "weight=" in nginx.upstream_conf.read_text()
