"""The control socket on real unix sockets: modes, peer credentials, protocol errors, client errors."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from nginx_canary.daemon import control_socket
from nginx_canary.daemon.bounded_server import Limits
from nginx_canary.daemon.control_socket import ControlServer, Peer, call, is_allowed
from nginx_canary.errors import BadInputError, CanaryError, ControlError, DaemonNotRunningError, ExitCode, UnknownRolloutError
from tests.peers import call_as, trickle

NOBODY = 65534
STATUS = {"command": "status"}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # sun_path holds 107 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="nc-test-"))
    yield path
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    os.rmdir(path)


class Recorder:
    def __init__(self) -> None:
        self.calls: List[Tuple[str, Dict[str, Any]]] = []

    def __call__(self, command: str, args: Dict[str, Any]) -> Any:
        self.calls.append((command, args))
        if command == "boom":
            raise RuntimeError("a bug")
        if command == "unknown":
            raise UnknownRolloutError("no rollout named 'x'")
        if command == "busy":
            from nginx_canary.errors import BusyError
            raise BusyError("busy: try again")
        return {"echo": args}


@pytest.fixture
def server(short_dir: Path) -> Iterator[Tuple[ControlServer, Recorder]]:
    recorder = Recorder()
    srv = ControlServer(str(short_dir / "run" / "control.sock"), recorder)
    srv.start()
    yield srv, recorder
    srv.close()


def test_socket_and_directory_modes(server):
    srv, _ = server
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(srv.path)).st_mode) == 0o700


def test_round_trip_and_errors_carry_exit_codes(server):
    srv, recorder = server
    assert call(srv.path, "status", {"name": "app"}) == {"echo": {"name": "app"}}
    assert recorder.calls == [("status", {"name": "app"})]
    with pytest.raises(BadInputError) as unknown:
        call(srv.path, "unknown")
    assert unknown.value.exit_code == ExitCode.BAD_INPUT and "no rollout named" in str(unknown.value)
    with pytest.raises(Exception) as busy:
        call(srv.path, "busy")
    assert busy.value.exit_code == ExitCode.BUSY
    with pytest.raises(Exception) as bug:
        call(srv.path, "boom")
    assert "internal error" in str(bug.value) and "\n" not in str(bug.value)


def raw_exchange(path: str, data: bytes) -> Dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(path)
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply)


@pytest.mark.parametrize("payload", [b"not json\n", b"[1, 2]\n", b'{"command": 5}\n', b'{"command": "x", "args": 3}\n',
                                     b'{"command": "x"', b"\xff\xfe\n"])
def test_malformed_requests_are_answered_not_executed(server, payload):
    srv, recorder = server
    answer = raw_exchange(srv.path, payload)
    assert answer["ok"] is False and answer["exit_code"] == ExitCode.BAD_INPUT
    assert "bad request" in answer["error"]
    assert recorder.calls == []


def test_an_oversized_request_is_refused(server):
    srv, recorder = server
    answer = raw_exchange(srv.path, b'{"command": "x", "args": {"a": "' + b"a" * (control_socket.MAX_REQUEST_BYTES + 10))
    assert answer["ok"] is False and "longer than" in answer["error"]
    assert recorder.calls == []


def test_a_silent_peer_does_not_block_others(short_dir):
    recorder = Recorder()
    srv = ControlServer(str(short_dir / "run" / "control.sock"), recorder, request_timeout=0.5)
    srv.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
            silent.connect(srv.path)
            assert call(srv.path, "ping") == {"echo": {}}
            silent.settimeout(10)
            answer = json.loads(silent.recv(65536))
            assert answer["ok"] is False
    finally:
        srv.close()


def test_peers_other_than_root_the_daemon_user_or_the_group_are_refused():
    root = Peer(pid=1, uid=0, gid=0)
    other = Peer(pid=1, uid=1000, gid=1000, groups=frozenset({100}))
    assert is_allowed(root, daemon_uid=0, control_gid=None)
    assert not is_allowed(other, daemon_uid=0, control_gid=None)
    assert is_allowed(other, daemon_uid=1000, control_gid=None)
    assert is_allowed(other, daemon_uid=0, control_gid=1000)
    assert is_allowed(other, daemon_uid=0, control_gid=100)  # a supplementary group
    assert not is_allowed(other, daemon_uid=0, control_gid=4242)


def test_an_unprivileged_peer_is_refused_even_when_the_modes_are_loosened(server):
    srv, recorder = server
    # With the default modes the kernel already refuses the connection.
    code, _ = call_as(NOBODY, NOBODY, srv.path, STATUS)
    assert code == 13
    # An operator loosens the modes by hand: SO_PEERCRED still refuses.
    os.chmod(os.path.dirname(os.path.dirname(srv.path)), 0o755)
    os.chmod(os.path.dirname(srv.path), 0o755)
    os.chmod(srv.path, 0o666)
    code, data = call_as(NOBODY, NOBODY, srv.path, STATUS)
    assert code == 0
    answer = json.loads(data)
    assert answer["ok"] is False and "permission denied" in answer["error"]
    assert recorder.calls == []


def test_a_member_of_the_control_group_is_let_in(short_dir):
    recorder = Recorder()
    srv = ControlServer(str(short_dir / "run" / "control.sock"), recorder, control_group=str(NOBODY))
    srv.start()
    try:
        assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o660
        assert os.stat(srv.path).st_gid == NOBODY
        assert stat.S_IMODE(os.stat(os.path.dirname(srv.path)).st_mode) == 0o750
        os.chmod(short_dir, 0o755)  # the test's own parent directory must be searchable
        code, data = call_as(12345, NOBODY, srv.path, STATUS)  # an ordinary user whose primary group is the control group
        assert code == 0, data
        assert json.loads(data) == {"ok": True, "result": {"echo": {}}}
    finally:
        srv.close()


def test_no_daemon_is_exit_3_with_one_line(short_dir):
    with pytest.raises(DaemonNotRunningError) as err:
        call(str(short_dir / "missing.sock"), "status")
    assert err.value.exit_code == 3 and "\n" not in str(err.value)
    # A socket file left by a dead daemon: refused connection, same answer.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_dir / "stale.sock"))
    stale.close()
    with pytest.raises(DaemonNotRunningError):
        call(str(short_dir / "stale.sock"), "status")


def test_a_stale_socket_is_replaced_and_a_live_one_refused(short_dir):
    path = short_dir / "run" / "control.sock"
    path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    first = ControlServer(str(path), Recorder())
    first.start()
    try:
        assert call(str(path), "ping") == {"echo": {}}
        with pytest.raises(ControlError, match="another nginx-canary daemon is listening"):
            ControlServer(str(path), Recorder()).start()
        assert call(str(path), "ping") == {"echo": {}}  # the live one was left alone
    finally:
        first.close()
    assert not path.exists()


@pytest.mark.parametrize("setup", ["shared", "not-a-socket"])
def test_unsuitable_places_for_the_socket_are_refused(short_dir, setup):
    directory = short_dir / "run"
    directory.mkdir(mode=0o755)
    if setup == "shared":
        (directory / "other-daemon.pid").write_text("1\n")
        message = "holds other files"
    else:
        (directory / "control.sock").write_text("")
        message = "not a socket"
    with pytest.raises(ControlError, match=message):
        ControlServer(str(directory / "control.sock"), Recorder()).start()
    if setup == "shared":
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755  # a shared directory keeps its mode


def test_unknown_control_group_is_a_clear_error():
    with pytest.raises(ControlError, match="no such group"):
        ControlServer("/tmp/x.sock", Recorder(), control_group="no-such-group-nc")


def test_concurrent_clients_all_get_their_own_answers(server):
    srv, _ = server
    results: Dict[int, Any] = {}

    def one(i: int) -> None:
        results[i] = call(srv.path, "status", {"i": i})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {i: {"echo": {"i": i}} for i in range(20)}


# --- bounds (issue #14): JSON depth, slow peers, a full queue -------------------------------------------------


def test_a_request_nested_30000_deep_gets_a_one_line_error_and_the_server_goes_on(server):
    srv, recorder = server
    answer = raw_exchange(srv.path, b'{"command": "x", "args": {"a": ' + b"[" * 30000 + b"]" * 30000 + b"}}\n")
    assert answer == {"ok": False, "exit_code": ExitCode.BAD_INPUT,
                      "error": f"bad request: JSON nested deeper than {control_socket.MAX_JSON_DEPTH} levels"}
    assert recorder.calls == []
    assert call(srv.path, "status") == {"echo": {}}


def test_nesting_up_to_the_limit_and_brackets_inside_strings_are_fine(server):
    srv, recorder = server
    deep = 1
    for _ in range(control_socket.MAX_JSON_DEPTH - 2):  # the request object and args are two levels
        deep = [deep]
    brackets = "[{" * 1000
    assert call(srv.path, "x", {"deep": deep, "text": brackets}) == {"echo": {"deep": deep, "text": brackets}}


def test_a_trickling_peer_is_cut_off_at_the_total_deadline(short_dir):
    srv = ControlServer(str(short_dir / "run" / "control.sock"), Recorder(), request_timeout=0.5)
    srv.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
            slow.connect(srv.path)
            # A byte every 0.1 s: at most 14 s.
            reply = trickle(slow, b'{"command": "status", "args": {"x": "' + b"a" * 100, lambda r: r.endswith(b"\n"))
        assert json.loads(reply) == {"ok": False, "exit_code": ExitCode.BAD_INPUT,
                                     "error": "bad request: no complete request within 0.5 s"}
    finally:
        srv.close()


def test_many_silent_peers_hold_no_thread_and_do_not_lock_a_client_out(server):
    srv, _ = server
    threads = threading.active_count()
    silent = []
    try:
        for _ in range(3 * srv.limits.max_pending):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            silent.append(conn)
            conn.connect(srv.path)
        assert call(srv.path, "status", {"n": 1}) == {"echo": {"n": 1}}
        assert threading.active_count() == threads
    finally:
        for conn in silent:
            conn.close()


def test_requests_beyond_the_queue_are_answered_busy(short_dir):
    release = threading.Event()
    entered = threading.Event()

    def slow(command: str, args: Dict[str, Any]) -> Any:
        entered.set()
        release.wait(10)
        return "done"

    srv = ControlServer(str(short_dir / "run" / "control.sock"), slow,
                        limits=Limits(workers=1, max_pending=8, queue=1))
    srv.start()
    results: List[Any] = []
    first = threading.Thread(target=lambda: results.append(call(srv.path, "a")))
    second = threading.Thread(target=lambda: results.append(call(srv.path, "b")))
    try:
        first.start()
        assert entered.wait(10)
        second.start()  # queued behind the first
        time.sleep(0.2)
        with pytest.raises(CanaryError) as busy:
            call(srv.path, "c")
        assert busy.value.exit_code == ExitCode.BUSY and "busy" in str(busy.value)
    finally:
        release.set()
        first.join(10)
        second.join(10)
        srv.close()
    assert results == ["done", "done"]
