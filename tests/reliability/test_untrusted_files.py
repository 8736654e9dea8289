"""Files another user can write never steer the daemon or the CLI, and nothing they plant runs as root (#14, 3 and 4).

Each attack of the issue, rerun on real files, with a real unprivileged user
(a child forked and dropped to uid 12345, :func:`tests.peers.run_as`) where it
needs one, and the real daemon or CLI as a subprocess (as root):

* **The state dir** (item 3): owned by the user, writable by their group, or
  by them through an ACL, with a pickle they planted at the parse cache's
  names (the old ``parse-cache.pickle`` and the new ``parse-cache.json``) that
  would create a root-owned marker when unpickled, and a symlink at the writer
  lock's name: the daemon and every CLI command that uses the state dir
  refuse, exit 2, naming the path and who can write it; the marker never
  appears, nothing under the site changes. In a state dir nobody else can
  write, a planted pickle is never unpickled either (the cache is JSON), and
  symlinks at every temporary name the cache used to write through are not
  followed.
* **nginx's files** (item 4): a file owned by the user with mode 0444, a
  directory owned by them with mode 0555, an ACL ``u:USER:rw``, a
  ``sites-enabled``-style directory of symlinks writable by their group, a
  grandparent directory they own, a world-writable ``nginx.conf``, a
  main-level include they own (where ``load_module`` would run their code in
  ``nginx -t``), and a world-writable module named by ``load_module``: the
  daemon refuses to start, naming the file and the reason; then the user
  really does write through that hole, so each case is a real one.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from nginx_canary.daemon import control_socket
from tests.peers import run_as
from tests.reliability.conftest import RelSite, run_cli

USER = 12345
GROUP = 4242
ACL_XATTR = "system.posix_acl_access"
ANY = 0xFFFFFFFF


def acl_for_user(uid: int, perm: int) -> bytes:
    """``u::PERM, u:UID:PERM, g::r-x, m::PERM, o::r-x`` as the kernel stores it (PERM 6: rw-, 7: rwx)."""
    entries = [(0x01, perm, ANY), (0x02, perm, uid), (0x04, 5, ANY), (0x10, perm, ANY), (0x20, 5, ANY)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


class Planted:
    """Unpickling this creates ``marker`` (as whoever unpickles it)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Tuple[Callable[..., object], Tuple[str, str]]:
        return (open, (self.marker, "w"))


def env() -> Dict[str, str]:
    return dict(os.environ, PATH="/usr/sbin:" + os.environ.get("PATH", ""))


def tree(root: Path) -> Dict[str, Tuple[int, int, int, bytes]]:
    """Every entry under ``root`` but nginx's own logs: mode, owner, group, and bytes (a symlink's target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if "logs" in path.relative_to(root).parts[:-1]:
            continue  # a freshly started nginx may still be writing its error log
        st = path.lstat()
        if path.is_symlink():
            data = os.readlink(path).encode()
        elif path.is_file():
            data = path.read_bytes()
        else:
            data = b""
        out[str(path)] = (st.st_mode, st.st_uid, st.st_gid, data)
    return out


@pytest.fixture
def site(nginx_bin: str) -> Iterator[RelSite]:
    """A site under a fresh 0755 directory of /tmp (so the user can reach its files), state dir 0700."""
    base = Path(tempfile.mkdtemp(prefix="nc-trust-"))
    base.chmod(0o755)
    s = RelSite(base / "site", nginx_bin)
    s.root.mkdir()
    s.write()
    s.state_dir.mkdir(mode=0o700)
    try:
        yield s
    finally:
        s.stop_nginx()
        s.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def marker_of(site: RelSite) -> Path:
    """Where a planted pickle would leave its mark: a directory only root may write."""
    return site.root.parent / "marker"


def plant_pickles(site: RelSite) -> None:
    data = pickle.dumps(Planted(str(marker_of(site))))
    for name in ("parse-cache.pickle", "parse-cache.json"):
        (site.state_dir / name).write_bytes(data)


def refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def run_daemon(site: RelSite, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return run_cli(["--config", str(site.daemon_config), "daemon"], env(), timeout=timeout)


def cli(site: RelSite, *args: str) -> subprocess.CompletedProcess:
    return run_cli(["--config", str(site.daemon_config), *args], env())


def cli_commands(site: RelSite) -> List[List[str]]:
    """Every CLI command that reads or writes the state dir (report reads it when no daemon answers)."""
    return [["upstreams"], ["validate", "--offline"], ["set-weight", "backend", "10", "--canary", site.v2, "--dry-run"],
            ["set-weight", "backend", "10", "--canary", site.v2], ["analyze", str(site.access_log)],
            ["report", "app", "--output", str(site.root.parent / "report.html")]]


# -- item 3: the state dir ------------------------------------------------------------------------------------------

STATE_ATTACKS = ["owned by the user", "writable by the user's group", "ACL u:USER:rwx"]


@pytest.mark.parametrize("attack", STATE_ATTACKS)
def test_a_state_dir_others_can_write_is_refused_and_nothing_planted_in_it_runs(site, attack):
    state = site.state_dir
    groups: Optional[List[int]] = None
    if attack == "owned by the user":
        os.chown(state, USER, USER)
        who = f"user {USER} (its owner)"
    elif attack == "writable by the user's group":
        os.chown(state, 0, GROUP)
        state.chmod(0o770)
        groups, who = [GROUP], f"group {GROUP}"
    else:
        os.setxattr(state, ACL_XATTR, acl_for_user(USER, 7))
        who = f"user {USER} (ACL)"
    victim = site.root.parent / "victim"
    victim.write_bytes(b"root's file\n")

    def plant() -> None:
        # What the user leaves for root: pickles at both cache names, a symlink where the writer lock goes.
        plant_pickles(site)
        (state / "lock").symlink_to(victim)

    assert run_as(USER, USER, plant, groups) == (0, "")
    site.start_nginx()
    before = tree(site.root.parent)
    result = run_daemon(site)
    assert not marker_of(site).exists(), "the daemon ran the user's pickle as root"
    message = refusal(result)
    assert message.startswith(f"nginx-canary: error: refusing to start: {state} is writable by {who}"), message
    for args in cli_commands(site):
        result = cli(site, *args)
        assert not marker_of(site).exists(), f"{args} ran the user's pickle as root"
        message = refusal(result)
        assert f"refusing to use state dir {state}: {state} is writable by {who}" in message, (args, message)
    assert tree(site.root.parent) == before
    assert not os.path.exists(site.socket_path)


def test_in_a_state_dir_nobody_else_can_write_a_pickle_is_never_unpickled(site):
    """The cache is JSON now: a pickle at either name (root's own doing here) is ignored by the daemon and the CLI."""
    plant_pickles(site)
    site.start_nginx()
    for args in (["upstreams"], ["set-weight", "backend", "10", "--canary", site.v2]):
        result = cli(site, *args)
        assert result.returncode == 0, result.stderr
    daemon = subprocess.Popen(site.daemon_command(sys.executable), stderr=subprocess.PIPE, text=True, env=env())
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(site.socket_path) and time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.05)
        assert control_socket.call(site.socket_path, "ping")["pid"] == daemon.pid
        daemon.terminate()
        assert daemon.wait(timeout=20) == 0, daemon.stderr.read() if daemon.stderr else ""
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if daemon.stderr:
            daemon.stderr.close()
    assert not marker_of(site).exists()
    assert (site.state_dir / "parse-cache.json").read_bytes().startswith(b"{")


def test_the_parse_cache_never_writes_through_a_symlink_at_a_temporary_name(site):
    """Symlinks at the names the old cache wrote to (``NAME.PID.tmp``) for the next pids: none is followed."""
    victim = site.root.parent / "victim"
    victim.write_bytes(b"root's file\n")
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    for pid in range(last + 1, last + 400):
        for name in ("parse-cache.pickle", "parse-cache.json"):
            (site.state_dir / f"{name}.{pid}.tmp").symlink_to(victim)
    result = cli(site, "upstreams")
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == b"root's file\n"
    cache = site.state_dir / "parse-cache.json"
    assert cache.is_file() and not cache.is_symlink()


# -- item 4: nginx's files ------------------------------------------------------------------------------------------

def _append(path: Path, text: str) -> Callable[[], None]:
    def write() -> None:
        with open(path, "a") as fh:
            fh.write(text)
    return write


def owned_read_only_file(site: RelSite) -> Tuple[Path, str, Callable[[], None]]:
    os.chown(site.pool_inc, USER, USER)
    site.pool_inc.chmod(0o444)

    def attack() -> None:
        os.chmod(site.pool_inc, 0o644)  # the owner may
        _append(site.pool_inc, "server 127.0.0.1:9 weight=100;\n")()
    return site.pool_inc, f"user {USER} (its owner)", attack


def owned_read_only_directory(site: RelSite) -> Tuple[Path, str, Callable[[], None]]:
    confd = site.prefix / "conf.d"
    os.chown(confd, USER, USER)
    confd.chmod(0o555)

    def attack() -> None:
        os.chmod(confd, 0o755)
        os.rename(site.upstream_conf, confd / "upstream.old")
        site.upstream_conf.write_text("upstream backend { server 127.0.0.1:9; }\n")
    return confd, f"user {USER} (its owner)", attack


def acl_on_the_file(site: RelSite) -> Tuple[Path, str, Callable[[], None]]:
    os.setxattr(site.upstream_conf, ACL_XATTR, acl_for_user(USER, 6))
    return site.upstream_conf, f"user {USER} (ACL)", _append(site.upstream_conf, "# the user was here\n")


def group_writable_directory_of_symlinks(site: RelSite) -> Tuple[Path, str, Callable[[], None]]:
    """Debian's sites-enabled: links to files in a safe directory, the links' own directory writable by a group."""
    available = site.prefix / "sites-available"
    available.mkdir()
    confd = site.prefix / "conf.d"
    for path in (site.upstream_conf, site.pool_inc):
        shutil.move(str(path), available / path.name)
        path.symlink_to(Path("..") / "sites-available" / path.name)
    os.chown(confd, 0, GROUP)
    confd.chmod(0o775)

    def attack() -> None:
        os.unlink(site.upstream_conf)
        site.upstream_conf.write_text("upstream backend { server 127.0.0.1:9; }\n")
    return confd, f"group {GROUP}", attack


def owned_grandparent(site: RelSite) -> Tuple[Path, str, Callable[[], None]]:
    os.chown(site.prefix, USER, USER)

    def attack() -> None:
        confd = site.prefix / "conf.d"
        os.rename(confd, site.prefix / "conf.d.old")
        confd.mkdir()
        site.upstream_conf.write_text("upstream backend { server 127.0.0.1:9; }\n")
    return site.prefix, f"user {USER} (its owner)", attack


def world_writable_main_file(site: RelSite) -> Tuple[Path, str, Callable[[], None]]:
    site.conf.chmod(0o666)
    return site.conf, "everyone", _append(site.conf, "# the user was here\n")


def owned_main_level_include(site: RelSite) -> Tuple[Path, str, Callable[[], None]]:
    """Debian's modules-enabled: an include in the main context, where load_module runs code in nginx -t."""
    modules = site.prefix / "modules.d"
    modules.mkdir()
    module = modules / "mod.conf"
    module.write_text("# no modules\n")
    site.conf.write_text(f"include {modules}/*.conf;\n" + site.conf.read_text())
    os.chown(module, USER, USER)
    return module, f"user {USER} (its owner)", _append(module, "load_module /nonexistent/evil.so;\n")


def world_writable_module(site: RelSite) -> Tuple[Path, str, Callable[[], None]]:
    """A module nginx -t would load: whoever can write it runs code as root (not a real module: refused first)."""
    module = site.prefix / "modules" / "ngx_evil.so"
    module.parent.mkdir()
    module.write_bytes(b"")
    module.chmod(0o666)
    site.conf.write_text("load_module modules/ngx_evil.so;\n" + site.conf.read_text())
    return module, "everyone", _append(module, "ELF")


NGINX_ATTACKS = [owned_read_only_file, owned_read_only_directory, acl_on_the_file,
                 group_writable_directory_of_symlinks, owned_grandparent, world_writable_main_file,
                 owned_main_level_include, world_writable_module]


@pytest.mark.parametrize("setup", NGINX_ATTACKS, ids=[f.__name__ for f in NGINX_ATTACKS])
def test_the_daemon_refuses_nginx_files_another_user_can_write(site, setup):
    named, who, attack = setup(site)
    if setup is not world_writable_module:
        assert site.nginx_t().returncode == 0, site.nginx_t().stderr  # a valid config: only the permissions are wrong
    before = tree(site.root.parent)
    message = refusal(run_daemon(site))
    assert message.startswith(f"nginx-canary: error: refusing to start: {named} is writable by {who}"), message
    assert "allow_insecure_permissions" in message
    assert tree(site.root.parent) == before
    assert not os.path.exists(site.socket_path)
    # The hole is real: the user writes through it.
    assert run_as(USER, USER, attack, [GROUP]) == (0, "")
    assert tree(site.root.parent) != before
