"""Snapshot copies and their manifest, and the checked read back."""

from __future__ import annotations

import json

import pytest

from nginx_canary.errors import StateError
from nginx_canary.nginx.snapshots import read_copy, sha256, write_snapshot


def test_write_snapshot_copies_each_file_then_writes_the_manifest(tmp_path):
    directory = tmp_path / "snapshots" / "ID"
    originals = [b"one\n", b"two\n"]
    entries = write_snapshot(str(directory), originals,
                             lambda n, copy: {"path": f"/etc/nginx/{n}.conf", "copy": copy, "sha256": sha256(originals[n])},
                             {"id": "ID", "upstream": "backend"})
    assert (directory / "0.orig").read_bytes() == b"one\n" and (directory / "1.orig").read_bytes() == b"two\n"
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    assert oct((directory / "0.orig").stat().st_mode & 0o777) == "0o600"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert list(manifest) == ["id", "upstream", "files"]
    assert manifest["files"] == entries and entries[1]["copy"] == str(directory / "1.orig")


def test_read_copy_refuses_a_damaged_copy(tmp_path):
    copy = tmp_path / "0.orig"
    copy.write_bytes(b"original\n")
    assert read_copy(str(copy), sha256(b"original\n"), damaged="damaged") == b"original\n"
    copy.write_bytes(b"changed\n")
    with pytest.raises(StateError, match="^snapshot 0.orig is damaged$"):
        read_copy(str(copy), sha256(b"original\n"), damaged="snapshot 0.orig is damaged")
    with pytest.raises(OSError):
        read_copy(str(tmp_path / "gone"), sha256(b""), damaged="damaged")
