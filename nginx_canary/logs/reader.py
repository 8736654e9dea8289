"""Read whole log files (plain or gzip) in large blocks of complete lines, with bounded memory."""

from __future__ import annotations

import gzip
from typing import BinaryIO, Iterator, Tuple

from nginx_canary.errors import BadInputError

CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 64 << 10


def _open(path: str) -> BinaryIO:
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")
    except OSError as exc:
        raise BadInputError(f"cannot read log file {path}: {exc.strerror}") from exc


def block_views(path: str, *, chunk_bytes: int = CHUNK_BYTES,
                max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Tuple[memoryview, int]]:
    """Yield ``(block, overlong)``: blocks of whole lines of ``path``, each line ending
    with ``\\n`` (one is added to a last line without it), and how many lines were
    dropped for being too long since the previous block.

    Each block is a view of one buffer that is read into again for the next
    block: it is valid only until the iteration goes on (copy it to keep it).
    Reading into the same buffer spares a copy of every block and the page
    faults of a fresh allocation per read, which cost as much as the walk.
    At most ``chunk_bytes + max_line_bytes`` are held: the partial line
    carried from one read to the next may grow to ``max_line_bytes``; a line
    longer than that is skipped up to its newline and counted as over-long.

    Raises:
        BadInputError: the file cannot be opened or is not valid gzip.
    """
    buf = bytearray(chunk_bytes + max_line_bytes)
    view = memoryview(buf)
    carry = 0  # bytes of a partial line at the start of buf
    skipping = False
    overlong = 0
    with _open(path) as fh:
        try:
            while True:
                read = fh.readinto(view[carry:carry + chunk_bytes])
                if not read:
                    break
                end = carry + read
                begin = 0
                if skipping:  # carry is 0: the over-long line goes on up to its newline
                    newline = buf.find(b"\n", 0, end)
                    if newline < 0:
                        continue
                    begin, skipping = newline + 1, False
                    overlong += 1
                cut = buf.rfind(b"\n", begin, end) + 1 or begin
                carry = end - cut
                if carry > max_line_bytes:
                    carry, skipping = 0, True
                if cut > begin or overlong:
                    yield view[begin:cut], overlong
                    overlong = 0
                if carry:
                    buf[:carry] = buf[cut:cut + carry]
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise BadInputError(f"cannot read log file {path}: {exc}") from exc
    if skipping:
        overlong += 1
    if carry or overlong:
        yield memoryview(view[:carry].tobytes() + b"\n" if carry else b""), overlong


def block_batches(path: str, *, chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Tuple[bytes, int]]:
    """:func:`block_views`, each block copied into ``bytes`` of its own (kept as long as wanted).

    Raises:
        BadInputError: the file cannot be opened or is not valid gzip.
    """
    for block, overlong in block_views(path, chunk_bytes=chunk_bytes, max_line_bytes=max_line_bytes):
        yield block.tobytes(), overlong
