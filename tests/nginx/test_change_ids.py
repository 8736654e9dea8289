"""Change-snapshot ids: unique per change even within one second, in time order, and the old ids still work."""

from __future__ import annotations

import os
import threading

from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.control import Nginx
from nginx_canary.nginx.snapshot_restore import restore_snapshot
from nginx_canary.nginx.snapshots import ChangeIds, find_snapshot, list_snapshots, sha256, write_snapshot
from nginx_canary.nginx.operations import Settings
from nginx_canary.nginx.transaction import FileChange, Transaction
from nginx_canary.statedir import StateDir

T = 1764771492.25  # 2025-12-03 14:18:12.250 UTC


def test_ids_within_one_second_differ_and_sort_in_time_order() -> None:
    ids = ChangeIds(pid=lambda: 4242)
    first, second = ids.new(T), ids.new(T + 0.5)
    assert (first, second) == ("20251203T141812.250-4242", "20251203T141812.750-4242")
    # The same millisecond again, then a clock set back: still new ids, still after the last.
    again, back = ids.new(T + 0.5), ids.new(T - 60)
    assert (again, back) == ("20251203T141812.751-4242", "20251203T141812.752-4242")
    made = [first, second, again, back]
    assert sorted(made) == made and len(set(made)) == 4
    # An old id (to the second) sorts with its second: after earlier seconds, before the new ids of its own.
    assert sorted(made + ["20251203T141812-4242", "20251203T141811-99999"]) == [
        "20251203T141811-99999", "20251203T141812-4242"] + made


def test_ids_are_unique_across_threads() -> None:
    ids = ChangeIds(pid=lambda: 7)
    made: list = []

    def take() -> None:
        made.extend(ids.new(T) for _ in range(200))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 800


def test_old_and_new_ids_are_listed_and_found(tmp_path) -> None:
    paths = StateDir(str(tmp_path))
    for snap_id, created in (("20251203T141812-4242", T - 0.25), ("20251203T141812.250-4242", T)):
        write_snapshot(paths.snapshot(snap_id), [b"a"], lambda n, c: {
            "path": "/etc/nginx/u.conf", "copy": c, "old_sha256": sha256(b"a"), "new_sha256": "x"},
            {"id": snap_id, "created": created})
    found, problems = list_snapshots(str(tmp_path))
    assert [s.id for s in found] == ["20251203T141812-4242", "20251203T141812.250-4242"] and problems == []
    assert find_snapshot(str(tmp_path), "20251203T141812-4242").kind == "change"
    assert find_snapshot(str(tmp_path), "20251203T141812.250-4242").created == T


def weight(inst, before: bytes, after: bytes) -> FileChange:
    old = inst.upstream_conf.read_bytes()
    new = old.replace(before, after)
    assert new != old
    return FileChange(str(inst.upstream_conf), old, new)


def test_two_changes_in_the_same_second_keep_two_snapshots(nginx):
    """A frozen clock: each change still gets its own snapshot, and each restores its own bytes."""
    original = nginx.upstream_conf.read_bytes()
    txn = Transaction(str(nginx.state_dir), Nginx(nginx.binary, str(nginx.conf), str(nginx.prefix)),
                      clock=lambda: T, ids=ChangeIds())
    first = txn.apply([weight(nginx, f"server {nginx.v2} down;".encode(), f"server {nginx.v2};".encode())],
                      load_config(str(nginx.conf)), reload=True)
    between = nginx.upstream_conf.read_bytes()
    second = txn.apply([weight(nginx, f"server {nginx.v2};".encode(), f"server {nginx.v2} weight=3;".encode())],
                       load_config(str(nginx.conf)), reload=True)
    assert first.snapshot_id != second.snapshot_id and first.snapshot_id < second.snapshot_id
    assert first.snapshot_id == f"20251203T141812.250-{os.getpid()}"
    assert sorted(os.listdir(nginx.state_dir / "snapshots")) == [first.snapshot_id, second.snapshot_id]
    assert (nginx.state_dir / "snapshots" / first.snapshot_id / "0.orig").read_bytes() == original
    assert (nginx.state_dir / "snapshots" / second.snapshot_id / "0.orig").read_bytes() == between
    settings = Settings(nginx_conf=str(nginx.conf), nginx_bin=nginx.binary, nginx_prefix=str(nginx.prefix),
                        state_dir=str(nginx.state_dir))
    restore_snapshot(settings, second.snapshot_id)
    assert nginx.upstream_conf.read_bytes() == between
    restore_snapshot(settings, first.snapshot_id)
    assert nginx.upstream_conf.read_bytes() == original
