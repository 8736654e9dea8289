"""Atomic writes keep mode and owner and leave no temporary files."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import pytest

from nginx_canary.errors import StateError
from nginx_canary import faults
from nginx_canary.fsutil import TEMP_SUFFIX, atomic_write, leftover_temps


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


def test_a_write_killed_half_way_leaves_a_temporary_file_that_leftover_temps_finds(tmp_path):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    upstream = conf / "upstream.conf"
    upstream.write_bytes(b"old\n")
    killed = subprocess.run([sys.executable, "-c", "from nginx_canary.fsutil import atomic_write; "
                             f"atomic_write({str(upstream)!r}, b'new contents\\n' * 10, purpose='config')"],
                            env=dict(os.environ, **{faults.ENV: "write_config=kill"}), timeout=60)
    assert killed.returncode == -9
    assert upstream.read_bytes() == b"old\n"
    left = [p for p in conf.iterdir() if p.name != "upstream.conf"]
    assert len(left) == 1 and left[0].name.startswith(".upstream.conf.") and left[0].name.endswith(TEMP_SUFFIX)
    assert leftover_temps([str(upstream)]) == [str(left[0])]


def test_leftover_temps_finds_only_the_temporaries_of_the_files_and_directories_given(tmp_path):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    upstream = conf / "upstream.conf"
    upstream.write_text("upstream\n")
    for_upstream = conf / f".upstream.conf.k2j3{TEMP_SUFFIX}"
    for_site = conf / f".site.conf.k2j3{TEMP_SUFFIX}"  # a file not given: not ours to judge
    look_alike = conf / "upstream.conf.nginx-canary.tmp"  # not hidden: atomic_write never makes it
    state = tmp_path / "state"
    (state / "rollouts").mkdir(parents=True)
    for_state = state / "rollouts" / f".app.json.x9{TEMP_SUFFIX}"
    for path in (for_upstream, for_site, look_alike, for_state):
        path.write_text("half")
    (conf / f".upstream.conf.dir{TEMP_SUFFIX}").mkdir()  # a directory is never removed
    assert leftover_temps([str(upstream)], [str(state)]) == sorted([str(for_upstream), str(for_state)])
    assert leftover_temps([], []) == []


def test_open_nofollow_refuses_a_planted_symlink_or_fifo(tmp_path):
    from nginx_canary.fsutil import open_nofollow
    from nginx_canary.statedir import StateDir

    victim = tmp_path / "victim"
    victim.write_bytes(b"root's file")
    (tmp_path / "lock").symlink_to(victim)
    with pytest.raises(OSError):
        open_nofollow(str(tmp_path / "lock"), os.O_RDWR | os.O_CREAT)
    with pytest.raises(StateError, match="cannot open lock file"):
        with StateDir(str(tmp_path)).writer_lock():
            pass
    assert victim.read_bytes() == b"root's file"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        open_nofollow(str(tmp_path / "fifo"), os.O_RDWR)
    fd = open_nofollow(str(tmp_path / "new"), os.O_RDWR | os.O_CREAT)
    os.close(fd)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o600


def test_append_lines_cuts_a_torn_tail_and_creates_the_file_private(tmp_path):
    from nginx_canary.fsutil import append_lines

    path = tmp_path / "h.jsonl"
    assert append_lines(str(path), b"{}\n", what="history", sync=True)
    assert path.stat().st_mode & 0o777 == 0o600
    with open(path, "ab") as fh:
        fh.write(b'{"torn')  # a crash in the middle of a write
    assert append_lines(str(path), b"[1]\n[2]\n", what="history", sync=False)
    assert path.read_bytes() == b"{}\n[1]\n[2]\n"


def test_append_lines_without_create_leaves_a_missing_file_missing(tmp_path):
    from nginx_canary.fsutil import append_lines

    path = tmp_path / "s.jsonl"
    assert not append_lines(str(path), b"{}\n", what="the series", sync=False, create=False)
    assert not path.exists()
    with pytest.raises(StateError, match="cannot open the series"):
        append_lines(str(tmp_path / "missing" / "s.jsonl"), b"{}\n", what="the series", sync=False)


def test_append_lines_fault_point_fails_the_append_and_keeps_the_file(tmp_path):
    from nginx_canary.fsutil import append_lines

    path = tmp_path / "h.jsonl"
    path.write_bytes(b"{}\n")
    faults.arm("history_append=enospc")
    try:
        with pytest.raises(StateError, match="cannot append to history: No space left"):
            append_lines(str(path), b"[1]\n", what="history", sync=True, fault="history_append")
    finally:
        faults.arm("")
    assert path.read_bytes() == b"{}\n"
    with pytest.raises(StateError, match="cannot open history"):
        append_lines(str(tmp_path), b"[1]\n", what="history", sync=True)  # a directory, not a file
