"""Each server as it was before nginx-canary's changes: the walk back through the change snapshots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.origin import Origin, from_snapshots, origins
from nginx_canary.nginx.snapshots import sha256, write_snapshot
from nginx_canary.statedir import MANIFEST, StateDir

O = b"upstream app {\n    server a:80;\n    server m:80\n        down;  # disk\n}\n"
X = b"upstream app {\n    server a:80 weight=9;\n    server m:80\n        down;  # disk\n}\n"
Y = b"upstream app {\n    server a:80 down;\n    server m:80\n        down;  # disk\n}\n"


def change(state: Path, n: int, path: Path, old: bytes, new: bytes) -> None:
    """A change snapshot as the transaction writes one (its n-th, at second n)."""
    directory = StateDir(str(state)).snapshot(f"2026010{n}T000000-1")
    entry = {"path": str(path), "real": os.path.realpath(path), "old_sha256": sha256(old), "new_sha256": sha256(new)}
    write_snapshot(directory, [old], lambda _n, copy: {**entry, "copy": copy}, {"id": n})
    os.utime(os.path.join(directory, MANIFEST), ns=(n * 10**9, n * 10**9))


def walk(state: Path, path: Path, now: bytes) -> bytes:
    return from_snapshots(str(state))(str(path), now)


def test_the_walk_follows_each_change_back_to_the_first(tmp_path: Path) -> None:
    conf = tmp_path / "up.conf"
    for n, (old, new) in enumerate([(O, X), (X, Y), (Y, X)], start=1):
        change(tmp_path / "state", n, conf, old, new)
    # X was written twice; the walk takes the newest change that wrote it, then strictly older ones.
    assert walk(tmp_path / "state", conf, X) == O
    assert walk(tmp_path / "state", conf, Y) == O
    assert walk(tmp_path / "state", conf, O) == O


def test_a_file_edited_by_hand_since_is_its_own_origin(tmp_path: Path) -> None:
    conf = tmp_path / "up.conf"
    change(tmp_path / "state", 1, conf, O, X)
    by_hand = X.replace(b"# disk", b"# disk, ticket 42")
    assert walk(tmp_path / "state", conf, by_hand) == by_hand


def test_other_files_and_no_state_dir(tmp_path: Path) -> None:
    change(tmp_path / "state", 1, tmp_path / "other.conf", O, X)
    assert walk(tmp_path / "state", tmp_path / "up.conf", X) == X
    assert walk(tmp_path / "nowhere", tmp_path / "up.conf", X) == X


def test_a_damaged_copy_ends_the_walk(tmp_path: Path) -> None:
    conf = tmp_path / "up.conf"
    change(tmp_path / "state", 1, conf, O, X)
    change(tmp_path / "state", 2, conf, X, Y)
    first = StateDir(str(tmp_path / "state")).snapshot("20260101T000000-1")
    Path(first, "0.orig").write_bytes(b"tampered")
    assert walk(tmp_path / "state", conf, Y) == X


def servers_of(conf: Path) -> List:
    main = conf.parent / "nginx.conf"
    main.write_text(f"events {{}}\nhttp {{ include {conf}; }}\n")
    return list(load_config(str(main), logs=False).upstream("app").servers)


def test_origins_by_server(tmp_path: Path) -> None:
    conf = tmp_path / "up.conf"
    conf.write_bytes(Y)
    change(tmp_path / "state", 1, conf, O, X)
    change(tmp_path / "state", 2, conf, X, Y)
    a, m = servers_of(conf)
    found = origins([a, m], lambda path: Path(path).read_bytes(), from_snapshots(str(tmp_path / "state")))
    assert found[a] == Origin(1, False, "server a:80;")
    assert found[m] == Origin(1, True, "server m:80\n        down;")
    # Without originals, the files as they are.
    assert origins([a], lambda path: Path(path).read_bytes())[a] == Origin(1, True, "server a:80 down;")
