"""Follow one access-log path across rotation and truncation; yield complete lines.

nginx appends each log line with one ``write()`` to a file opened with
``O_APPEND`` and keeps writing to the same open file until it is told to reopen
(USR1, ``nginx -s reopen``); each worker then reopens on its own schedule. So a
rotated file keeps growing for a while after a new file has appeared at the
path, and a line can be missed or counted twice only if the tailer confuses
the two. The tailer therefore tells files apart by ``(st_dev, st_ino)``, keeps
the old file open and drains it until it has been quiet for ``drain_seconds``,
and reads the new file from its first byte.

Known limits, all inherent to following a path:

* copytruncate loses the lines written between the copy and the truncate;
  nothing can read them back (they are neither in the copy nor in the file).
* A file created at the path and rotated away again between two
  ``read_lines()`` calls is seen only thanks to watchdog, whose thread opens
  each file as it appears (without watchdog, or if inotify drops the event,
  such a file is never seen).
* A truncated file that regrows past our offset before we look is caught by
  checking the byte before our offset (it must still be the byte we read
  there); a regrown file that happens to hold the same byte there is not.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from watchdog.events import (
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from nginx_canary.errors import LogReadError

_Identity = Tuple[int, int]

_NEWLINE = ord("\n")


@dataclass
class _OpenLog:
    """One open log file and how far into it we are."""

    fd: int
    identity: _Identity
    read_pos: int
    # Offset just past the last newline consumed: where a restart loses nothing.
    line_start: int
    # The byte at read_pos - 1 when we read it (None when read_pos is 0).
    last_byte: Optional[int]
    # Discarding up to the next newline (an over-long line, or the tail of a
    # line we started in the middle of).
    skipping: bool = False
    partial: bytearray = field(default_factory=bytearray)
    quiet_since: float = 0.0

    def restart(self) -> None:
        """Forget everything read: the file was truncated under us."""
        self.read_pos = self.line_start = 0
        self.last_byte = None
        self.skipping = False
        self.partial.clear()


class _Wakeup(FileSystemEventHandler):
    """Runs on watchdog's thread: sets an Event when our path changes, and opens a file created there.

    Opening at once, rather than at the next ``read_lines()``, is what keeps a
    file that is created and rotated away again between two reads (rotation
    faster than the reader polls) from being missed: the open descriptor
    follows the file wherever it is renamed.
    """

    def __init__(self, path: str, event: threading.Event, opened: Callable[[], None]) -> None:
        super().__init__()
        self._path = path
        self._event = event
        self._opened = opened

    def on_any_event(self, event: FileSystemEvent) -> None:
        created = event.event_type == "created" and os.fsdecode(event.src_path) == self._path
        moved_here = event.event_type == "moved" and os.fsdecode(event.dest_path) == self._path
        if created or moved_here:
            self._opened()
        if os.fsdecode(event.src_path) == self._path or os.fsdecode(event.dest_path) == self._path:
            self._event.set()


class LogTailer:
    """Follow ``path`` and return each line nginx wrote completely exactly once.

    Counters (plain ints, read them any time): ``rotations`` (switches to a new
    file at the path after a first one was followed), ``truncations``,
    ``overlong`` (lines longer than ``max_line_bytes``, discarded),
    ``unterminated`` (partial last lines of a rotated or deleted file that
    never got their newline before the file went quiet; discarded),
    ``bytes_read``, ``peak_buffered`` (largest partial line held, for memory
    checks), ``skipped_bytes`` and ``skips`` (:meth:`skip_to_end`).
    ``position`` is the offset in the current file just past the last
    line returned or discarded: a tailer started with ``offset=position`` on
    the same file neither loses nor repeats a line. ``error`` says why the
    path cannot be followed right now (None when it can); it is retried at
    every ``read_lines()``. ``watching`` is False when watchdog is not used.

    Call it from one thread; only watchdog's handler runs on another, and it
    just sets an Event.
    """

    def __init__(
        self,
        path: str,
        *,
        from_end: bool = True,
        offset: Optional[int] = None,
        max_line_bytes: int = 65536,
        drain_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        watch: bool = True,
        watch_writes: bool = True,
        chunk_bytes: int = 1 << 20,
        max_read_bytes: int = 16 << 20,
    ) -> None:
        """Open ``path`` (or wait for it) and start watching its directory.

        Starts at ``offset`` when given, else at the end of the file when
        ``from_end``, else at 0. When that start is in the middle of a line,
        the rest of that line is skipped; an offset past the end counts as a
        truncation (the file was cut or replaced since) and reading starts at
        0. A file that is missing now is read from 0 once it appears.
        ``watch_writes=False`` has watchdog report only rotations (create,
        move, delete), not every write: a caller that reads on its own timer
        (the daemon) would otherwise pay for one inotify event per line nginx
        writes, on watchdog's thread, for nothing. ``chunk_bytes`` is the size of one read; ``max_read_bytes`` bounds
        the bytes one ``read_lines()`` call reads (later calls read the rest).

        Raises:
            ValueError: a size or offset argument is out of range.
            LogReadError: the path exists but cannot be opened and read.
        """
        if max_line_bytes < 1 or chunk_bytes < 1 or max_read_bytes < 1 or drain_seconds < 0:
            raise ValueError("max_line_bytes, chunk_bytes, max_read_bytes must be positive, drain_seconds >= 0")
        if offset is not None and offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        self._path = os.path.abspath(path)
        self._max_line = max_line_bytes
        self._drain_seconds = drain_seconds
        self._clock = clock
        self._max_read = max_read_bytes
        self._chunk = bytearray(chunk_bytes)
        self._current: Optional[_OpenLog] = None
        self._draining: List[_OpenLog] = []
        self._more_pending = False
        self._closed = False
        self._wakeup = threading.Event()
        # Files watchdog's thread opened as they appeared at the path: (fd, identity), oldest first.
        self._early: List[Tuple[int, Tuple[int, int]]] = []
        self._early_lock = threading.Lock()
        self._observer: Optional[BaseObserver] = None

        self.rotations = 0
        self.truncations = 0
        self.overlong = 0
        self.unterminated = 0
        self.bytes_read = 0
        self.peak_buffered = 0
        self.skipped_bytes = 0
        self.skips = 0
        self.error: Optional[str] = None

        try:
            self._current = self._open(offset if offset is not None else (None if from_end else 0))
        except OSError as exc:
            raise LogReadError(f"cannot follow log: {exc.strerror or exc}", file=self._path) from exc
        # Only a switch away from a file we followed counts as a rotation; a
        # file missing now is read from 0 when it appears, like every later one.
        self._followed = self._current is not None
        self._watch_writes = watch_writes
        if watch:
            self._observer = self._start_observer()

    @property
    def watching(self) -> bool:
        """Whether watchdog wakes ``wait()`` (else it sleeps its full timeout)."""
        return self._observer is not None

    @property
    def position(self) -> int:
        """Offset in the current file just past the last line returned or discarded (0 without a file)."""
        return self._current.line_start if self._current is not None else 0

    @property
    def more_pending(self) -> bool:
        """Whether the last :meth:`read_lines` stopped at ``max_read_bytes`` with bytes left to read."""
        return self._more_pending

    def backlog(self) -> int:
        """Bytes written to the files followed (current and draining) and not read yet. Never raises."""
        total = 0
        for log in self._open_logs():
            try:
                total += max(0, os.fstat(log.fd).st_size - log.read_pos)
            except OSError:
                pass
        return total

    def skip_to_end(self) -> int:
        """Give up on everything written and not read yet: go on from the end of each file. Returns the bytes skipped.

        For a reader that fell too far behind (the lines read late are
        stamped late, so figures built from them describe the past). The line
        in progress at the old position is lost; reading resumes at the first
        line that starts after the new one. Raises ValueError when closed.
        """
        if self._closed:
            raise ValueError("skip_to_end() on a closed LogTailer")
        skipped = 0
        for log in self._open_logs():
            try:
                size = os.fstat(log.fd).st_size
                if size <= log.read_pos:
                    continue
                last = os.pread(log.fd, 1, size - 1)[0]
            except OSError:
                continue
            skipped += size - log.read_pos
            log.partial.clear()
            log.read_pos = log.line_start = size
            log.last_byte = last
            log.skipping = last != _NEWLINE
        if skipped:
            self.skipped_bytes += skipped
            self.skips += 1
        self._more_pending = False
        return skipped

    def _open_logs(self) -> List[_OpenLog]:
        return self._draining + ([self._current] if self._current is not None else [])

    def read_lines(self) -> List[bytes]:
        """Every complete line available now, in file order, without its ``b"\\n"``; never blocks.

        Lines of rotated (or deleted) files still being drained come first,
        oldest file first, then the current file's lines.

        Raises:
            ValueError: the tailer is closed.
        """
        if self._closed:
            raise ValueError("read_lines() on a closed LogTailer")
        self._check_path()
        out: List[bytes] = []
        budget = self._max_read
        now = self._clock()
        for log in list(self._draining):
            got = self._read_available(log, out, budget)
            budget -= got
            if got:
                log.quiet_since = now
            elif budget > 0 and now - log.quiet_since >= self._drain_seconds:
                self._draining.remove(log)
                self._release(log)
        if self._current is not None and budget > 0:
            budget -= self._read_available(self._current, out, budget)
        self._more_pending = budget <= 0
        return out

    def wait(self, timeout: float) -> None:
        """Block until our path changes (per watchdog) or ``timeout`` seconds pass.

        Returns at once when the last ``read_lines()`` left bytes unread.
        Without watchdog it just sleeps ``timeout``. Writes to a rotated file
        being drained do not wake it (watchdog reports them under the new
        name); they are read by the next call anyway.
        """
        if self._more_pending or self._closed:
            return
        # Also the plain sleep without watchdog: close() can cut it short.
        self._wakeup.wait(timeout)
        self._wakeup.clear()

    def close(self) -> None:
        """Stop watching and close every file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        for log in self._draining + ([self._current] if self._current is not None else []):
            os.close(log.fd)
        self._draining.clear()
        self._current = None
        with self._early_lock:
            for fd, _ in self._early:
                os.close(fd)
            self._early.clear()

    def __enter__(self) -> "LogTailer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start_observer(self) -> Optional[BaseObserver]:
        # inotify may be unavailable or out of watches, or the directory may
        # not exist yet: the stat in read_lines() does the job alone then.
        observer = Observer()
        try:
            observer.schedule(
                _Wakeup(self._path, self._wakeup, self._open_early),
                os.path.dirname(self._path),
                recursive=False,
                event_filter=([FileModifiedEvent] if self._watch_writes else [])
                + [FileCreatedEvent, FileMovedEvent, FileDeletedEvent],
            )
            observer.start()
        except OSError:
            return None
        return observer

    def _open(self, start: Optional[int]) -> Optional[_OpenLog]:
        """Open the path, positioned at ``start`` (None: its end); None if it does not exist.

        Raises:
            OSError: it exists but cannot be opened, or is not a regular file.
        """
        try:
            # O_NONBLOCK: a FIFO at the path must not hang us in open().
            fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            pos = st.st_size if start is None else start
            log = _OpenLog(fd, (st.st_dev, st.st_ino), pos, pos, None)
            if 0 < pos <= st.st_size:
                log.last_byte = os.pread(fd, 1, pos - 1)[0]
                log.skipping = log.last_byte != _NEWLINE
        except BaseException:
            os.close(fd)
            raise
        return log

    def _open_early(self) -> None:
        """On watchdog's thread: open what was just created at the path, to be taken up by ``_check_path``."""
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return  # gone already, or unreadable: the stat in read_lines() says what is there
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return
        with self._early_lock:
            if self._closed:
                os.close(fd)
                return
            self._early.append((fd, (st.st_dev, st.st_ino)))

    def _take_early(self) -> None:
        """Follow the files watchdog opened as they appeared, unless already followed (read from byte 0)."""
        with self._early_lock:
            early, self._early = self._early, []
        for fd, identity in early:
            known = [log.identity for log in self._draining]
            if self._current is not None:
                known.append(self._current.identity)
            if identity in known:
                os.close(fd)
                continue
            counted = self._current is not None or self._followed
            if self._current is not None:
                # A new file appeared at the path: ours was renamed or deleted before it. Its lines come first.
                self._current.quiet_since = self._clock()
                self._draining.append(self._current)
                self._current = None
            # Drained like a rotated file; _check_path makes it current if it is still at the path.
            self._draining.append(_OpenLog(fd, identity, 0, 0, None, quiet_since=self._clock()))
            if counted:
                self.rotations += 1
            self._followed = True

    def _check_path(self) -> None:
        """Notice a rotation, deletion or (re)creation at the path."""
        self._take_early()
        try:
            st: Optional[os.stat_result] = os.stat(self._path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        except OSError as exc:
            # Cannot tell what is at the path: keep reading what we have.
            self.error = f"cannot stat {self._path}: {exc.strerror or exc}"
            return
        current = self._current
        if current is not None and st is not None and current.identity == (st.st_dev, st.st_ino):
            self.error = None
            return
        if current is not None:
            # Renamed or deleted: nginx may write to it until every worker reopens.
            current.quiet_since = self._clock()
            self._draining.append(current)
            self._current = None
        if st is None:
            self.error = None
            return
        for log in self._draining:
            if log.identity == (st.st_dev, st.st_ino):
                # Opened by watchdog's thread as it appeared: already counted, read from byte 0.
                self._draining.remove(log)
                self._current = log
                self.error = None
                return
        try:
            new = self._open(0)
        except OSError as exc:
            self.error = f"cannot open {self._path}: {exc.strerror or exc}"
            return
        self.error = None
        if new is None:
            return
        if current is not None or self._followed:
            self.rotations += 1
        self._followed = True
        self._current = new

    def _read_available(self, log: _OpenLog, out: List[bytes], budget: int) -> int:
        """Append ``log``'s complete new lines to ``out``; return the bytes read (at most about ``budget``)."""
        size = os.fstat(log.fd).st_size
        if size < log.read_pos or (
            size > log.read_pos and log.last_byte is not None and os.pread(log.fd, 1, log.read_pos - 1)[0] != log.last_byte
        ):
            self.truncations += 1
            log.restart()
        got = 0
        while got < budget:
            n = os.preadv(log.fd, [self._chunk], log.read_pos)
            if n == 0:
                break
            log.read_pos += n
            log.last_byte = self._chunk[n - 1]
            got += n
            self._split(log, n, out)
        self.bytes_read += got
        return got

    def _split(self, log: _OpenLog, n: int, out: List[bytes]) -> None:
        """Cut the first ``n`` bytes of the chunk buffer into lines."""
        data = self._chunk
        base = log.read_pos - n
        start = 0
        if log.skipping:
            newline = data.find(b"\n", 0, n)
            if newline < 0:
                return
            log.skipping = False
            start = newline + 1
            log.line_start = base + start
        last = data.rfind(b"\n", start, n)
        if last >= start:
            lines = bytes(memoryview(data)[start:last]).split(b"\n")
            if log.partial:
                lines[0] = bytes(log.partial) + lines[0]
                log.partial.clear()
            if max(map(len, lines)) > self._max_line:
                kept = [line for line in lines if len(line) <= self._max_line]
                self.overlong += len(lines) - len(kept)
                lines = kept
            out.extend(lines)
            start = last + 1
            log.line_start = base + start
        if len(log.partial) + n - start > self._max_line:
            self.overlong += 1
            log.partial.clear()
            log.skipping = True
        else:
            log.partial += memoryview(data)[start:n]
            self.peak_buffered = max(self.peak_buffered, len(log.partial))

    def _release(self, log: _OpenLog) -> None:
        """Close a drained file; a partial last line in it will never be completed."""
        if log.partial:
            self.unterminated += 1
        os.close(log.fd)
