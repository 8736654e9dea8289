"""Whole-file reading in batches: plain and gzip, over-long lines dropped and counted."""

import gzip

import pytest

from nginx_canary.errors import BadInputError
from nginx_canary.logs.reader import line_batches


def collect(path, **kw):
    lines, overlong = [], 0
    for batch, dropped in line_batches(str(path), **kw):
        lines.extend(batch)
        overlong += dropped
    return lines, overlong


def test_lines_across_chunk_boundaries(tmp_path):
    data = b"".join(b"line %d\n" % i for i in range(1000))
    (tmp_path / "a.log").write_bytes(data)
    lines, overlong = collect(tmp_path / "a.log", chunk_bytes=7)
    assert lines == [b"line %d" % i for i in range(1000)] and overlong == 0


def test_last_line_without_newline(tmp_path):
    (tmp_path / "a.log").write_bytes(b"one\ntwo")
    assert collect(tmp_path / "a.log") == ([b"one", b"two"], 0)


@pytest.mark.parametrize("chunk", [5, 64, 1 << 20])
def test_overlong_lines_are_dropped_and_counted(tmp_path, chunk):
    data = b"a\n" + b"x" * 5000 + b"\nb\n" + b"y" * 300 + b"\nc\n" + b"z" * 3000
    (tmp_path / "a.log").write_bytes(data)
    assert collect(tmp_path / "a.log", chunk_bytes=chunk, max_line_bytes=1000) == ([b"a", b"b", b"y" * 300, b"c"], 2)


def test_gzip(tmp_path):
    with gzip.open(tmp_path / "a.log.1.gz", "wb") as fh:
        fh.write(b"one\ntwo\n")
    assert collect(tmp_path / "a.log.1.gz") == ([b"one", b"two"], 0)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(BadInputError, match="cannot read log file"):
        collect(tmp_path / "none.log")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(BadInputError, match="cannot read log file"):
        collect(tmp_path / "bad.gz")
