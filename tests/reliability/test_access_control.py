"""Who may steer the real daemon, and on what files it refuses to run.

The control socket of a running daemon: its directory and the socket have the
documented modes and owner; a peer that is neither root, the daemon's user nor
in ``control_group`` is refused by the kernel while the modes hold, and by
``SO_PEERCRED`` once an operator loosened them by hand, for every command
(``status``, ``start``, ``abort``, ``pause``) and without any effect; members
of the group (primary or supplementary) are served. Peers are real processes
forked from the test and dropped to another uid/gid with ``setuid``.

The start-up permission check (tests/test_permissions.py covers a
group-writable upstream file, config and state dir) is extended here to what it
does not cover: the second file of the upstream (an ``include`` inside the
upstream block), a world-writable ``conf.d`` (whoever can write the directory
can replace the file), a state dir owned by another user, and a symlinked
upstream file whose target others can write.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Dict, List, Optional

import pytest

from nginx_canary.daemon import control_socket
from nginx_canary.errors import CanaryError
from tests.peers import call_as
from tests.reliability.conftest import RelSite, history, run_cli

NOBODY = 65534
USER = 12345
GROUP = 4242


COMMANDS = [{"command": "status"}, {"command": "start", "args": {"name": "app"}},
            {"command": "pause", "args": {"name": "app"}}, {"command": "abort", "args": {"name": "app"}},
            {"command": "history"}]


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def loosen(site: RelSite) -> None:
    """What an operator might do by hand: everyone may reach and write the socket."""
    os.chmod(site.socket_dir, 0o755)
    os.chmod(os.path.dirname(site.socket_path), 0o755)
    os.chmod(site.socket_path, 0o666)


def assert_refused_everywhere(h, uid: int, gid: int, groups: Optional[List[int]] = None) -> int:
    before = h.site.config_files()
    refused = 0
    for request in COMMANDS:
        code, data = call_as(uid, gid, h.site.socket_path, request, groups)
        assert code == 0, (request, code, data)
        answer = json.loads(data)
        assert answer["ok"] is False and "permission denied" in answer["error"], answer
        refused += 1
    assert h.site.config_files() == before
    assert h.status()["state"] == "idle" and history(h.site) == []
    return refused


def test_default_modes_and_peers_on_the_real_daemon(rel_harness):
    h = rel_harness()
    path = h.site.socket_path
    directory = os.path.dirname(path)
    assert (mode(directory), mode(path)) == (0o700, 0o600)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert (os.stat(path).st_uid, os.stat(directory).st_uid) == (os.geteuid(), os.geteuid())

    # The modes hold: nobody is turned away by the kernel.
    os.chmod(h.site.socket_dir, 0o755)
    for request in COMMANDS:
        assert call_as(NOBODY, NOBODY, path, request)[0] == 13
    # Loosened by hand: SO_PEERCRED turns away every command of nobody and of an ordinary user.
    loosen(h.site)
    assert assert_refused_everywhere(h, NOBODY, NOBODY) == len(COMMANDS)
    assert assert_refused_everywhere(h, USER, USER, groups=[GROUP]) == len(COMMANDS)
    # Root (and the daemon's user, root here) is served.
    code, data = call_as(0, 0, path, {"command": "ping"})
    assert code == 0 and json.loads(data)["ok"] is True
    assert h.daemon.poll() is None


def test_control_group_members_are_served_and_others_refused(rel_harness):
    h = rel_harness(extra_yaml=[f'control_group: "{GROUP}"'])
    path = h.site.socket_path
    directory = os.path.dirname(path)
    assert (mode(directory), mode(path)) == (0o750, 0o660)
    assert os.stat(path).st_gid == GROUP and os.stat(directory).st_gid == GROUP
    os.chmod(h.site.socket_dir, 0o755)  # the test's own parent directory must be searchable

    # Members, by primary or by supplementary group, are served.
    for gid, groups in ((GROUP, None), (USER, [GROUP])):
        code, data = call_as(USER, gid, path, {"command": "status", "args": {"name": "app"}}, groups)
        assert code == 0, code
        answer = json.loads(data)
        assert answer["ok"] is True and answer["result"]["rollouts"][0]["state"] == "idle", answer
    # Others are refused by the kernel (group modes), then by SO_PEERCRED once loosened.
    assert call_as(NOBODY, NOBODY, path, {"command": "status"})[0] == 13
    assert call_as(USER, GROUP + 1, path, {"command": "status"})[0] == 13
    loosen(h.site)
    assert_refused_everywhere(h, NOBODY, NOBODY)
    assert_refused_everywhere(h, USER, GROUP + 1, groups=[GROUP + 2])


@pytest.mark.parametrize("target", ["included upstream file", "conf.d world-writable", "state dir of another user",
                                    "symlink to a writable file"])
def test_daemon_refuses_to_start_on_insecure_permissions(nginx_bin, tmp_path, target):
    site = RelSite(tmp_path / "site", nginx_bin)
    site.root.mkdir()
    site.write()
    site.state_dir.mkdir(mode=0o700)
    if target == "included upstream file":
        os.chown(site.pool_inc, -1, GROUP)
        site.pool_inc.chmod(0o664)
        named, who = site.pool_inc, f"group {GROUP}"
    elif target == "conf.d world-writable":
        named, who = site.prefix / "conf.d", "everyone"
        named.chmod(0o777)
    elif target == "state dir of another user":
        os.chown(site.state_dir, USER, -1)
        named, who = site.state_dir, f"user {USER}"
    else:
        shared = tmp_path / "shared"
        shared.mkdir()
        real = shared / "upstream.conf"
        real.write_bytes(site.upstream_conf.read_bytes())
        real.chmod(0o666)
        site.upstream_conf.unlink()
        site.upstream_conf.symlink_to(real)
        named, who = real, "everyone"
    before = site.config_files()
    try:
        env = dict(os.environ, PATH="/usr/sbin:" + os.environ.get("PATH", ""))
        result = run_cli(["--config", str(site.daemon_config), "daemon"], env)
    finally:
        site.cleanup()
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"refusing to start: {named} is writable by {who}" in message, message
    assert "allow_insecure_permissions" in message
    assert site.config_files() == before
    assert not os.path.exists(site.socket_path)
    assert not (site.state_dir / "rollouts").exists()


def refused_by_the_real_client(path: str, tries: int) -> Dict[str, int]:
    """``control_socket.call`` (what the CLI runs) as user nobody, ``tries`` times: the error messages seen."""
    seen: Dict[str, int] = {}
    for _ in range(tries):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                try:
                    control_socket.call(path, "status", {"name": "app"}, timeout=30)
                    message = "served"
                except CanaryError as exc:
                    message = str(exc).replace(path, "PATH")
                os.write(write_end, message.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        message = os.read(read_end, 65536).decode()
        os.close(read_end)
        os.waitpid(pid, 0)
        seen[message] = seen.get(message, 0) + 1
    return seen


def test_a_refused_peer_is_always_told_permission_denied(rel_harness):
    """The CLI of a user who may not steer the daemon must say so, every time: not "Broken pipe".

    The daemon answers a refused peer and closes at once, without reading its
    request; a client whose request is still being sent then gets EPIPE and
    never reads the answer waiting in its socket.
    """
    h = rel_harness()
    loosen(h.site)
    seen = refused_by_the_real_client(h.site.socket_path, 200)
    denied = [m for m in seen if m.startswith("permission denied")]
    assert len(denied) == 1 and seen[denied[0]] == 200, seen
    assert h.status()["state"] == "idle"
