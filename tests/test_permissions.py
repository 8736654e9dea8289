"""Files others can write are found; the daemon refuses to start on them unless allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nginx_canary.demo.site import DemoSite
from nginx_canary.permissions import insecure_paths

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
    (0o600, OTHER, 0, f"user {OTHER}"),
    (0o400, OTHER, 0, None),        # owned by another user, but not writable by them
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


def test_symlinks_are_judged_by_their_target(tmp_path):
    target = make(tmp_path, 0o666)
    link = tmp_path / "link.conf"
    link.symlink_to(target)
    assert insecure_paths([str(link)], uid=0, gid=0) == [(str(target), "everyone")]


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
        from nginx_canary.control_socket import call

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
