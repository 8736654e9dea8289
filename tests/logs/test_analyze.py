"""The analyzer on the C accelerator and on pure Python: the same figures, to the last bit of every sketch."""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from nginx_canary.logs import analyze
from nginx_canary.logs.analyze import AddressBook, Analyzer, feed_blocks
from nginx_canary.logs.counting import PURE_PYTHON_ENV, PyFieldCounter
from nginx_canary.logs.format import CANARY_FORMAT, COMBINED, CompiledFormat, FormatSpec, compile_format
from nginx_canary.logs.reader import block_batches
from nginx_canary.logs.sketch import LatencySketch
from nginx_canary.logs.window import WindowedStats
from tests.logs.test_counting import accelerator, need_accelerator  # noqa: F401 (a fixture)

STABLE = ["10.0.0.1:80", "10.0.0.2:80"]
CANARY = ["10.0.0.3:80"]
BOOK = AddressBook({**{a: "app" for a in STABLE + CANARY}, "app": "app", "10.9.0.1:80": "other"},
                   {**{a: "stable" for a in STABLE}, **{a: "canary" for a in CANARY}})
ADDRESSES = STABLE + CANARY + ["10.9.0.1:80", "192.0.2.7:8080", "unix:/run/app.sock", "app", "[::1]:80", "-"]


class Clock:
    def __init__(self, now: float = 1_732_764_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(compiled: CompiledFormat, accelerated: bool, clock: Clock, only_upstream: Optional[str] = None) -> Analyzer:
    if accelerated:
        need_accelerator()
    return Analyzer(compiled, BOOK, WindowedStats(horizon_seconds=30, clock=clock, max_keys=6),
                    only_upstream=only_upstream, accelerated=accelerated)


def sketch_state(sketch: LatencySketch) -> Tuple[Any, ...]:
    return tuple(getattr(sketch, name) for name in LatencySketch.__slots__)


def state(analyzer: Analyzer) -> Dict[str, Any]:
    """Everything the analyzer holds: counts, and every sketch's bins, zero count, count, sum, min, max, floor."""
    windows = analyzer.windows
    keys = windows.keys()
    out: Dict[str, Any] = {"lines": analyzer.lines, "unparsed": analyzer.unparsed, "keys": keys}
    for key in keys:
        for label, stats in (("cumulative", windows.cumulative(key)), ("window", windows.window(key, 30))):
            out[f"{label} {key}"] = (stats.requests, stats.errors_5xx, stats.errors_4xx, sketch_state(stats.latency))
    out["report"] = analyzer.report()
    return out


def assert_same(fast: Analyzer, slow: Analyzer) -> None:
    assert isinstance(slow._pending, PyFieldCounter) and not isinstance(fast._pending, PyFieldCounter)
    assert state(fast) == state(slow)


# --- lines nginx could write, and some it could not ---

# $proxy_host: through the upstream itself, forced through another, nothing proxied, junk.
VIA = st.sampled_from(["app", "app", "app", "other", "-", "", "\\x09x"])
ENTRY_STATUS = st.sampled_from(["200", "204", "404", "499", "502", "503", "504", "-", "20", "2000", "abc"])
ENTRY_SECONDS = st.one_of(st.sampled_from(["0.000", "-", "1.", ".5", "1e3", "5.001"]),
                          st.integers(0, 30_000).map(lambda ms: f"{ms / 1000:.3f}"),
                          st.integers(0, 10**7).map(lambda us: f"{us / 10**6:.6f}"))


@st.composite
def request(draw: st.DrawFn) -> Tuple[str, str, str]:
    """(upstream_addr, upstream_status, upstream_response_time), with retries, redirects and misalignment."""
    groups = draw(st.lists(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3), min_size=1, max_size=2))
    addr = " : ".join(", ".join(g) for g in groups)
    given = sum(len(g) for g in groups) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    statuses = [draw(ENTRY_STATUS) for _ in range(max(given, 0))]
    seconds = [draw(ENTRY_SECONDS) for _ in range(max(given, 0))]
    join = draw(st.sampled_from([", ", ", ", " : "]))
    return addr, join.join(statuses) or "-", join.join(seconds) or "-"


@st.composite
def canary_lines(draw: st.DrawFn) -> List[bytes]:
    lines = []
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.integers(0, 12))
        if kind == 0:
            lines.append(draw(st.binary(max_size=60)).replace(b"\n", b""))
            continue
        addr, status, seconds = draw(request())
        final = draw(ENTRY_STATUS)
        fields = ["1732764000.123", addr, final, status, draw(ENTRY_SECONDS), seconds, "192.0.2.1", "GET",
                  "example.com", "/p\\x22", "0.000", "ab12", draw(VIA)]
        if kind == 1:
            fields.pop(draw(st.integers(0, len(fields) - 1)))
        elif kind == 2:
            fields[1] = draw(st.sampled_from(["bad addr", "10.0.0.1:80\\x00", "\\xC3\\xA9", ""]))
        line = "\t".join(fields).encode()
        lines.append(line + (b"\r" if kind == 3 else b""))
    return lines


def feed_both(fast: Analyzer, slow: Analyzer, clock: Clock, lines: List[bytes], data: st.DataObject) -> None:
    """The same lines through both, in the same randomly drawn ways: blocks, lists, live stamps, flushes."""
    i = 0
    while i < len(lines):
        n = data.draw(st.integers(1, 12))
        chunk, i = lines[i:i + n], i + n
        how = data.draw(st.sampled_from(["block", "block", "lines", "live", "report", "overlong"]))
        for analyzer in (fast, slow):
            if how == "lines":
                analyzer.feed([line + b"\n" for line in chunk])
            elif how == "live":
                analyzer.feed(chunk, at=clock.now - 3.5)
            else:
                analyzer.feed_block(b"".join(line + b"\n" for line in chunk))
            if how == "report":
                analyzer.report()
            elif how == "overlong":
                analyzer.count_unparsed(2)
        clock.now += data.draw(st.sampled_from([0.0, 0.4, 1.0, 7.0]))


@given(canary_lines(), st.sampled_from([1, 5, 200_000]), st.sampled_from([None, "app"]), st.data())
@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          deadline=None)
def test_canary_format_same_figures(accelerator: Any, monkeypatch: pytest.MonkeyPatch, lines: List[bytes],
                                    pending_limit: int, only: Optional[str], data: st.DataObject) -> None:
    monkeypatch.setattr(analyze, "_PENDING_LIMIT", pending_limit)  # small limits flush mid-stream
    clock = Clock()
    compiled = compile_format(FormatSpec("canary", CANARY_FORMAT))
    fast, slow = make(compiled, True, clock, only), make(compiled, False, clock, only)
    feed_both(fast, slow, clock, lines, data)
    assert_same(fast, slow)


@st.composite
def split_format(draw: st.DrawFn) -> str:
    """A tab-separated format with $status and/or $request_time standing in for the $upstream_* ones."""
    status = draw(st.sampled_from(["$upstream_status", "$status"]))
    latency = draw(st.sampled_from(["$upstream_response_time", "$request_time"]))
    rest = draw(st.lists(st.sampled_from(["$msec", "$request_id", "$uri"]), max_size=2, unique=True))
    order = draw(st.permutations(["$upstream_addr", status, latency, *rest]))
    return draw(st.sampled_from(["", "["])) + "\t".join(order) + draw(st.sampled_from(["", "]"]))


@given(split_format(), st.sampled_from(["default", "json"]), st.data())
@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          deadline=None)
def test_other_split_formats_same_figures(accelerator: Any, pattern: str, escape: str, data: st.DataObject) -> None:
    compiled = compile_format(FormatSpec("t", pattern, escape))
    assume(compiled.strategy == "split")
    variables = compiled.variables
    lines = []
    for _ in range(data.draw(st.integers(0, 30))):
        addr, status, seconds = data.draw(request())
        values = {"upstream_addr": addr, "upstream_status": status, "status": data.draw(ENTRY_STATUS),
                  "upstream_response_time": seconds, "request_time": data.draw(ENTRY_SECONDS), "msec": "1.5",
                  "request_id": "ab", "uri": data.draw(st.sampled_from(["/", "/a\\x22", "/\\u00e9", ""]))}
        line = "\t".join(values[v] for v in variables)
        frame = (pattern.startswith("["), pattern.endswith("]"))
        lines.append(("[" if frame[0] else "").encode() + line.encode() + (b"]" if frame[1] else b""))
        if data.draw(st.integers(0, 5)) == 0:
            lines.append(data.draw(st.binary(max_size=30)).replace(b"\n", b""))
    clock = Clock()
    fast, slow = make(compiled, True, clock), make(compiled, False, clock)
    feed_both(fast, slow, clock, lines, data)
    assert_same(fast, slow)


def test_a_generated_file_same_figures(tmp_path: Any) -> None:
    """Many lines through block_batches, as `analyze` reads a file: retries, 5xx, 4xx, junk, self-answered."""
    rng = random.Random(7)
    rows = []
    for i in range(60_000):
        first = rng.choice(STABLE + CANARY)
        if rng.random() < 0.01:
            addr, status, seconds = "-", "-", "-"
        elif rng.random() < 0.02:
            addr = f"{first}, {rng.choice(STABLE)}"
            status, seconds = f"502, {rng.choice(['200', '503'])}", f"0.00{rng.randint(0, 9)}, {rng.random():.3f}"
        else:
            addr, status = first, rng.choice(["200"] * 20 + ["304", "404", "500", "502", "-"])
            seconds = f"{rng.lognormvariate(-3.7, 0.9):.3f}"
        rows.append(f"{1732764000 + i / 1000:.3f}\t{addr}\t{status}\t{status}\t{seconds}\t{seconds}\t192.0.2.1\tGET\t"
                    f"h\t/\t0.000\t{i:x}\t{'app_canary' if i % 50 == 0 else 'app'}")
        if rng.random() < 0.001:
            rows.append("\x00junk\tjunk")
    path = tmp_path / "access.log"
    path.write_text("\n".join(rows) + "\n")
    compiled = compile_format(FormatSpec("canary", CANARY_FORMAT))
    clock = Clock()
    fast, slow = make(compiled, True, clock), make(compiled, False, clock)
    for analyzer in (fast, slow):
        feed_blocks(analyzer, block_batches(str(path), chunk_bytes=64 << 10))
    assert_same(fast, slow)
    report: Dict[str, Any] = fast.report()
    assert report["lines"] == len(rows) and report["unparsed"] == len(rows) - 60_000
    assert sum(s["requests"] for s in report["servers"].values()) > 60_000  # retries count twice


def test_the_canary_format_runs_on_the_accelerator_by_default(accelerator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    analyzer = Analyzer(compile_format(FormatSpec("canary", CANARY_FORMAT)), BOOK, WindowedStats())
    assert isinstance(analyzer._pending, accelerator.FieldCounter)


def test_accelerated_needs_a_split_format_or_a_walk(accelerator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    combined = compile_format(FormatSpec("c", COMBINED + ' "$upstream_addr" $upstream_status $upstream_response_time'))
    assert isinstance(Analyzer(combined, BOOK, WindowedStats())._pending, accelerator.WalkCounter)
    no_walk = compile_format(FormatSpec("n", "$remote_addr$upstream_addr $upstream_status $upstream_response_time"))
    with pytest.raises(RuntimeError):
        Analyzer(no_walk, BOOK, WindowedStats(), accelerated=True)
    assert isinstance(Analyzer(no_walk, BOOK, WindowedStats())._pending, PyFieldCounter)


@pytest.mark.parametrize("accelerated", [True, False])
def test_feed_block_refuses_anything_but_bytes_like(accelerated: bool) -> None:
    analyzer = make(compile_format(FormatSpec("canary", CANARY_FORMAT)), accelerated, Clock())
    for wrong in ("a\n", [b"a\n"], 7):
        with pytest.raises(TypeError):
            analyzer.feed_block(wrong)  # type: ignore[arg-type]
    assert (analyzer.lines, analyzer.unparsed) == (0, 0)


WALKED_FORMAT = COMBINED + ' "$upstream_addr" $upstream_status $upstream_response_time'


def walked_line(addr: str, status: str) -> bytes:
    return (f'192.0.2.1 - - [28/Nov/2024:03:20:00 +0000] "GET / HTTP/1.1" {status} 5 "-" "curl/8" '
            f'"{addr}" {status} 0.010').encode()


@pytest.mark.parametrize("accelerated", [True, False])
@pytest.mark.parametrize("walked", [False, True])
@pytest.mark.parametrize("wrap", [bytes, bytearray, lambda b: memoryview(b"xx" + b + b"yy")[2:-2]])
def test_feed_block_reads_any_bytes_like_the_same(accelerated: bool, walked: bool, wrap: Any) -> None:
    """The reader hands out views of one reused buffer: a view counts as the same bytes would."""
    compiled = compile_format(FormatSpec("w", WALKED_FORMAT) if walked else FormatSpec("canary", CANARY_FORMAT))
    line = walked_line if walked else (lambda addr, status: stamped_line("1732764000.000", addr, status))
    lines = (line(STABLE[0], "200"), line(CANARY[0], "500"), b"junk", line(STABLE[1], "200"))
    block = b"".join(one + b"\n" for one in lines) + b"tail"
    reference = make(compiled, accelerated, Clock())
    reference.feed_block(block)
    analyzer = make(compiled, accelerated, Clock())
    analyzer.feed_block(wrap(block))
    assert (analyzer.lines, analyzer.unparsed) == (reference.lines, reference.unparsed) == (4, 1)
    assert analyzer.report() == reference.report()


# --- stamps for the evidence ($msec) ---

MARK = 1_732_764_000.5


def stamped_line(msec: str, addr: str = CANARY[0], status: str = "500") -> bytes:
    return "\t".join([msec, addr, status, status, "0.010", "0.010", "192.0.2.1", "GET", "example.com", "/", "0.000",
                      "ab12", "app"]).encode()


def stamped(accelerated: bool, fmt: str = CANARY_FORMAT) -> Analyzer:
    if accelerated:
        need_accelerator()
    windows = WindowedStats(horizon_seconds=30, clock=Clock(MARK + 10))
    analyzer = Analyzer(compile_format(FormatSpec("x", fmt)), BOOK, windows, only_upstream="app",
                        accelerated=accelerated, stamp_requests=True)
    windows.mark_evidence(MARK)
    return analyzer


def evidence(analyzer: Analyzer) -> Tuple[int, int]:
    canary, stable = (analyzer.windows.evidence("group:" + g) for g in ("canary", "stable"))
    return canary.requests, stable.requests


@pytest.mark.parametrize("accelerated", [False, True])
def test_a_batch_across_the_mark_counts_only_the_requests_that_ended_after_it(accelerated: bool) -> None:
    analyzer = stamped(accelerated)
    analyzer.feed([stamped_line("1732764000.499"), stamped_line("1732764000.500"), stamped_line("1732764000.900"),
                   stamped_line("1732764000.100", STABLE[0]), stamped_line("1732764000.600", STABLE[1])],
                  at=MARK + 1)
    assert evidence(analyzer) == (2, 1)
    canary = analyzer.windows.evidence("group:canary")
    assert canary.errors_5xx == 2 and canary.latency.count == 2
    # The window and the cumulative stats go by the read time: every line.
    assert analyzer.windows.window("group:canary", 5, MARK + 1).requests == 3
    assert analyzer.windows.cumulative("group:stable").requests == 2
    assert analyzer.lines == 5 and analyzer.unparsed == 0


@pytest.mark.parametrize("accelerated", [False, True])
def test_batches_wholly_before_or_after_the_mark(accelerated: bool) -> None:
    analyzer = stamped(accelerated)
    analyzer.feed([stamped_line("1732764000.100"), stamped_line("1732763000.000")], at=MARK + 1)  # before
    assert evidence(analyzer) == (0, 0)
    analyzer.feed([stamped_line("1732764001.000"), stamped_line("1732764001.000", STABLE[0])], at=MARK + 1)  # after
    assert evidence(analyzer) == (1, 1)
    analyzer.feed_block(stamped_line("1732764001.200") + b"\n" + stamped_line("1732764000.000") + b"\n", at=MARK + 1)
    assert evidence(analyzer) == (2, 1)
    assert analyzer.windows.cumulative("group:canary").requests == 5


@pytest.mark.parametrize("accelerated", [False, True])
def test_a_stamp_ahead_of_the_read_time_is_clamped_to_it_and_no_number_is_the_read_time(accelerated: bool) -> None:
    analyzer = stamped(accelerated)
    # Read before the step began: whatever $msec says (ahead of the reader, or none), not evidence.
    analyzer.feed([stamped_line("1732764009.000"), stamped_line("-"), stamped_line("99999999999999")], at=MARK - 0.1)
    assert evidence(analyzer) == (0, 0)
    analyzer.feed([stamped_line("1732764009.000"), stamped_line("-"), stamped_line("1732764000.000")], at=MARK + 0.1)
    assert evidence(analyzer) == (2, 0)
    assert analyzer.windows.cumulative("group:canary").requests == 6


def test_request_end_clamps_stamps_ahead_of_the_read_time() -> None:
    assert analyze.request_end(b"1732764000.123", MARK) == 1732764000.123
    assert analyze.request_end(b"1732764009.000", MARK) == MARK
    assert analyze.request_end(b"9" * 400, MARK) == MARK  # float() says inf
    assert analyze.request_end(b"0.000", MARK) == 0.0  # however old: kept, before any step
    assert analyze.request_end(b"-", MARK) == MARK


@pytest.mark.parametrize("accelerated", [False, True])
def test_without_msec_requests_are_stamped_with_the_read_time(accelerated: bool) -> None:
    analyzer = stamped(accelerated, CANARY_FORMAT.replace("$msec", "$time_local"))
    assert not analyzer.stamped
    line = stamped_line("[28/Nov/2024:03:20:00 +0000]")
    analyzer.feed([line], at=MARK - 0.1)
    analyzer.feed([line, line], at=MARK)
    assert evidence(analyzer) == (2, 0)


def test_without_stamp_requests_msec_is_not_read() -> None:
    windows = WindowedStats(horizon_seconds=30, clock=Clock(MARK + 10))
    analyzer = Analyzer(compile_format(FormatSpec("x", CANARY_FORMAT)), BOOK, windows, only_upstream="app")
    windows.mark_evidence(MARK)
    analyzer.feed([stamped_line("1732764000.100")], at=MARK + 1)
    assert not analyzer.stamped and evidence(analyzer) == (1, 0)
