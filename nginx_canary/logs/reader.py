"""Read whole log files (plain or gzip) in large batches of lines, with bounded memory."""

from __future__ import annotations

import gzip
from typing import BinaryIO, Iterator, List, Tuple

from nginx_canary.errors import BadInputError

CHUNK_BYTES = 8 << 20
MAX_LINE_BYTES = 64 << 10


def _open(path: str) -> BinaryIO:
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")
    except OSError as exc:
        raise BadInputError(f"cannot read log file {path}: {exc.strerror}") from exc


def line_batches(path: str, *, chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Tuple[List[bytes], int]]:
    """Yield ``(lines, overlong)`` batches of ``path``: lines without their newline,
    and how many lines longer than ``max_line_bytes`` were dropped from the batch.

    A last line without a newline is yielded too. Memory stays within about
    ``chunk_bytes + max_line_bytes`` whatever the file holds.

    Raises:
        BadInputError: the file cannot be opened or is not valid gzip.
    """
    with _open(path) as fh:
        carry = b""
        skipping = False
        try:
            while True:
                chunk = fh.read(chunk_bytes)
                if not chunk:
                    break
                lines = chunk.split(b"\n")
                overlong = 0
                if skipping:
                    if len(lines) == 1:
                        continue  # still inside the over-long line
                    lines.pop(0)  # the end of the over-long line
                    skipping = False
                    overlong += 1
                else:
                    lines[0] = carry + lines[0]
                carry = lines.pop()
                if len(carry) > max_line_bytes:
                    carry, skipping = b"", True
                if lines and max(map(len, lines)) > max_line_bytes:
                    kept = [line for line in lines if len(line) <= max_line_bytes]
                    overlong += len(lines) - len(kept)
                    lines = kept
                yield lines, overlong
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise BadInputError(f"cannot read log file {path}: {exc}") from exc
        if skipping:
            yield [], 1
        elif carry:
            yield [carry], 0
