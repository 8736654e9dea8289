"""LogTailer: plain files first (every rotation style, driven by a fake clock), then a real nginx under load."""

from __future__ import annotations

import collections
import http.client
import itertools
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Set

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nginx_canary.errors import LogReadError
from nginx_canary.logs.tail import LogTailer
from tests.logs.conftest import CountingNginx


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def append(path: Path, data: bytes) -> None:
    """Append like nginx does: O_APPEND, one write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "access.log"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def tailer_for(path: Path, clock: FakeClock, **kwargs: object) -> LogTailer:
    kwargs.setdefault("watch", False)
    kwargs.setdefault("drain_seconds", 5.0)
    return LogTailer(str(path), clock=clock, **kwargs)  # type: ignore[arg-type]


# --- plain files -------------------------------------------------------------


def test_appended_lines_come_out_in_order(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    with tailer_for(log, clock) as t:
        assert t.read_lines() == []
        append(log, b"a\nb\n")
        append(log, b"c\n")
        assert t.read_lines() == [b"a", b"b", b"c"]
        assert t.read_lines() == []
        append(log, b"\n")
        assert t.read_lines() == [b""]
        assert t.position == 7 and t.bytes_read == 7


def test_partial_line_waits_for_its_newline(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    with tailer_for(log, clock) as t:
        append(log, b"first\nsec")
        assert t.read_lines() == [b"first"]
        assert t.position == 6
        append(log, b"ond")
        assert t.read_lines() == []
        append(log, b"\nthird\n")
        assert t.read_lines() == [b"second", b"third"]
        assert t.position == len(b"first\nsecond\nthird\n")


def test_start_at_end_at_offset_or_at_zero(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"old1\nold2\n")
    with tailer_for(log, clock) as t_end, tailer_for(log, clock, offset=5) as t_off, \
            tailer_for(log, clock, from_end=False) as t_zero:
        append(log, b"new\n")
        assert t_end.read_lines() == [b"new"]
        assert t_off.read_lines() == [b"old2", b"new"]
        assert t_zero.read_lines() == [b"old1", b"old2", b"new"]


def test_a_start_in_the_middle_of_a_line_skips_that_fragment(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"one\ntwo-is-being-writ")
    with tailer_for(log, clock) as t_end, tailer_for(log, clock, offset=6) as t_off:
        append(log, b"ten\nthree\n")
        assert t_end.read_lines() == [b"three"]
        assert t_off.read_lines() == [b"three"]
        assert t_end.overlong == 0


def test_resuming_at_position_neither_loses_nor_repeats(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    with tailer_for(log, clock) as t:
        append(log, b"a\nb\nhalf-")
        assert t.read_lines() == [b"a", b"b"]
        saved = t.position
    append(log, b"line\nc\n")
    with tailer_for(log, clock, offset=saved) as t:
        assert t.read_lines() == [b"half-line", b"c"]


def test_an_offset_past_the_end_means_the_file_was_cut_so_read_from_zero(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"short\n")
    with tailer_for(log, clock, offset=10_000) as t:
        assert t.read_lines() == [b"short"]
        assert t.truncations == 1


def test_missing_file_is_awaited_then_read_from_zero(log: Path, clock: FakeClock) -> None:
    with tailer_for(log, clock, from_end=True) as t:
        assert t.read_lines() == []
        assert t.position == 0 and t.error is None
        log.write_bytes(b"x\ny\n")
        assert t.read_lines() == [b"x", b"y"]
        assert t.rotations == 0


def test_rename_and_create_drains_the_old_file_first(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    nginx_fd = os.open(log, os.O_WRONLY | os.O_APPEND)  # nginx keeps its fd across the rename
    try:
        with tailer_for(log, clock) as t:
            os.write(nginx_fd, b"o1\no2\n")
            assert t.read_lines() == [b"o1", b"o2"]
            os.write(nginx_fd, b"o3\n")
            os.rename(log, log.with_name("access.log.1"))
            log.write_bytes(b"n1\n")  # one worker already reopened
            os.write(nginx_fd, b"o4\npart")  # the other has not
            assert t.read_lines() == [b"o3", b"o4", b"n1"]
            assert t.rotations == 1 and t.position == 3
            append(log, b"n2\n")
            os.write(nginx_fd, b"ial\n")
            assert t.read_lines() == [b"partial", b"n2"]
            assert t.truncations == 0 and t.overlong == 0
    finally:
        os.close(nginx_fd)


def test_drained_file_is_closed_only_after_drain_seconds_of_quiet(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    nginx_fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        with tailer_for(log, clock, drain_seconds=5.0) as t:
            os.rename(log, log.with_name("access.log.1"))
            log.write_bytes(b"")
            assert t.read_lines() == []
            clock.advance(4.9)
            os.write(nginx_fd, b"late\n")  # growth restarts the quiet period
            assert t.read_lines() == [b"late"]
            clock.advance(4.9)
            os.write(nginx_fd, b"later\n")
            assert t.read_lines() == [b"later"]
            clock.advance(4.9)
            assert t.read_lines() == []
            assert len(t._draining) == 1
            clock.advance(0.2)
            assert t.read_lines() == []
            assert t._draining == []
            os.write(nginx_fd, b"too late: the old file is closed\n")
            assert t.read_lines() == []
            assert t.unterminated == 0
    finally:
        os.close(nginx_fd)


def test_unfinished_last_line_of_a_drained_file_is_counted(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    with tailer_for(log, clock, drain_seconds=1.0) as t:
        append(log, b"done\nnever fin")
        assert t.read_lines() == [b"done"]
        os.rename(log, log.with_name("access.log.1"))
        log.write_bytes(b"")
        assert t.read_lines() == []
        assert t.unterminated == 0
        clock.advance(1)
        assert t.read_lines() == []
        assert t._draining == []
        assert t.unterminated == 1


def test_several_rotations_drain_oldest_first(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    fds = [os.open(log, os.O_WRONLY | os.O_APPEND)]
    try:
        with tailer_for(log, clock) as t:
            for i in (1, 2):
                os.rename(log, log.with_name(f"access.log.{i}"))
                log.write_bytes(b"")
                assert t.read_lines() == []
                fds.append(os.open(log, os.O_WRONLY | os.O_APPEND))
            for gen in (2, 1, 0):
                os.write(fds[gen], b"gen%d\n" % gen)
            assert t.read_lines() == [b"gen0", b"gen1", b"gen2"]
            assert t.rotations == 2
    finally:
        for fd in fds:
            os.close(fd)


def test_copytruncate_restarts_from_zero(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    with tailer_for(log, clock) as t:
        append(log, b"one\ntwo\nthree\n")
        assert t.read_lines() == [b"one", b"two", b"three"]
        shutil.copyfile(log, log.with_name("access.log.1"))
        os.truncate(log, 0)
        append(log, b"four\n")
        assert t.read_lines() == [b"four"]
        assert t.truncations == 1 and t.rotations == 0 and t.position == 5


def test_truncation_drops_a_buffered_partial_line(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    with tailer_for(log, clock) as t:
        append(log, b"a\nhalf")
        assert t.read_lines() == [b"a"]
        os.truncate(log, 0)
        append(log, b"b\n")
        assert t.read_lines() == [b"b"]
        assert t.truncations == 1


def test_truncated_file_that_regrew_past_our_offset_is_noticed(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    with tailer_for(log, clock) as t:
        append(log, b"aaaa\nbbbb\n")
        assert t.read_lines() == [b"aaaa", b"bbbb"]
        os.truncate(log, 0)
        append(log, b"cccccccc\ndd\n")  # longer than before, no newline at our old offset - 1
        assert t.read_lines() == [b"cccccccc", b"dd"]
        assert t.truncations == 1


def test_deleted_file_is_drained_then_a_new_one_read_from_zero(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    nginx_fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        with tailer_for(log, clock, drain_seconds=1.0) as t:
            os.write(nginx_fd, b"before\n")
            assert t.read_lines() == [b"before"]
            os.unlink(log)
            os.write(nginx_fd, b"after unlink\n")
            assert t.read_lines() == [b"after unlink"]
            assert t.position == 0 and t.error is None
            os.write(nginx_fd, b"still old\n")
            log.write_bytes(b"new\n")
            assert t.read_lines() == [b"still old", b"new"]
            assert t.rotations == 1
            clock.advance(1.5)
            assert t.read_lines() == []
            assert t._draining == []
    finally:
        os.close(nginx_fd)


def test_overlong_line_is_dropped_with_bounded_memory(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    chunk = 64 * 1024
    with tailer_for(log, clock, max_line_bytes=4096, chunk_bytes=chunk) as t:
        append(log, b"ok1\n")
        assert t.read_lines() == [b"ok1"]
        for _ in range(20):  # 1.25 MiB without a newline, read as it grows
            append(log, b"x" * 65536)
            assert t.read_lines() == []
        append(log, b"x" * 100 + b"\nok2\nok3\n")
        assert t.read_lines() == [b"ok2", b"ok3"]
        assert t.overlong == 1
        assert t.peak_buffered <= 4096 + chunk
        assert t.peak_buffered <= 4096  # the partial buffer is in fact capped at the line limit
        assert t.position == log.stat().st_size


def test_overlong_line_read_at_once_and_a_line_exactly_at_the_limit(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"a\n" + b"y" * 2_000_000 + b"\n" + b"z" * 100 + b"\nb\n")
    with tailer_for(log, clock, from_end=False, max_line_bytes=100) as t:
        assert t.read_lines() == [b"a", b"z" * 100, b"b"]
        assert t.overlong == 1
        assert t.peak_buffered <= 100 + (1 << 20)


def test_binary_garbage_passes_through(log: Path, clock: FakeClock) -> None:
    garbage = bytes(range(256)).replace(b"\n", b"")
    log.write_bytes(b"")
    with tailer_for(log, clock) as t:
        append(log, garbage + b"\n\xff\xfe\x00\n")
        assert t.read_lines() == [garbage, b"\xff\xfe\x00"]


def test_max_read_bytes_splits_a_backlog_and_wait_does_not_block_meanwhile(log: Path, clock: FakeClock) -> None:
    lines = [b"line %05d" % i for i in range(1000)]
    log.write_bytes(b"\n".join(lines) + b"\n")
    with tailer_for(log, clock, from_end=False, chunk_bytes=1024, max_read_bytes=2048) as t:
        got: List[bytes] = []
        for calls in range(1, 100):
            got += t.read_lines()
            if len(got) == len(lines):
                break
            started = time.monotonic()
            t.wait(30)
            assert time.monotonic() - started < 5
        assert got == lines and calls > 5
        started = time.monotonic()
        t.wait(0.2)  # nothing left: a real wait
        assert time.monotonic() - started >= 0.15


def test_backlog_and_skip_to_end_resume_at_the_next_whole_line(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"".join(b"old %04d\n" % i for i in range(100)))
    with tailer_for(log, clock, from_end=False, chunk_bytes=64, max_read_bytes=128) as t:
        first = t.read_lines()
        assert first[0] == b"old 0000" and t.more_pending
        assert t.backlog() == log.stat().st_size - 128
        append(log, b"half of a line")  # the writer is in the middle of a line when we skip
        skipped = t.skip_to_end()
        assert skipped == log.stat().st_size - 128 and (t.skipped_bytes, t.skips) == (skipped, 1)
        assert t.backlog() == 0 and not t.more_pending
        append(log, b" that ends here\nnew 1\nnew 2\n")
        assert t.read_lines() == [b"new 1", b"new 2"]  # the line cut by the skip is not read as a whole line
        assert t.skip_to_end() == 0 and t.skips == 1  # nothing to skip: not counted
        assert t.position == log.stat().st_size


def test_skip_to_end_also_skips_a_rotated_file_being_drained(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"a\n")
    with tailer_for(log, clock, from_end=False) as t:
        assert t.read_lines() == [b"a"]
        append(log, b"b\n" * 10)
        log.rename(log.with_name("access.log.1"))
        append(log, b"c\n" * 5)
        append(log.with_name("access.log.1"), b"d\n")
        assert t.backlog() == 22  # the renamed file, still followed: the new one is noticed at the next read
        assert t.skip_to_end() == 22
        assert t.read_lines() == [b"c"] * 5  # the new file is read from its first byte
        assert t.backlog() == 0


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    chunk=st.integers(min_value=1, max_value=64),
    limit=st.integers(min_value=1, max_value=50),
)
def test_any_write_pattern_and_chunk_size_yield_the_same_lines(
        lines: List[bytes], cuts: List[int], chunk: int, limit: int) -> None:
    data = b"".join(line + b"\n" for line in lines)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "access.log"
        path.write_bytes(b"")
        with LogTailer(str(path), watch=False, chunk_bytes=chunk, max_line_bytes=limit, clock=FakeClock()) as t:
            got: List[bytes] = []
            for a, b in zip([0] + sorted(cuts), sorted(cuts) + [len(data)]):
                append(path, data[a:b])
                got += t.read_lines()
            assert got == [line for line in lines if len(line) <= limit]
            assert t.overlong == sum(len(line) > limit for line in lines)
            assert t.peak_buffered <= limit
            assert t.position == len(data)


def test_a_directory_at_the_path_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "access.log").mkdir()
    with pytest.raises(LogReadError, match="not a regular file"):
        LogTailer(str(tmp_path / "access.log"), watch=False)


def test_an_unopenable_new_file_is_reported_and_retried(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    nginx_fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        with tailer_for(log, clock) as t:
            os.rename(log, log.with_name("access.log.1"))
            log.mkdir()
            os.write(nginx_fd, b"old\n")
            assert t.read_lines() == [b"old"]
            assert t.error is not None and "not a regular file" in t.error
            log.rmdir()
            log.write_bytes(b"new\n")
            assert t.read_lines() == [b"new"]
            assert t.error is None and t.rotations == 1
    finally:
        os.close(nginx_fd)


def test_arguments_are_checked(log: Path) -> None:
    with pytest.raises(ValueError):
        LogTailer(str(log), offset=-1, watch=False)
    with pytest.raises(ValueError):
        LogTailer(str(log), max_line_bytes=0, watch=False)


def test_closed_tailer_releases_every_fd(log: Path, clock: FakeClock) -> None:
    me = psutil.Process()
    log.write_bytes(b"a\n")
    before = me.num_fds()
    t = tailer_for(log, clock, watch=True)
    os.rename(log, log.with_name("access.log.1"))
    log.write_bytes(b"")
    t.read_lines()
    t.close()
    t.close()
    assert me.num_fds() == before
    with pytest.raises(ValueError):
        t.read_lines()
    t.wait(10)  # returns at once


def test_wait_wakes_on_a_write_and_sleeps_without_watchdog(log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"")
    with tailer_for(log, clock, watch=True) as t:
        assert t.watching
        writer = threading.Timer(0.2, append, (log, b"hello\n"))
        writer.start()
        started = time.monotonic()
        t.wait(20)
        assert time.monotonic() - started < 10  # woken by inotify, not by the timeout
        writer.join()
        until(lambda: t.read_lines() == [b"hello"], 5, "the line")
    with tailer_for(log, clock, watch=False) as t:
        assert not t.watching
        started = time.monotonic()
        t.wait(0.1)
        assert time.monotonic() - started >= 0.09


def test_missing_directory_falls_back_to_polling(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "not-yet" / "access.log"
    with tailer_for(path, clock, watch=True) as t:
        assert not t.watching
        path.parent.mkdir()
        path.write_bytes(b"x\n")
        assert t.read_lines() == [b"x"]


# --- a real nginx -------------------------------------------------------------


class NumberedClient:
    """Threads sending ``GET /?n=1``, ``/?n=2``, ... to 127.0.0.1, bounded in count and time.

    ``sent`` holds every number answered 200, ``errors`` anything else. Each
    thread opens a new connection every ``per_connection`` requests so that
    reuseport spreads the load over both workers.
    """

    def __init__(self, port: int, *, threads: int, max_requests: int = 30000, seconds: float = 30.0,
                 per_connection: int = 20) -> None:
        self.port = port
        self.max_requests = max_requests
        self.seconds = seconds
        self.per_connection = per_connection
        self.sent: Set[int] = set()
        self.errors: List[str] = []
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "NumberedClient":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def wait_sent(self, count: int, timeout: float = 10.0) -> None:
        until(lambda: len(self.sent) >= count, timeout, f"{count} requests")

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        conn = None
        for i in itertools.count():
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            with self._lock:
                n = next(self._numbers)
            if n > self.max_requests:
                break
            if conn is None or i % self.per_connection == 0:
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", f"/?n={n}")
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{n}: {exc!r}")
                conn.close()
                conn = None
                continue
            if resp.status == 200:
                with self._lock:
                    self.sent.add(n)
            else:
                self.errors.append(f"{n}: HTTP {resp.status}")
        if conn is not None:
            conn.close()


class Collector:
    """The tailer's caller: ``wait(0.05)`` + ``read_lines()`` on a thread, until stopped or 60 s.

    ``lock`` is held around each read so a test can freeze the tailer while it
    acts on the file.
    """

    def __init__(self, tailer: LogTailer) -> None:
        self.tailer = tailer
        self.lines: List[bytes] = []
        self.lock = threading.Lock()
        self.failure: List[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Collector":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self.failure, self.failure

    def numbers(self) -> List[int]:
        with self.lock:
            return numbers_in(self.lines)

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.tailer.wait(0.05)
                with self.lock:
                    self.lines += self.tailer.read_lines()
        except BaseException as exc:  # surfaced by __exit__
            self.failure.append(exc)


def numbers_in(lines: List[bytes]) -> List[int]:
    """Request numbers of ``<pid> /?n=<number> <status>`` lines, in order."""
    return [int(line.split(b" ")[1].split(b"n=", 1)[1]) for line in lines]


def pids_in(lines: List[bytes]) -> Set[bytes]:
    return {line.split(b" ")[0] for line in lines}


def wait_for_numbers(collector: Collector, expected: Set[int], timeout: float = 15.0) -> None:
    """nginx logs after responding: wait until everything sent has been read, then a little longer for strays."""
    until(lambda: expected <= set(collector.numbers()), timeout, "the tailer to read every request")
    time.sleep(0.3)


def dead_log_fds(path: Path) -> List[str]:
    return [f.path for f in psutil.Process().open_files() if f.path.startswith(str(path)) and f.path.endswith("(deleted)")]


@pytest.mark.nginx
def test_rename_and_reopen_under_traffic_loses_and_repeats_nothing(counting_nginx: CountingNginx) -> None:
    log = counting_nginx.access_log
    rotations = 10
    with LogTailer(str(log)) as tailer, Collector(tailer) as collector:
        assert tailer.watching
        with NumberedClient(counting_nginx.ports["front"], threads=2) as client:
            client.wait_sent(50)
            for i in range(1, rotations + 1):
                time.sleep(0.1)
                os.rename(log, log.with_name(f"access.log.{i}"))
                counting_nginx.reopen(via_cli=i % 2 == 0)
                # The inherent limit: a file rotated away before the tailer ever saw it is never read.
                until(lambda: tailer.rotations == i, 5, f"the tailer to see rotation {i}")
            time.sleep(0.1)
        assert client.errors == []
        wait_for_numbers(collector, client.sent)
        numbers = collector.numbers()

    repeated = {n: c for n, c in collections.Counter(numbers).items() if c > 1}
    assert repeated == {}
    assert set(numbers) == client.sent
    assert len(numbers) == len(client.sent) > 100
    assert tailer.rotations == rotations and tailer.truncations == 0 and tailer.overlong == 0
    # The set-up did what it claims: both workers wrote, both reopened, nginx logged each request once.
    assert len(pids_in(collector.lines)) == 2
    assert counting_nginx.serious_errors() == []
    on_disk = [line for p in sorted(log.parent.glob("access.log*")) for line in p.read_bytes().splitlines()]
    assert sorted(numbers_in(on_disk)) == sorted(numbers)
    assert log.stat().st_size > 0


@dataclass
class Cut:
    """One copytruncate: where the tailer stood, the copy, and how long each step took."""

    position: int
    copy: bytes
    copy_ms: float
    total_ms: float  # copy start to truncate end: lines appended after the copy hit EOF are lost


@pytest.mark.nginx
@pytest.mark.parametrize("pause", [0.0, 0.02], ids=["logrotate-speed", "20ms-between-copy-and-truncate"])
def test_copytruncate_under_traffic_loses_only_the_copy_to_truncate_window(
        counting_nginx: CountingNginx, pause: float, capsys: pytest.CaptureFixture) -> None:
    log = counting_nginx.access_log
    cuts: List[Cut] = []
    with LogTailer(str(log)) as tailer, Collector(tailer) as collector:
        # One sequential client on one connection: log order is request order.
        with NumberedClient(counting_nginx.ports["front"], threads=1, per_connection=10**9) as client:
            for k in range(1, 6):
                # A big enough file that the refill cannot outgrow our offset before the tailer looks.
                until(lambda: tailer.position >= 30_000, 10, "the log to grow")
                copy = log.with_name(f"access.log.{k}")
                with collector.lock:  # the tailer stays at `position` until the truncate is done
                    position = tailer.position
                    t0 = time.perf_counter()
                    shutil.copyfile(log, copy)
                    t1 = time.perf_counter()
                    time.sleep(pause)
                    os.truncate(log, 0)
                    t2 = time.perf_counter()
                cuts.append(Cut(position, copy.read_bytes(), (t1 - t0) * 1e3, (t2 - t0) * 1e3))
                until(lambda: tailer.truncations == k, 5, f"the tailer to see truncation {k}")
            # Requests sent after the last truncate are logged after it: the last one must be read.
            client.wait_sent(len(client.sent) + 100)
        assert client.errors == []
        until(lambda: max(client.sent) in set(collector.numbers()), 15, "the last request")
        time.sleep(0.3)
        numbers = collector.numbers()

    assert len(set(numbers)) == len(numbers)
    assert numbers == sorted(numbers)
    assert tailer.truncations == 5 and tailer.rotations == 0
    seen = set(numbers)
    missed = client.sent - seen
    accounted: Set[int] = set()
    report = []
    for cut in cuts:
        copied = numbers_in(cut.copy.splitlines())
        # Lines the tailer had not read when the file was cut: still in the copy, after its position.
        unread = set(numbers_in(cut.copy[cut.position:].splitlines()))
        # Lines gone for good: logged after the copy, before the truncate (the file restarts after them).
        first_after = min(n for n in seen if n > max(copied))
        lost = set(range(max(copied) + 1, first_after))
        assert unread <= missed and lost <= missed
        accounted |= unread | lost
        report.append(f"  copy+truncate {cut.total_ms:.2f} ms (copy {cut.copy_ms:.2f} ms): "
                      f"{len(lost)} lines lost, {len(unread)} more only in the copy")
    assert missed == accounted
    with capsys.disabled():
        print(f"\ncopytruncate (pause {pause * 1e3:.0f} ms), {len(client.sent)} requests, {len(missed)} not read by the tailer:", *report, sep="\n")


@pytest.mark.nginx
def test_deleted_log_then_reopen_continues_with_the_new_file(counting_nginx: CountingNginx) -> None:
    log = counting_nginx.access_log
    with LogTailer(str(log), drain_seconds=0.5) as tailer, Collector(tailer) as collector:
        with NumberedClient(counting_nginx.ports["front"], threads=2) as client:
            client.wait_sent(200)
            os.unlink(log)
            sent_before = len(client.sent)
            client.wait_sent(sent_before + 200)  # logged into the deleted file
            assert not log.exists()
            counting_nginx.reopen()
            until(lambda: tailer.rotations == 1, 5, "the tailer to follow the new file")
            client.wait_sent(len(client.sent) + 200)
        assert client.errors == []
        wait_for_numbers(collector, client.sent)
        numbers = collector.numbers()
        # Quiet for drain_seconds: the deleted file is let go.
        until(lambda: dead_log_fds(log) == [], 5, "the deleted log to be closed")

    assert len(set(numbers)) == len(numbers)
    assert set(numbers) == client.sent
    in_new_file = set(numbers_in(log.read_bytes().splitlines()))
    assert in_new_file and in_new_file <= set(numbers)
    assert counting_nginx.serious_errors() == []


def test_files_rotated_away_between_two_reads_are_not_missed(tmp_path: Path) -> None:
    # Rotation faster than the reader polls: each file appears at the path and is renamed away
    # before read_lines() runs once. watchdog's thread opens each one as it appears.
    path = tmp_path / "access.log"
    path.write_bytes(b"")
    tailer = LogTailer(str(path), from_end=False, watch=True, watch_writes=False)
    try:
        assert tailer.watching
        sent = []
        for n in range(10):
            with open(path, "ab") as fh:
                for i in range(5):
                    line = f"file {n} line {i}".encode()
                    fh.write(line + b"\n")
                    sent.append(line)
            os.rename(path, tmp_path / f"access.log.{n}")
            path.write_bytes(b"")  # a new file at the path, as after nginx -s reopen
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # let watchdog's thread see the new file
                with tailer._watch._lock:
                    opened = len(tailer._watch._opened)
                if opened == n + 1:
                    break
                time.sleep(0.005)
        got = tailer.read_lines()
        assert got == sent
        assert tailer.rotations == 10
        assert tailer.read_lines() == []
    finally:
        tailer.close()
