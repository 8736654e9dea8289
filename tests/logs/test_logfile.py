"""One open log file: where reading starts, lines cut from new bytes, truncation, skipping to the end."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import List, Tuple

import pytest

from nginx_canary.logs.logfile import LineCollector, LineReader, fits, open_log


def test_open_log_missing_is_none_and_a_directory_is_refused(tmp_path: Path) -> None:
    assert open_log(str(tmp_path / "absent.log"), 0) is None
    with pytest.raises(OSError):
        open_log(str(tmp_path), 0)


def test_a_start_in_the_middle_of_a_line_skips_to_the_next(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(b"one\ntwo\nthr")
    log = open_log(str(path), 5)
    assert log is not None
    try:
        reader = LineReader(max_line_bytes=100, chunk_bytes=4)
        out = LineCollector()
        assert reader.read_available(log, out, 1 << 20) == 6
        assert out.lines == [] and log.line_start == 8 and bytes(log.partial) == b"thr"
        with open(path, "ab") as fh:
            fh.write(b"ee\nfour\n")
        reader.read_available(log, out, 1 << 20)
        assert out.lines == [b"three", b"four"] and reader.bytes_read == 14 and reader.peak_buffered == 3
    finally:
        os.close(log.fd)


def test_overlong_lines_and_truncation_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(b"ok\n" + b"x" * 50 + b"\nfine\n")
    log = open_log(str(path), 0)
    assert log is not None
    try:
        reader = LineReader(max_line_bytes=10, chunk_bytes=8)
        out = LineCollector()
        reader.read_available(log, out, 1 << 20)
        assert out.lines == [b"ok", b"fine"] and reader.overlong == 1
        path.write_bytes(b"new\n")  # cut and rewritten under us
        out.lines.clear()
        reader.read_available(log, out, 1 << 20)
        assert out.lines == [b"new"] and reader.truncations == 1
    finally:
        os.close(log.fd)


def test_unread_and_skip_to_end(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(b"")
    log = open_log(str(path), None)
    assert log is not None
    try:
        path.write_bytes(b"a\nhalf")
        assert log.unread() == 6
        assert log.skip_to_end() == 6
        assert log.unread() == 0 and log.skip_to_end() == 0
        assert log.skipping  # "half" is dropped up to its newline
    finally:
        os.close(log.fd)


def read_all(path: Path, max_line: int, chunk: int) -> Tuple[List[bytes], int]:
    log = open_log(str(path), 0)
    assert log is not None
    try:
        reader = LineReader(max_line_bytes=max_line, chunk_bytes=chunk)
        out = LineCollector()
        reader.read_available(log, out, 1 << 30)
        return out.lines, reader.overlong
    finally:
        os.close(log.fd)


@pytest.mark.parametrize("lines", [
    [b"a" * 10, b"b" * 10, b"c" * 3],
    [b"a" * 11, b"b"],
    [b"a", b"b" * 11],
    [b"x" * 25, b"y" * 10, b"z" * 12, b"", b"w" * 10],
    [b"q" * 9] * 40,
    [b"r" * 10] * 7 + [b"s" * 40] + [b"t" * 10] * 7,
])
@pytest.mark.parametrize("chunk", [4, 16, 64, 1 << 16])
def test_exactly_the_lines_that_fit_are_handed_on(tmp_path: Path, lines: List[bytes], chunk: int) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    assert read_all(path, 10, chunk) == ([line for line in lines if len(line) <= 10], sum(len(line) > 10 for line in lines))


def test_blocks_agree_with_splitting_on_random_files(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "access.log"
    for _ in range(200):
        lines = [b"v" * rng.choice([0, 1, 5, 15, 16, 17, 40]) for _ in range(rng.randint(1, 40))]
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        got = read_all(path, 16, rng.choice([3, 8, 17, 64, 4096]))
        assert got == ([line for line in lines if len(line) <= 16], sum(len(line) > 16 for line in lines))


def test_fits_looks_at_every_line() -> None:
    block = b"a" * 10 + b"\n" + b"b" * 5 + b"\n"
    assert fits(block, 0, len(block), 10) and not fits(block, 0, len(block), 9)
    assert fits(block, 11, len(block), 5) and not fits(block, 11, len(block), 4)
    assert fits(b"", 0, 0, 0)
