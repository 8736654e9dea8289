"""Counting raw field tuples: the C accelerator against the pure-Python reference, and the choice between them."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import sysconfig
import tracemalloc
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from nginx_canary.errors import LogFormatError
from nginx_canary.logs import counting
from nginx_canary.logs.counting import PURE_PYTHON_ENV, PyFieldCounter, accelerator_available, field_counter
from nginx_canary.logs.format import CANARY_FORMAT, COMBINED, CompiledFormat, FormatSpec, compile_format

C_SOURCE = Path(counting.__file__).with_name("_fieldcount.c")
REQUIRED = os.environ.get("NGINX_CANARY_REQUIRE_NGINX") == "1"
NAMES = ["upstream_addr", "upstream_status", "upstream_response_time"]


def fmt(pattern: str, escape: str = "default") -> CompiledFormat:
    return compile_format(FormatSpec("t", pattern, escape))


def need_accelerator() -> Any:
    """The C module; CI (NGINX_CANARY_REQUIRE_NGINX=1) fails without it, elsewhere the test is skipped."""
    if not accelerator_available():
        message = f"the C accelerator nginx_canary.logs._fieldcount is not built: {counting.ACCELERATOR_ERROR}"
        if REQUIRED:
            pytest.fail(message + " (pip install -e . needs gcc and the Python headers)")
        pytest.skip(message)
    return counting._fieldcount


@pytest.fixture
def accelerator() -> Any:
    """need_accelerator() once per test, before hypothesis draws any example."""
    return need_accelerator()


def both(compiled: CompiledFormat, names: Sequence[str]) -> Tuple[Any, PyFieldCounter]:
    need_accelerator()
    return field_counter(compiled, names, accelerated=True), PyFieldCounter(compiled, names)


def canary_line(addr: bytes = b"10.0.0.1:80", status: bytes = b"200", seconds: bytes = b"0.012") -> bytes:
    return b"\t".join([b"1732764000.123", addr, status, status, seconds, seconds, b"192.0.2.1", b"GET",
                       b"example.com", b"/", b"0.000", b"ab12", b"app"])


# --- the accelerator is there, and is what the analyzer uses ---


def test_accelerator_is_built() -> None:
    """Fails (not skips) in CI: `make test` must run the fast path it ships."""
    module = need_accelerator()
    assert module.FieldCounter.__module__ == "nginx_canary.logs._fieldcount"


def test_split_and_walk_formats_get_the_accelerator_others_python(monkeypatch: pytest.MonkeyPatch) -> None:
    module = need_accelerator()
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    assert isinstance(field_counter(fmt(CANARY_FORMAT), NAMES), module.FieldCounter)
    combined = fmt(COMBINED + ' "$upstream_addr" $upstream_status $upstream_response_time')
    assert isinstance(field_counter(combined, NAMES), module.WalkCounter)
    assert isinstance(field_counter(combined, NAMES, accelerated=False), PyFieldCounter)
    no_walk = fmt("$remote_addr$upstream_addr $upstream_status $upstream_response_time")  # two values side by side
    assert isinstance(field_counter(no_walk, NAMES), PyFieldCounter)
    assert isinstance(field_counter(fmt(CANARY_FORMAT), NAMES, accelerated=False), PyFieldCounter)
    with pytest.raises(RuntimeError, match="no split layout or walk"):
        field_counter(no_walk, NAMES, accelerated=True)
    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    assert isinstance(field_counter(fmt(CANARY_FORMAT), NAMES), PyFieldCounter)


def test_without_the_accelerator_python_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting, "_fieldcount", None)
    monkeypatch.setattr(counting, "ACCELERATOR_ERROR", "No module named 'nginx_canary.logs._fieldcount'")
    assert not accelerator_available()
    assert isinstance(field_counter(fmt(CANARY_FORMAT), NAMES), PyFieldCounter)
    with pytest.raises(RuntimeError, match="not built"):
        field_counter(fmt(CANARY_FORMAT), NAMES, accelerated=True)


def test_unknown_names_are_refused_by_both() -> None:
    with pytest.raises(LogFormatError, match=r"\$nope"):
        field_counter(fmt(CANARY_FORMAT), ["status", "nope"])
    with pytest.raises(LogFormatError, match=r"\$nope"):
        PyFieldCounter(fmt(CANARY_FORMAT), ["nope"])


# --- the C counter on its own ---


def test_counts_in_order_of_first_appearance() -> None:
    fast, slow = both(fmt(CANARY_FORMAT), NAMES)
    lines = [canary_line(b"b:1"), canary_line(b"a:1"), canary_line(b"b:1"), b"junk", canary_line(b"a:1", b"502"), b""]
    block = b"\n".join(lines) + b"\n"
    for counter in (fast, slow):
        assert counter.feed_block(block) == (6, 2)
        assert counter.items() == [((b"b:1", b"200", b"0.012"), 2), ((b"a:1", b"200", b"0.012"), 1),
                                   ((b"a:1", b"502", b"0.012"), 1)]
        assert len(counter) == 3
        counter.clear()
        assert counter.items() == [] and len(counter) == 0


def test_block_bytes_after_the_last_newline_are_ignored() -> None:
    fast, slow = both(fmt(CANARY_FORMAT), NAMES)
    for counter in (fast, slow):
        assert counter.feed_block(canary_line() + b"\n" + canary_line(b"x:1")) == (1, 0)
        assert counter.feed_block(b"") == (0, 0)
        assert counter.feed_block(canary_line()) == (0, 0)
        assert counter.items() == [((b"10.0.0.1:80", b"200", b"0.012"), 1)]


def test_carriage_returns_and_newlines_as_python_treats_them() -> None:
    # last field wanted: one "\n" then one "\r" come off; otherwise they stay in the last field
    last = fmt("$upstream_addr\t$upstream_status\t$upstream_response_time")
    fast, slow = both(last, NAMES)
    lines = [b"a:1\t200\t0.1\r", b"a:1\t200\t0.1\r\n", b"a:1\t200\t0.1\n", b"a:1\t200\t0.1\r\r\n", b"a:1\t200\t0.1\n\n"]
    for counter in (fast, slow):
        assert counter.feed_lines(lines) == 0
        assert counter.feed_block(b"a:1\t200\t0.1\r\n\r\n") == (2, 1)
    assert fast.items() == slow.items()
    assert fast.items() == [((b"a:1", b"200", b"0.1"), 4), ((b"a:1", b"200", b"0.1\r"), 1),
                            ((b"a:1", b"200", b"0.1\n"), 1)]
    not_last = fmt("$upstream_addr\t$upstream_status\t$upstream_response_time\t$request_id")
    fast, slow = both(not_last, NAMES)
    for counter in (fast, slow):
        assert counter.feed_lines([b"a:1\t200\t0.1\tx\r\n", b"a:1\t200\t0.1\r\tx"]) == 0
    assert fast.items() == slow.items() == [((b"a:1", b"200", b"0.1"), 1), ((b"a:1", b"200", b"0.1\r"), 1)]


def test_prefix_and_suffix_frame_the_line() -> None:
    framed = fmt("[$upstream_addr\t$upstream_status\t$upstream_response_time] end")
    fast, slow = both(framed, NAMES)
    lines = [b"[a:1\t200\t0.1] end", b"a:1\t200\t0.1] end", b"[a:1\t200\t0.1] en", b"[a:1\t200\t0.1] end\r",
             b"[\t\t] end", b"[\t\t]end", b"\t\t", b"[a\t200\t0.1] end] end"]
    for counter in (fast, slow):
        assert counter.feed_lines(lines) == 4
    assert fast.items() == slow.items() == [((b"a:1", b"200", b"0.1"), 2), ((b"", b"", b""), 1),
                                            ((b"a", b"200", b"0.1] end"), 1)]


def test_separator_counts_must_be_exact() -> None:
    fast, slow = both(fmt(CANARY_FORMAT), NAMES)
    good = canary_line()
    for counter in (fast, slow):
        assert counter.feed_lines([good, good + b"\t", good.replace(b"\t", b" ", 1), b"\t" * 11, b"\t" * 12]) == 3
    assert fast.items() == slow.items() == [((b"10.0.0.1:80", b"200", b"0.012"), 1), ((b"", b"", b""), 1)]


def test_repeated_and_reordered_fields_and_no_fields() -> None:
    compiled = fmt(CANARY_FORMAT)
    for names in (["status", "upstream_addr", "status"], ["request_id"], ["msec"], []):
        fast, slow = both(compiled, names)
        lines = [canary_line(), canary_line(b"x:2"), b"bad", canary_line()]
        for counter in (fast, slow):
            assert counter.feed_lines(lines) == 1
        assert fast.items() == slow.items()


def test_binary_junk_long_lines_and_many_keys() -> None:
    fast, slow = both(fmt(CANARY_FORMAT), NAMES)
    huge = canary_line(b"h" * (3 << 20))
    junk = bytes(range(256)) * 3
    nul = canary_line(b"a\x00b", b"2\x000")
    many = [canary_line(b"10.0.%d.%d:80" % (i // 256, i % 256), seconds=b"0.%03d" % (i % 997)) for i in range(70_000)]
    block = b"\n".join([huge, junk, nul, *many, huge]) + b"\n"
    assert fast.feed_block(block) == slow.feed_block(block)
    assert fast.items() == slow.items()
    assert len(fast) == 70_002
    assert fast.key_bytes == sum(len(b"".join(key)) for key, _ in fast.items())
    fast.clear()  # tables this large are given back
    assert len(fast) == 0 and fast.key_bytes == 0
    assert fast.feed_block(canary_line() + b"\n") == (1, 0)
    assert fast.items() == [((b"10.0.0.1:80", b"200", b"0.012"), 1)]


def test_feed_lines_type_errors_count_nothing() -> None:
    fast, slow = both(fmt(CANARY_FORMAT), NAMES)
    counter: Any
    for counter in (fast, slow):
        with pytest.raises(TypeError):
            counter.feed_lines([canary_line(), "text"])
        with pytest.raises(TypeError):
            counter.feed_lines([canary_line(), bytearray(canary_line())])
        with pytest.raises(TypeError):
            counter.feed_block((canary_line() + b"\n").decode())
        with pytest.raises(TypeError):
            counter.feed_lines(5)
        assert counter.items() == []
    assert fast.feed_lines((canary_line(),)) == 0  # any sequence will do
    assert fast.feed_lines(iter([canary_line()])) == 0


def test_constructor_checks() -> None:
    module = need_accelerator()
    FieldCounter = module.FieldCounter
    for bad in ((b"", 3, [0], b"", b""), (b"\t\t", 3, [0], b"", b""), (b"\n", 3, [0], b"", b""),
                (b"\r", 3, [0], b"", b""), (b"\t", 0, [], b"", b""), (b"\t", 3, [3], b"", b""),
                (b"\t", 3, [-1], b"", b""), (b"\t", 3, [0], b"[\t", b""), (b"\t", 3, [0], b"", b"\t]")):
        with pytest.raises(ValueError):
            FieldCounter(*bad)
    with pytest.raises(TypeError):
        FieldCounter(b"\t", 3, [0], "[", b"")
    with pytest.raises(TypeError):
        FieldCounter(b"\t", 3, 7, b"", b"")
    with pytest.raises(OverflowError):
        FieldCounter(b"\t", 3, [2**80], b"", b"")
    counter = FieldCounter(sep=b"\t", fields=2, wanted=(1,), prefix=b"", suffix=b"")
    with pytest.raises(TypeError, match="once"):
        counter.__init__(b"\t", 2, (0,), b"", b"")
    bare = FieldCounter.__new__(FieldCounter)
    with pytest.raises(ValueError, match="not initialised"):
        bare.feed_block(b"a\tb\n")
    with pytest.raises(ValueError, match="not initialised"):
        bare.feed_lines([b"a\tb"])
    assert bare.items() == [] and len(bare) == 0


def test_no_references_or_memory_leak() -> None:
    module = need_accelerator()
    prefix, suffix = b"<" + os.urandom(4).hex().encode(), b">" + os.urandom(4).hex().encode()
    before = sys.getrefcount(prefix), sys.getrefcount(suffix)
    block = b"".join(prefix + b"%d\t%d\tx" % (i % 50, i % 7) + suffix + b"\n" for i in range(5000))

    def cycle() -> None:
        counter = module.FieldCounter(b"\t", 3, [0, 1], prefix, suffix)
        counter.feed_block(block)
        counter.feed_lines(block.split(b"\n"))
        assert len(counter.items()) == 350
        counter.clear()
        with pytest.raises(TypeError):
            counter.feed_lines([b"x", 1])

    cycle()
    gc.collect()
    tracemalloc.start()
    try:
        cycle()
        gc.collect()
        first = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            cycle()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - first
    finally:
        tracemalloc.stop()
    assert grown < 64 << 10, f"{grown} bytes more after 200 cycles"
    assert (sys.getrefcount(prefix), sys.getrefcount(suffix)) == before


def test_c_source_compiles_without_warnings(tmp_path: Path) -> None:
    """-Wall -Wextra -Werror, as setup.py builds it (less -Werror)."""
    need_accelerator()
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        if REQUIRED:
            pytest.fail("no C compiler found, yet the accelerator must be built")
        pytest.skip("no C compiler")
    include = sysconfig.get_paths()["include"]
    done = subprocess.run([cc, "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-c", f"-I{include}", str(C_SOURCE),
                           "-o", str(tmp_path / "fieldcount.o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# --- property: the C counter gives what the reference gives, whatever the bytes ---

SEPARATORS = [b"\t", b"\x1f", b"\x01"]
VARIABLES = ["upstream_addr", "upstream_status", "upstream_response_time", "status", "request_time", "msec",
             "remote_addr", "request_id", "uri", "host"]
VALUE_BYTES = st.sampled_from([b"a", b"9", b"-", b".", b":", b" ", b",", b", ", b" : ", b"\\x22", b"\r", b"\x00",
                               b"\xff", b"\t", b"\x1f", b"\x01", b"[", b"]", b"\xc3\xa9"])


@st.composite
def split_case(draw: st.DrawFn) -> Tuple[CompiledFormat, List[str], List[bytes]]:
    sep = draw(st.sampled_from(SEPARATORS))
    variables = draw(st.lists(st.sampled_from(VARIABLES), min_size=2, max_size=7, unique=True))
    prefix = draw(st.sampled_from(["", "[", "x="]))
    suffix = draw(st.sampled_from(["", "]", " end", "\r"]))
    pattern = prefix + sep.decode().join("$" + v for v in variables) + suffix
    compiled = fmt(pattern, draw(st.sampled_from(["default", "json"])))
    names = draw(st.lists(st.sampled_from(variables), max_size=4))
    lines = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(st.binary(max_size=40)))
            continue
        fields = draw(st.lists(st.lists(VALUE_BYTES, max_size=5).map(b"".join), min_size=len(variables) - 1,
                               max_size=len(variables) + 1) if kind == 1 else
                      st.lists(st.sampled_from([b"10.0.0.1:80", b"200", b"0.012", b"-", b"", b"502, 200",
                                                b"a:1 : b:2"]), min_size=len(variables), max_size=len(variables)))
        line = (draw(st.sampled_from([prefix.encode(), b""])) if kind == 2 else prefix.encode())
        line += sep.join(fields) + (draw(st.sampled_from([suffix.encode(), b"", b"]"])) if kind == 3 else suffix.encode())
        lines.append(line + draw(st.sampled_from([b"", b"\r", b"\r\r"])))
    return compiled, names, lines


@given(split_case(), st.data())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          deadline=None)
def test_accelerator_matches_reference(accelerator: Any, case: Tuple[CompiledFormat, List[str], List[bytes]],
                                       data: st.DataObject) -> None:
    compiled, names, lines = case
    assume(compiled.strategy == "split")
    fast, slow = both(compiled, names)
    block = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(block)), max_size=4)))
    done = 0
    for cut in [*cuts, len(block)]:
        end = block.rfind(b"\n", 0, cut) + 1
        if end > done:
            assert fast.feed_block(block[done:end]) == slow.feed_block(block[done:end])
            done = end
    tail = data.draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    listed = [line + tail for line in lines]  # an item is one line, whatever it holds
    assert fast.feed_lines(listed) == slow.feed_lines(listed)
    assert fast.feed_block(block + b"partial\tline") == slow.feed_block(block + b"partial\tline")
    assert fast.items() == slow.items()
    assert len(fast) == len(slow)
