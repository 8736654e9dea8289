"""``snapshots list`` and ``snapshots restore ID``: the way back by hand, on a real nginx with real traffic."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from nginx_canary.rollout.store import RolloutState, StateStore
from nginx_canary.statedir import StateDir
from tests.cli.test_app import canary_share, run


def listed(nginx) -> list:
    result = run(nginx, "snapshots", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["snapshots"]


def test_list_then_restore_round_trip_is_byte_identical(nginx):
    original = nginx.config_files()
    assert run(nginx, "set-weight", "backend", "10", "--canary", nginx.v2).returncode == 0
    assert run(nginx, "set-weight", "backend", "50", "--canary", nginx.v2).returncode == 0
    first, second = listed(nginx)
    assert (first["command"], first["upstream"], first["context"], first["kind"]) == (
        "set-weight", "backend", "http", "change")
    assert first["detail"] == f"canary 10 % ({nginx.v2})" and second["detail"] == f"canary 50 % ({nginx.v2})"
    assert first["files"] == [str(nginx.upstream_conf)] and first["created"] <= second["created"]

    text = run(nginx, "snapshots", "list").stdout
    assert re.search(rf"^{first['id']} +\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d  change   set-weight backend: canary 10 %",
                     text, re.M), text
    assert f"    {nginx.upstream_conf}\n" in text

    master = nginx.master().pid
    workers = nginx.workers()
    result = run(nginx, "snapshots", "restore", first["id"])
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"reloaded: restored 1 file(s) of snapshot {first['id']}; master {master}, ")
    assert nginx.config_files() == original  # byte for byte, the config before the first change
    assert not set(nginx.workers()) & set(workers)
    assert nginx.count_versions(50) == {"v1": 50}

    # The restore was snapshotted too: restoring that snapshot undoes it.
    undo = last.rsplit("undo: nginx-canary snapshots restore ", 1)[1]
    restore_entry = listed(nginx)[-1]
    assert (restore_entry["id"], restore_entry["command"]) == (undo, "snapshots restore")
    assert restore_entry["detail"] == f"restore of snapshot {first['id']}"
    assert run(nginx, "snapshots", "restore", undo).returncode == 0
    assert 40 <= canary_share(nginx.count_versions(200)) <= 60


def test_restore_of_a_rollout_start_snapshot(nginx):
    """A rollout's start snapshot (rollout-snapshots/) is listed and restorable once the rollout has ended."""
    from nginx_canary.nginx.operations import Settings
    from nginx_canary.rollout.applier import NginxSplitApplier

    settings = Settings(str(nginx.conf), nginx.binary, str(nginx.prefix), str(nginx.state_dir))
    original = nginx.config_files()
    snapshot_id = NginxSplitApplier(settings, "backend", (nginx.v2,)).begin("app")
    assert run(nginx, "set-weight", "backend", "100", "--canary", nginx.v2).returncode == 0
    start = [s for s in listed(nginx) if s["id"] == snapshot_id][0]
    assert (start["kind"], start["command"], start["detail"]) == ("rollout", "rollout", "start of rollout app")
    dry = run(nginx, "snapshots", "restore", snapshot_id, "--dry-run")
    assert dry.returncode == 0 and f"+    server {nginx.v2} down;" in dry.stdout
    assert dry.stdout.splitlines()[-1] == f"dry run: would restore 1 file(s) of snapshot {snapshot_id}; nothing changed"
    assert nginx.config_files() != original
    assert run(nginx, "snapshots", "restore", snapshot_id).returncode == 0
    assert nginx.config_files() == original
    again = run(nginx, "snapshots", "restore", snapshot_id)
    assert again.returncode == 0 and "the files already hold this snapshot; nothing to change" in again.stdout


def test_bad_ids_are_refused_with_one_line(nginx):
    assert run(nginx, "set-weight", "backend", "10", "--canary", nginx.v2).returncode == 0
    before = nginx.config_files()
    for bad, message in (("../etc", "'../etc' is not a snapshot id"), ("x/y", "'x/y' is not a snapshot id"),
                         ("20990101T000000-1", "no snapshot '20990101T000000-1' in "), ("", "'' is not a snapshot id")):
        result = run(nginx, "snapshots", "restore", bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert result.stderr.startswith(f"nginx-canary: error: {message}") and result.stderr.count("\n") == 1
    assert nginx.config_files() == before


def test_restore_is_refused_while_a_rollout_steers_the_upstream(nginx):
    assert run(nginx, "set-weight", "backend", "10", "--canary", nginx.v2).returncode == 0
    (snap,) = listed(nginx)
    before = nginx.config_files()
    StateStore(str(nginx.state_dir)).save(RolloutState(
        name="app", state="progressing", steps=("10", "100"), canary_percent="10", snapshot_id="app-1",
        started_at=1.0, step_started_at=2.0, upstream="backend"))
    result = run(nginx, "snapshots", "restore", snap["id"])
    assert result.returncode == 2
    assert result.stderr == (
        f"nginx-canary: error: snapshot {snap['id']} holds files of upstream 'backend', which rollout 'app' is "
        "steering (progressing at 10 %); nothing restored: `nginx-canary abort app` puts back its start snapshot, "
        "or wait until it ends\n")
    assert nginx.config_files() == before


def test_a_restore_nginx_does_not_take_is_undone_byte_for_byte(nginx, unbindable_listen):
    """nginx -t passes, the reload cannot bind: the files go back to what they were before the restore."""
    extra = nginx.prefix / "conf.d" / "extra.conf"
    extra_bytes = extra.read_bytes()
    extra.unlink()
    assert run(nginx, "set-weight", "backend", "25", "--canary", nginx.v2).returncode == 0
    (snap,) = listed(nginx)
    extra.write_bytes(extra_bytes)
    before = nginx.config_files()
    result = run(nginx, "snapshots", "restore", snap["id"])
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("nginx-canary: error: ") and result.stderr.count("\n") == 1
    assert nginx.config_files() == before
    assert not os.path.exists(StateDir(str(nginx.state_dir)).journal)
    assert 15 <= canary_share(nginx.count_versions(200)) <= 35


def test_list_without_snapshots(nginx_stopped, tmp_path: Path):
    result = run(nginx_stopped, "snapshots", "list")
    assert result.returncode == 0 and result.stdout == f"no snapshots in {nginx_stopped.state_dir}\n"
