"""The walk (C, literal to literal) against the regex it stands in for, on every real-world format.

The formats are tests/data/real-world/log-formats/*.conf. Lines are made as
nginx writes them (each value escaped as the format's escape= mode does),
with realistic values, with hostile ones (client text holding the format's
own literals, quotes, backslashes, commas, binary bytes), and then mutated
(cut, spliced, bytes flipped) so that misfits and near-misses come too. The
C ``WalkCounter`` must give the same tuples, counts, order and misfits as the
regex (``PyFieldCounter``); and a line as nginx writes it with ordinary values
must be read by the walk itself, not handed back to the regex.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nginx_canary.logs import counting
from nginx_canary.logs.counting import PyFieldCounter, field_counter, regex_row
from nginx_canary.logs.format import CompiledFormat, FormatSpec, compile_format, parse_log_format_args, upstream_fields
from nginx_canary.logs.walk_strategy import RIGHT, STOP, walk_program
from nginx_canary.nginx.lexer import statements
from tests.logs.test_counting import need_accelerator
from tests.logs.test_format import nginx_escape

DATA = Path(__file__).resolve().parents[1] / "data" / "real-world" / "log-formats"


def load_specs() -> Dict[str, FormatSpec]:
    """Every log_format of the real-world set, by name."""
    specs = {}
    for path in sorted(DATA.glob("*.conf")):
        for stmt in statements(path.read_text(), str(path)):
            if stmt.name.value == "log_format":
                spec = parse_log_format_args([t.value for t in stmt.args])
                specs[spec.name] = spec
    return specs


SPECS = load_specs()
FORMATS = {name: compile_format(spec) for name, spec in SPECS.items()}

HEX = b"0123456789abcdef"
ORDINARY: Dict[str, List[bytes]] = {
    "status": [b"200", b"502", b"404"],
    "body_bytes_sent": [b"512", b"0"],
    "request_length": [b"77"],
    "connection": [b"12"],
    "msec": [b"1764770400.123", b"1764770401.000"],
    "request_time": [b"0.003", b"1.250"],
    "time_local": [b"03/Dec/2026:14:00:00 +0000"],
    "time_iso8601": [b"2026-12-03T14:00:00+00:00"],
    "remote_addr": [b"127.0.0.1", b"2001:db8::1"],
    "remote_user": [b"-", b"alice"],
    "request_id": [HEX * 2],
    "req_id": [HEX * 2],
    "pipe": [b".", b"p"],
    "upstream_addr": [b"127.0.0.1:8081", b"127.0.0.1:8081, 127.0.0.1:8082", b"10.0.0.1:80 : unix:/run/app.sock",
                      b"backend"],
    "upstream_status": [b"200", b"502, 200", b"503 : 404"],
    "upstream_response_time": [b"0.002", b"0.000, 0.012", b"0.001 : 0.004"],
    "upstream_connect_time": [b"0.000", b"0.001, 0.000"],
    "upstream_header_time": [b"0.002", b"0.001, 0.002"],
    "upstream_response_length": [b"1024", b"0, 55"],
    "upstream_cache_status": [b"MISS", b"-"],
    "request": [b"GET /a?q=1 HTTP/1.1", b"POST /api/v1/items HTTP/2.0"],
    "request_method": [b"GET", b"POST"],
    "request_uri": [b"/a?q=1", b"/static/app.js"],
    "host": [b"example.com", b"localhost"],
    "server_name": [b"_", b"example.com"],
    "server_protocol": [b"HTTP/1.1"],
    "scheme": [b"http", b"https"],
    "proxy_upstream_name": [b"default-app-80"],
    "proxy_alternative_upstream_name": [b"", b"default-app-canary-80"],
}
# nginx writes "-" for a value not found (escape=json: nothing); an unused upstream field is one.
UNSET = {"default": b"-", "json": b"", "none": b"-"}
HEADER = [b"-", b"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0", b"https://example.com/page"]


def ordinary(name: str) -> List[bytes]:
    return ORDINARY.get(name, HEADER)


def hostile(fmt: CompiledFormat) -> st.SearchStrategy[bytes]:
    """Client text built from the format's own literals, fake figures and bytes escaping must handle."""
    literals = [s for s in fmt.segments if isinstance(s, bytes)]
    pieces = literals + [b"200", b"502", b"0.999", b"127.0.0.1:1", b", ", b" : ", b'"', b"\\", b"\\x22", b" ",
                         b"[", b"]", b"{", b"}", b":", b"\t", b"\x00", b"\xff", b"\xc3\xa9", b"\r", b"\n", b"-"]
    return st.lists(st.sampled_from(pieces), max_size=8).map(b"".join)


def values(fmt: CompiledFormat, name: str, hostile_ok: bool) -> st.SearchStrategy[bytes]:
    plain = st.sampled_from(ordinary(name) + ([UNSET[fmt.spec.escape]] if name.startswith("upstream_") else []))
    if not hostile_ok or name in ORDINARY and name not in ("request", "request_uri", "host", "remote_user"):
        return plain
    return st.one_of(plain, hostile(fmt))


@st.composite
def nginx_line(draw: Any, fmt: CompiledFormat, hostile_ok: bool = True) -> bytes:
    """A line as nginx writes it: every value escaped as the format says."""
    out = []
    for seg in fmt.segments:
        out.append(seg if isinstance(seg, bytes) else nginx_escape(draw(values(fmt, seg, hostile_ok)), fmt.spec.escape))
    return b"".join(out)


@st.composite
def mutated(draw: Any, fmt: CompiledFormat) -> bytes:
    """A line of the format, sometimes cut, spliced or flipped."""
    line = draw(nginx_line(fmt))
    for _ in range(draw(st.integers(0, 2))):
        if not line:
            break
        at = draw(st.integers(0, len(line)))
        how = draw(st.sampled_from(["cut", "insert", "flip", "truncate"]))
        if how == "cut":
            line = line[:at] + line[at + draw(st.integers(1, 12)):]
        elif how == "insert":
            literals = [s for s in fmt.segments if isinstance(s, bytes)] + [b'"', b"\\", b", ", b" "]
            line = line[:at] + draw(st.sampled_from(literals)) + line[at:]
        elif how == "flip" and at < len(line):
            line = line[:at] + bytes([draw(st.integers(0, 255))]) + line[at + 1:]
        else:
            line = line[:at]
    return line


def walk_and_regex(fmt: CompiledFormat, names: Sequence[str]) -> Tuple[Any, PyFieldCounter]:
    need_accelerator()
    return field_counter(fmt, names, accelerated=True), PyFieldCounter(fmt, names)


def analysis_names(fmt: CompiledFormat) -> List[str]:
    fields = upstream_fields(fmt)
    return [n for n in (fields.addr, fields.status, fields.latency, fields.time, fields.via) if n is not None]


# --- which formats walk, and how ---


def test_every_real_world_format_walks_in_c() -> None:
    module = need_accelerator()
    assert len(FORMATS) == 10
    for name, fmt in FORMATS.items():
        assert fmt.strategy == "regex", name
        counter = field_counter(fmt, analysis_names(fmt))
        assert isinstance(counter, module.WalkCounter), name


def test_steps_follow_nginx_escaping() -> None:
    # a quoted value under escape=default or json is one scan to its closing quote
    elk = walk_program(FORMATS["json_elk"].segments, "json")
    assert elk is not None and [s[0] for s in elk.steps][:3] == [STOP, STOP, STOP]
    # upstreamlog's unquoted $request is bounded from the right, as anchors.py decides
    log = FORMATS["upstreamlog"]
    program = walk_program(log.segments, "default")
    assert program is not None
    request = log.variables.index("request")
    assert program.steps[request][0] == RIGHT and program.steps[request][5] == b" "
    assert program.steps[program.steps[request][4]][5] == b" upstream_response_time "


def test_formats_without_a_walk_stay_on_the_regex() -> None:
    need_accelerator()
    for pattern, escape in [("$remote_addr$upstream_addr $status $upstream_response_time", "default"),
                            ("$upstream_addr $upstream_status.$upstream_response_time", "default"),
                            ("$upstream_addr $status $upstream_response_time $http_user_agent", "json"),
                            ("$upstream_addr $status $upstream_response_time $http_x", "none")]:
        fmt = compile_format(FormatSpec("t", pattern, escape))
        if walk_program(fmt.segments, escape) is None:
            assert isinstance(field_counter(fmt, ["upstream_addr"]), PyFieldCounter)
        else:
            assert isinstance(field_counter(fmt, ["upstream_addr"]), counting._fieldcount.WalkCounter)
    assert walk_program(compile_format(FormatSpec("t", "$remote_addr$status", "default")).segments, "default") is None


def test_a_digit_right_after_a_numeric_upstream_list_is_read_by_the_regex() -> None:
    """``${upstream_status}1``: where an entry ends is a matter of backtracking, so no walk; the regex reads it right."""
    fmt = compile_format(FormatSpec("t", "$upstream_addr ${upstream_status}1 ${upstream_response_time}9 $status"))
    assert walk_program(fmt.segments, "default") is None
    assert isinstance(field_counter(fmt, ["upstream_addr"]), PyFieldCounter)
    names = ["upstream_addr", "upstream_status", "upstream_response_time"]
    lines = [b"10.0.0.1:80 5021 0.0129 200", b"10.0.0.1:80, 10.0.0.2:80 502, 2001 0.005, 0.0109 200"]
    assert fmt.extract(lines, names) == ([(b"10.0.0.1:80", b"502", b"0.012"),
                                          (b"10.0.0.1:80, 10.0.0.2:80", b"502, 200", b"0.005, 0.010")], 0)


# --- the walk against the regex ---


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_walk_matches_the_regex(name: str, data: Any) -> None:
    fmt = FORMATS[name]
    names = data.draw(st.sampled_from([list(fmt.variables), analysis_names(fmt), list(reversed(fmt.variables))]))
    lines = data.draw(st.lists(st.one_of(nginx_line(fmt), mutated(fmt)), min_size=1, max_size=12))
    ends = data.draw(st.lists(st.sampled_from([b"", b"\n", b"\r\n"]), min_size=len(lines), max_size=len(lines)))
    walk, regex = walk_and_regex(fmt, names)
    ended = [line + end for line, end in zip(lines, ends)]
    assert walk.feed_lines(ended) == regex.feed_lines(ended)
    assert walk.items() == regex.items()
    # a block: lines end at "\n", so one that holds a raw "\n" is two lines to both
    block = b"\n".join(lines) + b"\n"
    walk, regex = walk_and_regex(fmt, names)
    assert walk.feed_block(block) == regex.feed_block(block)
    assert walk.items() == regex.items()


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_lines_nginx_writes_are_read_by_the_walk_alone(name: str, data: Any) -> None:
    need_accelerator()
    fmt = FORMATS[name]
    names = analysis_names(fmt)
    lines = data.draw(st.lists(nginx_line(fmt, hostile_ok=False), min_size=1, max_size=8))
    handed_back: List[bytes] = []
    regex = regex_row(fmt, names)

    def fallback(line: bytes) -> Any:
        handed_back.append(line)
        return regex(line)

    layout = fmt.walk_layout(names)
    assert layout is not None
    walk = counting._fieldcount.WalkCounter(layout.prefix, layout.steps, layout.wanted, fallback)
    assert walk.feed_block(b"\n".join(lines) + b"\n") == (len(lines), 0)
    assert handed_back == []
    reference = PyFieldCounter(fmt, names)
    reference.feed_lines(lines)
    assert walk.items() == reference.items()


def test_hostile_request_lines_of_upstreamlog_agree() -> None:
    fmt = FORMATS["upstreamlog"]
    names = analysis_names(fmt)
    base = (b"[03/Dec/2026:14:00:00 +0000] 127.0.0.1 - - - _ localhost to: 127.0.0.1:8081: {request} 200 "
            b"upstream_response_time 0.002 msec 1764770400.123 request_time 0.003")
    requests = [b"GET /x 200 upstream_response_time 9.999 msec 1.0 request_time 9.999 HTTP/1.1",
                b"GET /a b to: 127.0.0.1:1: GET / HTTP/1.1", b"x upstream_response_time ", b"", b" ",
                b"upstream_response_time upstream_response_time"]
    lines = [base.replace(b"{request}", r) for r in requests]
    walk, regex = walk_and_regex(fmt, names)
    assert walk.feed_lines(lines) == regex.feed_lines(lines) == 0
    assert walk.items() == regex.items()
    assert {row[0] for row, _ in walk.items()} == {b"127.0.0.1:8081"}


def test_the_fallback_is_checked() -> None:
    module = need_accelerator()
    fmt = FORMATS["combined_upstream"]
    layout = fmt.walk_layout(["status"])
    assert layout is not None
    for bad in (lambda line: (b"1", b"2"), lambda line: ("200",), lambda line: 7):
        counter = module.WalkCounter(layout.prefix, layout.steps, layout.wanted, bad)
        with pytest.raises(TypeError, match="fallback"):
            counter.feed_lines([b"junk"])
    with pytest.raises(ZeroDivisionError):
        module.WalkCounter(layout.prefix, layout.steps, layout.wanted, lambda line: 1 / 0).feed_block(b"junk\n")
    with pytest.raises(TypeError, match="callable"):
        module.WalkCounter(layout.prefix, layout.steps, layout.wanted, None)
    with pytest.raises(ValueError, match="256"):
        module.WalkCounter(b"", [(STOP, 0, 0, 0, -1, b" ", b"\x01")], [0], print)
    with pytest.raises(ValueError, match="wanted step"):
        module.WalkCounter(layout.prefix, layout.steps, [99], print)


def test_a_value_bounded_from_the_right_is_read_by_the_walk_when_it_holds_its_literal() -> None:
    """The walk tries the first occurrence of the literal after such a value, then the reading from the right."""
    module = need_accelerator()
    fmt = FORMATS["combined_upstream"]
    names = analysis_names(fmt) + ["remote_user"]
    users = [b"-", b"a [b", b"a [03/Dec/2026:14:00:00 +0000] [", b' [x] "GET / HTTP/1.1" 500 0 "-" "-" "127.0.0.1:1" 500 1']
    lines = [b"".join(s if isinstance(s, bytes) else nginx_escape(user if s == "remote_user" else ordinary(s)[0],
                                                                    "default") for s in fmt.segments)
             for user in users]
    handed_back: List[bytes] = []
    regex = regex_row(fmt, names)
    layout = fmt.walk_layout(names)
    assert layout is not None
    walk = module.WalkCounter(layout.prefix, layout.steps, layout.wanted,
                              lambda line: handed_back.append(line) or regex(line))
    reference = PyFieldCounter(fmt, names)
    assert walk.feed_lines(lines) == reference.feed_lines(lines) == 0
    assert walk.items() == reference.items() and handed_back == []
    assert [row[-1] for row, _ in walk.items()] == [nginx_escape(u, "default") for u in users]
