"""Atomic writes keep mode and owner and leave no temporary files."""

from __future__ import annotations

import os
import pwd

import pytest

from nginx_canary.errors import StateError
from nginx_canary.fsutil import atomic_write


def test_replaces_content_keeps_mode_and_owner(tmp_path):
    target = tmp_path / "site.conf"
    target.write_bytes(b"old\r\n")
    target.chmod(0o640)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(target, nobody.pw_uid, nobody.pw_gid)
    before = target.stat()
    atomic_write(str(target), b"new\r\n")
    after = target.stat()
    assert target.read_bytes() == b"new\r\n"
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino  # replaced by rename, not rewritten in place
    assert sorted(os.listdir(tmp_path)) == ["site.conf"]


def test_new_file_gets_the_mode_asked(tmp_path):
    target = tmp_path / "state.json"
    atomic_write(str(target), b"{}", mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600


def test_failure_leaves_target_and_no_temp_file(tmp_path):
    # rename() of a file over a directory fails for root too, unlike permission bits
    target = tmp_path / "adir"
    target.mkdir()
    (target / "inside").write_bytes(b"kept")
    with pytest.raises(StateError, match="cannot write"):
        atomic_write(str(target), b"x")
    assert (target / "inside").read_bytes() == b"kept"
    assert [p.name for p in tmp_path.iterdir()] == ["adir"]
