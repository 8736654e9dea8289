"""Whole-file reading in blocks: plain and gzip, over-long lines dropped and counted."""

import gzip

import pytest

from nginx_canary.errors import BadInputError
from nginx_canary.logs.reader import block_batches


def collect(path, **kw):
    data, overlong = b"", 0
    for block, dropped in block_batches(str(path), **kw):
        assert block == b"" or block.endswith(b"\n")
        data += block
        overlong += dropped
    return data.split(b"\n")[:-1], overlong


def test_lines_across_chunk_boundaries(tmp_path):
    data = b"".join(b"line %d\n" % i for i in range(1000))
    (tmp_path / "a.log").write_bytes(data)
    lines, overlong = collect(tmp_path / "a.log", chunk_bytes=7)
    assert lines == [b"line %d" % i for i in range(1000)] and overlong == 0


def test_last_line_without_newline(tmp_path):
    (tmp_path / "a.log").write_bytes(b"one\ntwo")
    assert collect(tmp_path / "a.log") == ([b"one", b"two"], 0)


@pytest.mark.parametrize("chunk", [5, 64, 700])
def test_lines_longer_than_the_carry_limit_are_dropped_and_counted(tmp_path, chunk):
    data = b"a\n" + b"x" * 5000 + b"\nb\n" + b"y" * 300 + b"\nc\n" + b"z" * 3000
    (tmp_path / "a.log").write_bytes(data)
    assert collect(tmp_path / "a.log", chunk_bytes=chunk, max_line_bytes=1000) == ([b"a", b"b", b"y" * 300, b"c"], 2)


def test_memory_is_bounded_by_chunk_and_line_limit(tmp_path):
    (tmp_path / "a.log").write_bytes(b"ok\n" + b"x" * (3 << 20) + b"\nok\n")
    biggest = max(len(block) for block, _ in block_batches(str(tmp_path / "a.log"), chunk_bytes=1 << 16, max_line_bytes=1 << 12))
    assert biggest <= (1 << 16) + (1 << 12)


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
