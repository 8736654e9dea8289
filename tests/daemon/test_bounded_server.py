"""nginx_canary.daemon.bounded_server: fixed threads, capped connections, a total deadline, refusals, surviving faults.

Real sockets on loopback (unix sockets in a temp directory); the one fake is
a listener whose ``accept`` fails with EMFILE a few times (fault injection).
No timing assertions: deadlines are short and every wait is bounded.
"""

from __future__ import annotations

import errno
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from nginx_canary.daemon.bounded_server import NOFILE_SHARE, BoundedServer, Limits, Refusal

SMALL = Limits(workers=2, max_pending=4, queue=2, request_deadline=0.5, answer_deadline=5.0, max_request_bytes=64)


class LineEcho:
    """One line in, ``ok:LINE`` out; ``block`` waits for :attr:`release`; ``boom`` raises."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.refuse_accept = 0

    def accepted(self, conn: socket.socket) -> str:
        if self.refuse_accept:
            self.refuse_accept -= 1
            raise OSError("no peer credentials")
        return "ctx"

    def request_end(self, data: bytes) -> int:
        end = data.find(b"\n")
        return end + 1 if end >= 0 else -1

    def refusal(self, why: Refusal, context: Any) -> bytes:
        return f"refused:{why.value}\n".encode()

    def serve(self, conn: socket.socket, request: bytes, context: Any) -> None:
        if request == b"block\n":
            self.entered.release()
            self.release.wait(10)
        if request == b"boom\n":
            raise RuntimeError("a bug in the protocol")
        conn.sendall(b"ok:" + request)


@pytest.fixture
def path() -> Iterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="nc-bs-"))
    yield str(directory / "s.sock")
    for item in directory.iterdir():
        item.unlink()
    directory.rmdir()


def listen(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(socket.SOMAXCONN)
    return listener


@pytest.fixture
def serve(path: str) -> Iterator[Any]:
    servers: List[BoundedServer] = []

    def start(protocol: Any, limits: Limits = SMALL, listener: Any = None) -> BoundedServer:
        server = BoundedServer(listener or listen(path), protocol, limits, name="test")
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def connect(path: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(path)
    return conn


def exchange(path: str, data: bytes) -> bytes:
    with connect(path) as conn:
        try:
            conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # dropped before the request was sent: read what came, if anything
        return read_all(conn)


def read_all(conn: socket.socket) -> bytes:
    reply = b""
    while True:
        try:
            chunk = conn.recv(4096)
        except ConnectionResetError:  # closed with our request unread: no answer either
            return reply
        if not chunk:
            return reply
        reply += chunk


@pytest.mark.parametrize("soft", [16, 64, 256, 1024, 2048, 1 << 20])
def test_limits_fit_within_an_eighth_of_the_open_file_limit(soft):
    limits = Limits(workers=4, max_pending=64, queue=32)
    fitted = limits.fit(soft)
    assert fitted.descriptors() <= max(soft // NOFILE_SHARE, 1 + 4 + 2 + 4)
    assert fitted.workers == 4 and fitted.max_pending >= 4 and fitted.queue >= 2
    if limits.descriptors() <= soft // NOFILE_SHARE:
        assert fitted == limits


def test_requests_are_served_by_the_fixed_threads(path, serve):
    before = threading.active_count()
    serve(LineEcho())
    assert threading.active_count() == before + SMALL.workers + 1
    assert [exchange(path, f"{i}\n".encode()) for i in range(20)] == [f"ok:{i}\n".encode() for i in range(20)]
    assert threading.active_count() == before + SMALL.workers + 1


def test_the_deadline_is_total_not_per_read(path, serve):
    serve(LineEcho())
    with connect(path) as conn:
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a byte every 0.1 s: each read is quick, the request never ends
            try:
                conn.send(b"a")
            except OSError:
                # Refused and closed between two bytes: the answer is still in the socket.
                conn.settimeout(1.0)
                try:
                    answer += conn.recv(100)
                except OSError:
                    pass
                break
            conn.settimeout(0.1)
            try:
                answer += conn.recv(100)
                if answer.endswith(b"\n"):
                    break
            except socket.timeout:
                pass
    assert answer == b"refused:too slow\n"


def test_beyond_the_cap_the_oldest_pending_connection_makes_room(path, serve):
    before = threading.active_count()
    serve(LineEcho(), Limits(workers=1, max_pending=4, queue=2, request_deadline=30.0))
    silent = [connect(path) for _ in range(10)]
    try:
        assert exchange(path, b"hello\n") == b"ok:hello\n"
        for conn in silent[:7]:  # 10 silent + 1 real through 4 places: the 7 oldest were dropped, unanswered
            assert read_all(conn) == b""
        for conn in silent[7:]:
            conn.setblocking(False)
            with pytest.raises(BlockingIOError):
                conn.recv(1)
        assert threading.active_count() == before + 2
    finally:
        for conn in silent:
            conn.close()


def test_a_full_queue_is_answered_busy_at_once(path, serve):
    protocol = LineEcho()
    serve(protocol, Limits(workers=1, max_pending=8, queue=1, request_deadline=30.0))
    first, second = connect(path), connect(path)
    try:
        first.sendall(b"block\n")
        assert protocol.entered.acquire(timeout=10)  # the only worker is busy
        second.sendall(b"queued\n")  # waits in the one place of the queue
        time.sleep(0.2)  # let the I/O thread queue it (no assertion on time)
        assert exchange(path, b"third\n") == b"refused:busy\n"
        protocol.release.set()
        assert read_all(first) == b"ok:block\n" and read_all(second) == b"ok:queued\n"
    finally:
        protocol.release.set()
        first.close()
        second.close()


def test_a_request_longer_than_the_limit_is_refused(path, serve):
    serve(LineEcho())
    assert exchange(path, b"x" * 1000) == b"refused:too long\n"


def test_a_client_that_half_closes_early_gets_the_refusal(path, serve):
    serve(LineEcho())
    with connect(path) as conn:
        conn.sendall(b"no newline")
        conn.shutdown(socket.SHUT_WR)
        assert read_all(conn) == b"refused:closed early\n"


class FailingListener:
    """A real listener whose first ``failures`` accepts fail with EMFILE (the process is out of descriptors)."""

    def __init__(self, inner: socket.socket, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def fileno(self) -> int:
        return self.inner.fileno()

    def setblocking(self, flag: bool) -> None:
        self.inner.setblocking(flag)

    def accept(self) -> Any:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.inner.accept()

    def close(self) -> None:
        self.inner.close()


def test_accept_failing_for_want_of_descriptors_does_not_stop_the_server(path, serve, caplog):
    listener = FailingListener(listen(path), failures=3)
    server = serve(LineEcho(), listener=listener)
    assert exchange(path, b"after\n") == b"ok:after\n"
    assert listener.failures == 0
    assert all(t.is_alive() for t in server._threads)
    deadline = time.monotonic() + 10
    while "accept failed: Too many open files" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "test: connections refused since the last report: accept failed: Too many open files" in caplog.text


def test_failures_of_the_protocol_are_logged_and_the_server_goes_on(path, serve):
    protocol = LineEcho()
    protocol.refuse_accept = 1
    serve(protocol)
    assert exchange(path, b"dropped\n") == b""  # accepted() raised: closed unanswered
    assert exchange(path, b"boom\n") == b""  # serve() raised: closed unanswered, the worker lives on
    assert [exchange(path, b"%d\n" % i) for i in range(SMALL.workers * 2)] == [
        b"ok:%d\n" % i for i in range(SMALL.workers * 2)]


def test_close_stops_the_threads_and_drops_pending_connections(path, serve):
    before = threading.active_count()
    server = serve(LineEcho(), Limits(workers=2, max_pending=8, queue=2, request_deadline=30.0))
    with connect(path) as pending:
        pending.sendall(b"half")
        time.sleep(0.1)
        server.close()
        assert read_all(pending) == b""
    assert threading.active_count() == before
    server.close()  # idempotent
