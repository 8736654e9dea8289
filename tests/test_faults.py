"""Fault points: parsing, a full disk in the write path, SIGKILL between write and nginx -t, and recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nginx_canary import faults
from nginx_canary.errors import StateError
from nginx_canary.fsutil import atomic_write


def test_parse():
    assert faults.parse("") == {}
    assert faults.parse("after_write=kill, write_config=enospc@2,history_append=eio@*") == {
        "after_write": ("kill", 1), "write_config": ("enospc", 2), "history_append": ("eio", None)}
    for bad in ("after_write", "x=explode", "x=kill@0", "x=kill@two", "=kill"):
        with pytest.raises(ValueError):
            faults.parse(bad)


@pytest.fixture
def armed():
    yield faults.arm
    faults.arm("")


def test_a_full_disk_half_way_through_a_write_leaves_the_old_file(tmp_path: Path, armed):
    path = tmp_path / "upstream.conf"
    path.write_bytes(b"old contents\n")
    armed("write_config=enospc@2")
    atomic_write(str(path), b"first\n", purpose="config")  # the first write goes through
    assert path.read_bytes() == b"first\n"
    with pytest.raises(StateError, match="No space left on device"):
        atomic_write(str(path), b"second, never complete\n", purpose="config")
    assert path.read_bytes() == b"first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["upstream.conf"]  # no temporary file left behind
    atomic_write(str(path), b"third\n", purpose="state")  # another purpose is not armed
    assert path.read_bytes() == b"third\n"


def set_weight(inst, percent: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nginx_canary", *inst.cli_args(), "set-weight", "backend", percent,
                           "--canary", inst.v2], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PATH="/usr/sbin:" + os.environ.get("PATH", ""), **env))


@pytest.mark.parametrize("point", ["after_write", "after_test", "after_reload"])
def test_sigkill_inside_a_transaction_is_undone_by_the_next_writer(nginx, point):
    before = nginx.config_files()
    crashed = set_weight(nginx, "30", {faults.ENV: f"{point}=kill"})
    assert crashed.returncode == -signal.SIGKILL
    assert (nginx.state_dir / "journal.json").exists()
    # The next writer first puts the files back as they were, then does its own change.
    result = set_weight(nginx, "0", {})
    assert result.returncode == 0, result.stderr
    assert "recovered an interrupted change" in result.stderr + result.stdout
    assert nginx.config_files() == before
    assert subprocess.run([nginx.binary, "-t", "-p", str(nginx.prefix), "-c", str(nginx.conf)],
                          capture_output=True).returncode == 0
    assert nginx.count_versions(10) == {"v1": 10}


def test_a_failing_disk_during_set_weight_changes_nothing(nginx):
    before = nginx.config_files()
    workers = nginx.workers()
    result = set_weight(nginx, "30", {faults.ENV: "write_config=eio"})
    assert result.returncode == 1
    assert "Input/output error" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert nginx.config_files() == before
    assert nginx.workers() == workers
    assert not (nginx.state_dir / "journal.json").exists()


def test_stall_sleeps_and_goes_on(armed):
    assert faults.parse("after_reload=stall, after_test=stall:0.05@*") == {
        "after_reload": ("stall", 1), "after_test": ("stall:0.05", None)}
    for bad in ("x=stall:", "x=stall:0", "x=stall:-1", "x=stall:61", "x=stall:nan", "x=stall:soon", "x=stal"):
        with pytest.raises(ValueError):
            faults.parse(bad)
    armed("after_test=stall:0.05@*")
    assert faults.point("after_test") is None  # slept, then went on: no error
    assert faults.point("after_test") is None
