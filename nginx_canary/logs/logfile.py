"""One open access-log file and how far into it we are; its new bytes cut into complete lines.

The pieces :class:`nginx_canary.logs.tail.LogTailer` follows a path with: a
file is known by ``(st_dev, st_ino)``, read with ``pread`` from where we left
it, and a truncation is noticed by the size shrinking below our offset or by
the byte before our offset no longer being the one we read there.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple, Union

from nginx_canary.logs.counting import Buffer

Identity = Tuple[int, int]

NEWLINE = ord("\n")

#: Takes a block of whole lines (bytes, or a view valid only during the call).
BlockSink = Callable[[Buffer], None]


@dataclass
class OpenLog:
    """One open log file and how far into it we are."""

    fd: int
    identity: Identity
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

    def unread(self) -> int:
        """Bytes written to the file and not read yet (0 when it cannot be stat'ed). Never raises."""
        try:
            return max(0, os.fstat(self.fd).st_size - self.read_pos)
        except OSError:
            return 0

    def skip_to_end(self) -> int:
        """Go on from the end of the file, dropping the line in progress; return the bytes skipped. Never raises."""
        try:
            size = os.fstat(self.fd).st_size
            if size <= self.read_pos:
                return 0
            last = os.pread(self.fd, 1, size - 1)[0]
        except OSError:
            return 0
        skipped = size - self.read_pos
        self.partial.clear()
        self.read_pos = self.line_start = size
        self.last_byte = last
        self.skipping = last != NEWLINE
        return skipped


def open_log(path: str, start: Optional[int]) -> Optional[OpenLog]:
    """Open ``path``, positioned at ``start`` (None: its end); None if it does not exist.

    A start in the middle of a line skips the rest of that line.

    Raises:
        OSError: it exists but cannot be opened, or is not a regular file.
    """
    try:
        # O_NONBLOCK: a FIFO at the path must not hang us in open().
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        pos = st.st_size if start is None else start
        log = OpenLog(fd, (st.st_dev, st.st_ino), pos, pos, None)
        if 0 < pos <= st.st_size:
            log.last_byte = os.pread(fd, 1, pos - 1)[0]
            log.skipping = log.last_byte != NEWLINE
    except BaseException:
        os.close(fd)
        raise
    return log


class LineReader:
    """Reads the complete new lines of open log files through one reusable chunk buffer.

    Counters (plain ints): ``truncations`` (files found cut under us, read
    again from 0), ``overlong`` (lines longer than ``max_line_bytes``,
    discarded), ``bytes_read``, ``peak_buffered`` (largest partial line held).
    """

    def __init__(self, max_line_bytes: int, chunk_bytes: int) -> None:
        self._max_line = max_line_bytes
        self._chunk = bytearray(chunk_bytes)
        self.truncations = 0
        self.overlong = 0
        self.bytes_read = 0
        self.peak_buffered = 0

    def read_available(self, log: OpenLog, sink: BlockSink, budget: int) -> int:
        """Hand ``log``'s complete new lines to ``sink`` in blocks (each line ending with ``\\n``);
        return the bytes read (at most about ``budget``).

        A block may be a view of the reader's buffer, valid only during the
        call: ``sink`` copies what it keeps.

        Raises:
            OSError: the file cannot be stat'ed or read.
        """
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
            self._cut(log, n, sink)
        self.bytes_read += got
        return got

    def _cut(self, log: OpenLog, n: int, sink: BlockSink) -> None:
        """Hand the complete lines in the first ``n`` bytes of the chunk buffer to ``sink``.

        The bulk goes as a view of the buffer, not as one bytes object per
        line or a copy: the counters walk blocks in C. Only a line begun in
        the previous chunk is put together as bytes of its own.
        """
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
            if log.partial:
                first = data.find(b"\n", start, n) + 1
                self._hand(bytes(log.partial) + memoryview(data)[start:first], 0, sink)
                log.partial.clear()
                start = first
            self._hand(data, start, sink, last + 1)
            start = last + 1
            log.line_start = base + start
        if len(log.partial) + n - start > self._max_line:
            self.overlong += 1
            log.partial.clear()
            log.skipping = True
        else:
            log.partial += memoryview(data)[start:n]
            self.peak_buffered = max(self.peak_buffered, len(log.partial))

    def _hand(self, data: Union[bytes, bytearray], start: int, sink: BlockSink, end: Optional[int] = None) -> None:
        """Give ``sink`` the lines of ``data[start:end]`` that are not over-long, counting those that are."""
        end = len(data) if end is None else end
        if start >= end:
            return
        if fits(data, start, end, self._max_line):
            sink(memoryview(data)[start:end])
            return
        lines = bytes(memoryview(data)[start:end]).split(b"\n")
        lines.pop()
        kept = [line for line in lines if len(line) <= self._max_line]
        self.overlong += len(lines) - len(kept)
        if kept:
            sink(b"".join(line + b"\n" for line in kept))


def fits(data: Union[bytes, bytearray], start: int, end: int, max_line: int) -> bool:
    """Whether no line of ``data[start:end]`` (whole lines, each ending with ``\\n``) is longer than ``max_line``.

    Looks for a newline in each stretch of ``max_line + 1`` bytes from a
    line's start, from the right: one search per ``max_line`` bytes, so a
    block whose lines all fit costs next to nothing.
    """
    at = start
    while end - at > max_line:
        newline = data.rfind(b"\n", at, at + max_line + 1)
        if newline < 0:
            return False
        at = newline + 1
    return True


class LineCollector:
    """A :data:`BlockSink` that keeps the lines it is given, without their ``\\n``."""

    def __init__(self) -> None:
        self.lines: List[bytes] = []

    def __call__(self, block: Buffer) -> None:
        self.lines.extend(bytes(block).split(b"\n")[:-1])
