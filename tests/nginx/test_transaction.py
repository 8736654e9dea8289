"""Snapshot, atomic write, nginx -t, reload, verify, or restore byte for byte, on a real nginx."""

from __future__ import annotations

import json
import os
import time

import pytest

from nginx_canary.errors import NginxNotRunningError, NginxRejectedError, StateError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.control import Nginx
from nginx_canary.nginx.transaction import FileChange, Transaction


def transaction_for(inst) -> Transaction:
    return Transaction(str(inst.state_dir), Nginx(inst.binary, str(inst.conf), str(inst.prefix)))


def weight_change(inst) -> FileChange:
    old = inst.upstream_conf.read_bytes()
    new = old.replace(f"server {inst.v2} down;".encode(), f"server {inst.v2};".encode())
    assert new != old
    return FileChange(str(inst.upstream_conf), old, new)


def test_apply_writes_tests_reloads_and_verifies(nginx):
    change = weight_change(nginx)
    master = nginx.master().pid
    before = nginx.workers()
    outcome = transaction_for(nginx).apply([change], load_config(str(nginx.conf)), reload=True)
    assert nginx.upstream_conf.read_bytes() == change.new
    assert outcome.reload.master_pid == master == nginx.master().pid
    assert not set(outcome.reload.new_workers) & set(before)
    assert set(nginx.count_versions(20)) == {"v1", "v2"}
    snap = nginx.state_dir / "snapshots" / outcome.snapshot_id
    manifest = json.loads((snap / "manifest.json").read_text())
    assert (snap / "0.orig").read_bytes() == change.old
    assert manifest["files"][0]["real"] == str(nginx.upstream_conf)
    assert not (nginx.state_dir / "journal.json").exists()


def test_broken_include_elsewhere_restores_every_byte(nginx):
    (nginx.prefix / "conf.d" / "zz-broken.conf").write_text("server { listen 127.0.0.1:1; bogus_directive on; }\n")
    change = weight_change(nginx)
    files_before = nginx.config_files()
    workers = nginx.workers()
    with pytest.raises(NginxRejectedError, match='unknown directive "bogus_directive"'):
        transaction_for(nginx).apply([change], load_config(str(nginx.conf)), reload=True)
    assert nginx.config_files() == files_before
    assert nginx.workers() == workers
    assert nginx.count_versions(5) == {"v1": 5}
    assert not (nginx.state_dir / "journal.json").exists()


def test_reload_that_does_not_take_effect_restores(nginx, unbindable_listen):
    change = weight_change(nginx)
    files_before = nginx.config_files()
    workers = nginx.workers()
    with pytest.raises(NginxRejectedError, match="reload failed.*bind"):
        transaction_for(nginx).apply([change], load_config(str(nginx.conf)), reload=True)
    assert nginx.config_files() == files_before
    assert nginx.workers() == workers
    assert nginx.count_versions(5) == {"v1": 5}


def test_not_running_changes_nothing(nginx_stopped):
    change = weight_change(nginx_stopped)
    with pytest.raises(NginxNotRunningError):
        transaction_for(nginx_stopped).apply([change], load_config(str(nginx_stopped.conf)), reload=True)
    assert nginx_stopped.upstream_conf.read_bytes() == change.old
    assert not (nginx_stopped.state_dir / "snapshots").exists()


def test_without_reload_writes_and_tests_only(nginx_stopped):
    change = weight_change(nginx_stopped)
    outcome = transaction_for(nginx_stopped).apply([change], load_config(str(nginx_stopped.conf)), reload=False)
    assert outcome.reload is None
    assert nginx_stopped.upstream_conf.read_bytes() == change.new


def test_file_changed_by_someone_else_is_not_overwritten(nginx):
    change = weight_change(nginx)
    nginx.upstream_conf.write_bytes(change.old + b"# edited by hand\n")
    with pytest.raises(StateError, match="changed while"):
        transaction_for(nginx).apply([change], load_config(str(nginx.conf)), reload=True)
    assert nginx.upstream_conf.read_bytes().endswith(b"# edited by hand\n")


def test_symlinked_config_file_is_written_through_the_link(nginx):
    real = nginx.prefix / "sites-available" / "upstream.conf"
    real.parent.mkdir()
    os.replace(nginx.upstream_conf, real)
    nginx.upstream_conf.symlink_to(real)
    change = weight_change(nginx)
    transaction_for(nginx).apply([change], load_config(str(nginx.conf)), reload=True)
    assert nginx.upstream_conf.is_symlink()
    assert real.read_bytes() == change.new


def test_recover_restores_a_crashed_change(nginx_stopped):
    """A writer killed between its write and the end leaves a journal; the next one puts the file back."""
    change = weight_change(nginx_stopped)
    txn = transaction_for(nginx_stopped)
    txn.paths.ensure()
    _, entries = txn._snapshot([change])
    txn._write_journal("crashed", entries, "writing")
    nginx_stopped.upstream_conf.write_bytes(change.new)  # the write that happened before the crash
    message = txn.recover()
    assert "restored 1 file" in message
    assert nginx_stopped.upstream_conf.read_bytes() == change.old
    assert txn.recover() is None


def test_recover_leaves_a_file_someone_else_changed(nginx_stopped):
    change = weight_change(nginx_stopped)
    txn = transaction_for(nginx_stopped)
    txn.paths.ensure()
    _, entries = txn._snapshot([change])
    txn._write_journal("crashed", entries, "writing")
    nginx_stopped.upstream_conf.write_bytes(b"# theirs\n")
    assert "restored 0 file" in txn.recover()
    assert nginx_stopped.upstream_conf.read_bytes() == b"# theirs\n"


def test_recover_after_crash_during_reload_reloads_restored_files(nginx):
    """Killed after SIGHUP: nginx serves the change, the files are restored and nginx reloaded onto them."""
    change = weight_change(nginx)
    txn = transaction_for(nginx)
    txn.paths.ensure()
    _, entries = txn._snapshot([change])
    txn._write_journal("crashed", entries, "reloading")
    nginx.upstream_conf.write_bytes(change.new)
    nginx.master().send_signal(1)  # the reload the crashed writer had sent
    deadline = time.monotonic() + 5
    while "v2" not in nginx.count_versions(4) and time.monotonic() < deadline:
        time.sleep(0.05)
    message = txn.recover()
    assert "restored 1 file" in message and "nginx reloaded" in message
    assert nginx.upstream_conf.read_bytes() == change.old
    assert nginx.count_versions(20) == {"v1": 20}
