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


def block_batches(path: str, *, chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Tuple[bytes, int]]:
    """Yield ``(block, overlong)``: blocks of whole lines of ``path``, each line ending
    with ``\\n`` (one is added to a last line without it), and how many lines were
    dropped for being too long since the previous block.

    At most ``chunk_bytes + max_line_bytes`` are held at once: the partial line
    carried from one chunk to the next may grow to ``max_line_bytes``; a line
    longer than that is skipped up to its newline and counted as over-long.

    Raises:
        BadInputError: the file cannot be opened or is not valid gzip.
    """
    with _open(path) as fh:
        carry = b""
        skipping = False
        overlong = 0
        try:
            while True:
                chunk = fh.read(chunk_bytes)
                if not chunk:
                    break
                if skipping:
                    newline = chunk.find(b"\n")
                    if newline < 0:
                        continue
                    chunk = chunk[newline + 1:]
                    skipping = False
                    overlong += 1
                # The carry holds no newline: the block ends at the chunk's last one.
                # One copy per block (join takes the memoryview as it is).
                cut = chunk.rfind(b"\n") + 1
                if not cut:
                    block, carry = b"", carry + chunk
                elif carry:
                    block, carry = b"".join((carry, memoryview(chunk)[:cut])), chunk[cut:]
                else:
                    block, carry = (chunk, b"") if cut == len(chunk) else (chunk[:cut], chunk[cut:])
                if len(carry) > max_line_bytes:
                    carry, skipping = b"", True
                if block or overlong:
                    yield block, overlong
                    overlong = 0
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise BadInputError(f"cannot read log file {path}: {exc}") from exc
        if skipping:
            overlong += 1
        if carry or overlong:
            yield (carry + b"\n" if carry else b""), overlong
