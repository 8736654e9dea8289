"""Files others can write are found; the daemon refuses to start on them unless allowed."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest

from nginx_canary.demo.site import DemoSite
from nginx_canary.permissions import acl_writers, insecure_paths, insecure_state_dir

OTHER = 12345


def make(tmp_path: Path, mode: int, uid: int = 0, gid: int = 0) -> Path:
    directory = tmp_path / "d"
    directory.mkdir(mode=0o755, exist_ok=True)
    path = directory / f"f{mode:o}-{uid}-{gid}"
    path.write_text("x")
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode, uid, gid, who", [
    (0o644, 0, 0, None),
    (0o664, 0, 0, None),            # root's group
    (0o600, OTHER, 0, f"user {OTHER} (its owner)"),
    (0o444, OTHER, 0, f"user {OTHER} (its owner)"),  # read-only, but its owner may chmod it
    (0o664, 0, OTHER, f"group {OTHER}"),
    (0o646, 0, 0, "everyone"),
])
def test_who_can_write_a_file(tmp_path, mode, uid, gid, who):
    path = make(tmp_path, mode, uid, gid)
    found = insecure_paths([str(path)], uid=0, gid=0)
    assert found == ([] if who is None else [(str(path), who)])


def test_the_daemons_own_user_and_group_are_trusted(tmp_path):
    path = make(tmp_path, 0o664, OTHER, OTHER)
    assert insecure_paths([str(path)], uid=OTHER, gid=OTHER) == []


def acl(*entries: Tuple[int, int, int]) -> bytes:
    """A ``system.posix_acl_access`` value: (tag, perm, id) entries after the version header, in the kernel's order."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident)
                                           for tag, perm, ident in sorted(entries, key=lambda e: (e[0], e[2])))


ANY = 0xFFFFFFFF
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER_ENTRY = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


@pytest.mark.parametrize("entries, who", [
    ([(USER, 6, OTHER), (MASK, 6, ANY)], f"user {OTHER} (ACL)"),         # u:OTHER:rw
    ([(USER, 6, OTHER), (MASK, 4, ANY)], None),                          # ... but the mask takes write away
    ([(GROUP, 7, OTHER), (MASK, 7, ANY)], f"group {OTHER} (ACL)"),
    ([(USER, 6, 0), (MASK, 6, ANY)], None),                              # root named: trusted
])
def test_posix_acls_count(tmp_path, entries, who):
    path = make(tmp_path, 0o644)
    value = acl((USER_OBJ, 6, ANY), (GROUP_OBJ, 4, ANY), (OTHER_ENTRY, 4, ANY), *entries)
    os.setxattr(path, "system.posix_acl_access", value)
    assert insecure_paths([str(path)], uid=0, gid=0) == ([] if who is None else [(str(path), who)])


def test_an_acl_mask_hides_the_owning_groups_own_permissions(tmp_path):
    path = make(tmp_path, 0o644, 0, OTHER)
    # g::r-- with mask rw- (so the mode shows g+w) and u:0:rw: the owning group cannot write.
    os.setxattr(path, "system.posix_acl_access",
                acl((USER_OBJ, 6, ANY), (USER, 6, 0), (GROUP_OBJ, 4, ANY), (MASK, 6, ANY), (OTHER_ENTRY, 4, ANY)))
    assert stat.S_IMODE(path.stat().st_mode) & stat.S_IWGRP
    assert insecure_paths([str(path)], uid=0, gid=0) == []
    os.setxattr(path, "system.posix_acl_access",
                acl((USER_OBJ, 6, ANY), (USER, 6, 0), (GROUP_OBJ, 6, ANY), (MASK, 6, ANY), (OTHER_ENTRY, 4, ANY)))
    assert insecure_paths([str(path)], uid=0, gid=0) == [(str(path), f"group {OTHER} (ACL)")]


def test_acl_writers_rejects_what_is_not_an_acl():
    with pytest.raises(ValueError):
        acl_writers(b"\x01\x00\x00\x00", 0)
    with pytest.raises(ValueError):
        acl_writers(acl((USER, 6, 1))[:-1], 0)


def test_a_directory_others_can_write_lets_them_replace_the_file(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    path = directory / "upstream.conf"
    path.write_text("x")
    path.chmod(0o644)
    assert insecure_paths([str(path)], uid=0, gid=0) == [(str(directory), "everyone")]
    directory.chmod(0o1777)  # sticky, like /tmp: others cannot replace root's file
    assert insecure_paths([str(path)], uid=0, gid=0) == []
    os.chown(path, OTHER, -1)  # ... but its owner can (reported as the file's owner, not as the directory's writers)
    assert insecure_paths([str(path)], uid=0, gid=0) == [(str(path), f"user {OTHER} (its owner)")]


def test_a_missing_file_in_a_sticky_directory_could_be_created_by_anyone(tmp_path):
    directory = tmp_path / "tmp"
    directory.mkdir()
    directory.chmod(0o1777)
    missing = directory / "state"
    assert insecure_paths([str(missing)], uid=0, gid=0) == [
        (str(directory), f"everyone, who could create {missing} first")]
    missing.mkdir(mode=0o700)
    assert insecure_paths([str(missing)], uid=0, gid=0) == []


def test_every_parent_directory_counts(tmp_path):
    grandparent = tmp_path / "a"
    (grandparent / "b").mkdir(parents=True)
    path = grandparent / "b" / "upstream.conf"
    path.write_text("x")
    os.chown(grandparent, OTHER, -1)
    grandparent.chmod(0o555)  # read-only, but its owner may chmod it and rename b away
    assert insecure_paths([str(path)], uid=0, gid=0) == [(str(grandparent), f"user {OTHER} (its owner)")]


def test_symlinks_count_with_the_directory_of_the_link_and_of_the_target(tmp_path):
    target = make(tmp_path, 0o666)
    link = tmp_path / "link.conf"
    link.symlink_to(target)
    assert insecure_paths([str(link)], uid=0, gid=0) == [(str(target), "everyone")]
    target.chmod(0o644)
    enabled = tmp_path / "sites-enabled"
    enabled.mkdir()
    os.chown(enabled, -1, OTHER)
    enabled.chmod(0o775)
    (enabled / "site.conf").symlink_to(target)
    assert insecure_paths([str(enabled / "site.conf")], uid=0, gid=0) == [(str(enabled), f"group {OTHER}")]


def test_relative_symlinks_and_dot_dot_resolve_as_the_kernel_does(tmp_path):
    real = tmp_path / "real"
    (real / "conf.d").mkdir(parents=True)
    (real / "conf.d" / "u.conf").write_text("x")
    (tmp_path / "alias").symlink_to("real")
    bad = tmp_path / "bad"
    bad.mkdir()
    bad.chmod(0o777)
    assert insecure_paths([str(tmp_path / "alias" / "conf.d" / ".." / "conf.d" / "u.conf")], uid=0, gid=0) == []
    (real / "conf.d" / "v.conf").symlink_to("../../bad/v.conf")
    (bad / "v.conf").write_text("x")
    assert insecure_paths([str(tmp_path / "alias" / "conf.d" / "v.conf")], uid=0, gid=0) == [(str(bad), "everyone")]


def test_the_state_dir_and_everything_in_it(tmp_path):
    state = tmp_path / "state"
    (state / "rollouts").mkdir(parents=True)
    (state / "rollouts" / "app.json").write_text("{}")
    assert insecure_state_dir(str(state), uid=0, gid=0) == []
    os.chown(state / "rollouts" / "app.json", OTHER, -1)
    assert insecure_state_dir(str(state), uid=0, gid=0) == [
        (str(state / "rollouts" / "app.json"), f"user {OTHER} (its owner)")]
    os.chown(state / "rollouts" / "app.json", 0, -1)
    state.chmod(0o1777)  # a sticky state dir still lets anyone add files to it
    assert insecure_state_dir(str(state), uid=0, gid=0) == [(str(state), "everyone")]


def run_daemon(site: DemoSite) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH="/usr/sbin:" + os.environ.get("PATH", ""))
    return subprocess.run(site.daemon_command(sys.executable), capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("target", ["upstream", "config", "state"])
def test_daemon_refuses_to_start_on_writable_files(nginx_bin, tmp_path, target):
    site = DemoSite(tmp_path, nginx_bin)
    site.write()
    site.state_dir.mkdir(mode=0o700)
    path = {"upstream": site.upstream_conf, "config": site.daemon_config, "state": site.state_dir}[target]
    os.chown(path, -1, OTHER)
    path.chmod(0o770 if path.is_dir() else 0o664)
    before = site.upstream_conf.read_bytes()
    try:
        result = run_daemon(site)
    finally:
        site.cleanup()
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert f"{path} is writable by group {OTHER}" in message and "allow_insecure_permissions" in message
    assert site.upstream_conf.read_bytes() == before
    assert not os.path.exists(site.socket_path)


def test_allow_insecure_permissions_starts_with_a_warning(nginx_bin, tmp_path):
    site = DemoSite(tmp_path, nginx_bin)
    site.write()
    site.daemon_config.write_text(site.daemon_config.read_text() + "allow_insecure_permissions: true\n")
    site.upstream_conf.chmod(0o666)
    site.start_nginx()
    env = dict(os.environ, PATH="/usr/sbin:" + os.environ.get("PATH", ""))
    proc = subprocess.Popen(site.daemon_command(sys.executable), stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "control socket" in line:
                break
        from nginx_canary.daemon.control_socket import call

        assert call(site.socket_path, "ping")["pid"] == proc.pid
        proc.terminate()
        proc.stderr.read()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        site.stop_nginx()
        site.cleanup()
    assert any(f"{site.upstream_conf} is writable by everyone (allowed by allow_insecure_permissions)" in line
               for line in seen), seen
