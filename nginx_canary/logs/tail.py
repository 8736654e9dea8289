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

import os
import time
from typing import Callable, List, Optional

from nginx_canary.errors import LogReadError
from nginx_canary.logs.logfile import BlockSink, LineCollector, LineReader, OpenLog, open_log
from nginx_canary.logs.path_watch import PathWatch


class LogTailer(LineReader):
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

    Lines are cut from each file's new bytes by :class:`LineReader`, whose
    counters these are; watchdog is wired by :class:`PathWatch`. Call it from
    one thread; only watchdog's handler runs on another, and it just sets an
    Event and opens the files that appear at the path.
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
        self._drain_seconds = drain_seconds
        self._clock = clock
        self._max_read = max_read_bytes
        super().__init__(max_line_bytes, chunk_bytes)
        self._current: Optional[OpenLog] = None
        self._draining: List[OpenLog] = []
        self._more_pending = False
        self._closed = False

        self.rotations = 0
        self.unterminated = 0
        self.skipped_bytes = 0
        self.skips = 0
        self.error: Optional[str] = None

        try:
            self._current = open_log(self._path, offset if offset is not None else (None if from_end else 0))
        except OSError as exc:
            raise LogReadError(f"cannot follow log: {exc.strerror or exc}", file=self._path) from exc
        # Only a switch away from a file we followed counts as a rotation; a
        # file missing now is read from 0 when it appears, like every later one.
        self._followed = self._current is not None
        self._watch = PathWatch(self._path, watch=watch, watch_writes=watch_writes)

    @property
    def watching(self) -> bool:
        """Whether watchdog wakes ``wait()`` (else it sleeps its full timeout)."""
        return self._watch.watching

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
        return sum(log.unread() for log in self._open_logs())

    def skip_to_end(self) -> int:
        """Give up on everything written and not read yet: go on from the end of each file. Returns the bytes skipped.

        For a reader that fell too far behind (the lines read late are
        stamped late, so figures built from them describe the past). The line
        in progress at the old position is lost; reading resumes at the first
        line that starts after the new one. Raises ValueError when closed.
        """
        if self._closed:
            raise ValueError("skip_to_end() on a closed LogTailer")
        skipped = sum(log.skip_to_end() for log in self._open_logs())
        if skipped:
            self.skipped_bytes += skipped
            self.skips += 1
        self._more_pending = False
        return skipped

    def _open_logs(self) -> List[OpenLog]:
        return self._draining + ([self._current] if self._current is not None else [])

    def read_lines(self) -> List[bytes]:
        """Every complete line available now, in file order, without its ``b"\\n"``; never blocks.

        Lines of rotated (or deleted) files still being drained come first,
        oldest file first, then the current file's lines.

        Raises:
            ValueError: the tailer is closed.
        """
        collector = LineCollector()
        self.read_blocks(collector)
        return collector.lines

    def read_blocks(self, sink: BlockSink) -> None:
        """Hand :meth:`read_lines`'s lines to ``sink`` in blocks of whole lines, each ending with ``b"\\n"``.

        A block may be a view of the reader's buffer, valid only during the
        call (see :meth:`LineReader.read_available`); never blocks.

        Raises:
            ValueError: the tailer is closed.
        """
        if self._closed:
            raise ValueError("read_blocks() on a closed LogTailer")
        self._check_path()
        budget = self._max_read
        now = self._clock()
        for log in list(self._draining):
            got = self.read_available(log, sink, budget)
            budget -= got
            if got:
                log.quiet_since = now
            elif budget > 0 and now - log.quiet_since >= self._drain_seconds:
                self._draining.remove(log)
                self._release(log)
        if self._current is not None and budget > 0:
            budget -= self.read_available(self._current, sink, budget)
        self._more_pending = budget <= 0

    def wait(self, timeout: float) -> None:
        """Block until our path changes (per watchdog) or ``timeout`` seconds pass.

        Returns at once when the last ``read_lines()`` left bytes unread.
        Without watchdog it just sleeps ``timeout``. Writes to a rotated file
        being drained do not wake it (watchdog reports them under the new
        name); they are read by the next call anyway.
        """
        if self._more_pending or self._closed:
            return
        self._watch.wait(timeout)

    def close(self) -> None:
        """Stop watching and close every file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._watch.close()
        for log in self._open_logs():
            os.close(log.fd)
        self._draining.clear()
        self._current = None

    def __enter__(self) -> "LogTailer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _take_opened(self) -> None:
        """Follow the files watchdog opened as they appeared, unless already followed (read from byte 0)."""
        for opened in self._watch.take_opened():
            known = [log.identity for log in self._draining]
            if self._current is not None:
                known.append(self._current.identity)
            if opened.identity in known:
                os.close(opened.fd)
                continue
            counted = self._current is not None or self._followed
            if self._current is not None:
                # A new file appeared at the path: ours was renamed or deleted before it. Its lines come first.
                self._current.quiet_since = self._clock()
                self._draining.append(self._current)
                self._current = None
            # Drained like a rotated file; _check_path makes it current if it is still at the path.
            opened.quiet_since = self._clock()
            self._draining.append(opened)
            if counted:
                self.rotations += 1
            self._followed = True

    def _check_path(self) -> None:
        """Notice a rotation, deletion or (re)creation at the path."""
        self._take_opened()
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
            new = open_log(self._path, 0)
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

    def _release(self, log: OpenLog) -> None:
        """Close a drained file; a partial last line in it will never be completed."""
        if log.partial:
            self.unterminated += 1
        os.close(log.fd)
