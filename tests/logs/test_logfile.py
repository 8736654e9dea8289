"""One open log file: where reading starts, lines cut from new bytes, truncation, skipping to the end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest

from nginx_canary.logs.logfile import LineReader, open_log


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
        out: List[bytes] = []
        assert reader.read_available(log, out, 1 << 20) == 6
        assert out == [] and log.line_start == 8 and bytes(log.partial) == b"thr"
        with open(path, "ab") as fh:
            fh.write(b"ee\nfour\n")
        reader.read_available(log, out, 1 << 20)
        assert out == [b"three", b"four"] and reader.bytes_read == 14 and reader.peak_buffered == 3
    finally:
        os.close(log.fd)


def test_overlong_lines_and_truncation_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(b"ok\n" + b"x" * 50 + b"\nfine\n")
    log = open_log(str(path), 0)
    assert log is not None
    try:
        reader = LineReader(max_line_bytes=10, chunk_bytes=8)
        out: List[bytes] = []
        reader.read_available(log, out, 1 << 20)
        assert out == [b"ok", b"fine"] and reader.overlong == 1
        path.write_bytes(b"new\n")  # cut and rewritten under us
        out.clear()
        reader.read_available(log, out, 1 << 20)
        assert out == [b"new"] and reader.truncations == 1
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
