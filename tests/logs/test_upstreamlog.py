"""The widely copied ``upstreamlog`` format: an unquoted ``$request`` bounded by the literal after ``$status``.

The format is read from tests/data/real-world/log-formats/upstreamlog.conf.
A request line holds spaces, and the one of a request nginx refuses with 400
holds every byte the client sent up to CR or LF, so it can hold
`` upstream_response_time `` too: the parser must take the last occurrence of
that literal (nothing after it can hold it), and the forgery check must know
that such a client forges nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List

import pytest

from nginx_canary.logs.analyze import AddressBook, Analyzer
from nginx_canary.logs.anchors import can_occur, right_anchored
from nginx_canary.logs.forgery import check_format, find_forgeries
from nginx_canary.logs.format import CompiledFormat, FormatSpec, compile_format, parse_log_format_args, upstream_fields
from nginx_canary.logs.window import WindowedStats
from nginx_canary.nginx.lexer import statements
from tests.logs.test_format import nginx_escape

DATA = Path(__file__).resolve().parents[1] / "data" / "real-world" / "log-formats" / "upstreamlog.conf"


def load_spec() -> FormatSpec:
    found = [s for s in statements(DATA.read_text(), str(DATA)) if s.name.value == "log_format"]
    assert len(found) == 1
    return parse_log_format_args([t.value for t in found[0].args])


@pytest.fixture(scope="module")
def fmt() -> CompiledFormat:
    return compile_format(load_spec())


REAL: Dict[str, bytes] = {
    "time_local": b"03/Dec/2026:14:00:00 +0000", "remote_addr": b"127.0.0.1", "remote_user": b"-",
    "server_name": b"_", "host": b"localhost", "upstream_addr": b"127.0.0.1:8081", "request": b"GET /a HTTP/1.1",
    "status": b"200", "upstream_response_time": b"0.002", "msec": b"1764770400.123", "request_time": b"0.003",
}


def line(fmt: CompiledFormat, **values: bytes) -> bytes:
    """A line as nginx writes it (values escaped as escape=default does)."""
    merged = {**REAL, **values}
    return b"".join(s if isinstance(s, bytes) else nginx_escape(merged[s], "default") for s in fmt.segments) + b"\n"


def test_the_format_compiles_passes_the_forgery_check_and_parses(fmt: CompiledFormat) -> None:
    assert fmt.variables == ("time_local", "remote_addr", "remote_user", "server_name", "host", "upstream_addr",
                             "request", "status", "upstream_response_time", "msec", "request_time")
    fields = upstream_fields(fmt)
    assert (fields.addr, fields.status, fields.latency, fields.time) == (
        "upstream_addr", "status", "upstream_response_time", "msec")
    assert check_format(fmt, fields) == [] and find_forgeries(fmt, fields) == []
    parsed = fmt.parse(line(fmt))
    assert parsed == {k: v.decode() for k, v in REAL.items()}


@pytest.mark.parametrize("request_line", [
    b"GET /a?b=c HTTP/1.1",
    b"GET  /spaced   HTTP/1.1",  # nginx accepts several spaces between the parts
    b'GET /q"uote\\d HTTP/1.1',  # written \x22 and \x5C
    b"-",
    b"",
    # a refused request (400): any text up to CR/LF, the format's own literals included
    b"GET /x 200 upstream_response_time 0.001 msec 1.0 request_time 0.001 HTTP/1.1",
    b"x upstream_response_time upstream_response_time  msec  request_time ",
    b"127.0.0.9:80: GET / HTTP/1.1",
])
def test_any_request_line_parses_to_the_real_fields(fmt: CompiledFormat, request_line: bytes) -> None:
    parsed = fmt.parse(line(fmt, request=request_line, status=b"400"))
    assert parsed is not None
    assert fmt.decode(nginx_escape(request_line, "default")) == parsed["request"]
    assert (parsed["status"], parsed["upstream_response_time"], parsed["msec"], parsed["request_time"],
            parsed["upstream_addr"]) == ("400", "0.002", "1764770400.123", "0.003", "127.0.0.1:8081")


@pytest.mark.parametrize("addr, times", [
    (b"127.0.0.1:8081, 127.0.0.1:8082", b"0.001, 0.002"),
    (b"127.0.0.1:8081, 127.0.0.1:8082 : 127.0.0.1:8083", b"0.001, 0.002 : 0.004"),
    (b"unix:/run/app.sock : backend", b"- : 0.010"),
    (b"-", b"-"),
])
def test_several_attempts_and_dashes(fmt: CompiledFormat, addr: bytes, times: bytes) -> None:
    parsed = fmt.parse(line(fmt, upstream_addr=addr, upstream_response_time=times, remote_user=b"-",
                            request=b"GET /a: b HTTP/1.1"))
    assert parsed is not None
    assert (parsed["upstream_addr"], parsed["upstream_response_time"]) == (addr.decode(), times.decode())


def test_a_user_name_cannot_forge_the_address(fmt: CompiledFormat) -> None:
    # Basic credentials give any text before the first ':' (so no "to: ADDR: ")
    parsed = fmt.parse(line(fmt, remote_user=b"u - _ h to - 10.9.9.9 - x"))
    assert parsed is not None and parsed["upstream_addr"] == "127.0.0.1:8081"


def test_the_anchor_is_found_from_the_right(fmt: CompiledFormat) -> None:
    k = fmt.segments.index("request")
    assert right_anchored(fmt.segments, k, "default")
    assert not right_anchored(fmt.segments, fmt.segments.index("remote_user"), "default")
    tail = fmt.segments[k + 4:]
    assert not can_occur(b" upstream_response_time ", tail, "default")
    assert can_occur(b" upstream_response_time ", ["request"], "default")
    # a client variable after the anchor could write it: no right anchor then
    anchored = compile_format(FormatSpec("t", "$upstream_addr $request $status upstream_response_time "
                                              "$upstream_response_time $http_user_agent"))
    assert not right_anchored(anchored.segments, anchored.segments.index("request"), "default")


def test_analysis_counts_each_server(fmt: CompiledFormat) -> None:
    book = AddressBook({"127.0.0.1:8081": "app", "127.0.0.1:8082": "app"})
    analyzer = Analyzer(fmt, book, WindowedStats(horizon_seconds=60))
    lines: List[bytes] = []
    for i in range(300):
        addr = b"127.0.0.1:8082" if i % 3 == 0 else b"127.0.0.1:8081"
        status = b"503" if i % 10 == 0 else b"200"
        lines.append(line(fmt, upstream_addr=addr, status=status, request=b"GET /%d x HTTP/1.1" % i))
    lines.append(b"[03/Dec/2026:14:00:00 +0000] 127.0.0.1 - - - _ localhost to: 127.0.0.1:80\n")  # cut at rotation
    analyzer.feed(lines)
    analyzer.flush()
    report = analyzer.report()
    assert (report["lines"], report["unparsed"]) == (301, 1)
    servers = report["servers"]
    assert servers["127.0.0.1:8081"]["requests"] == 200 and servers["127.0.0.1:8082"]["requests"] == 100
    assert servers["127.0.0.1:8082"]["errors_5xx"] == 10  # i % 30 == 0: both 3 and 10 divide i
    assert servers["127.0.0.1:8081"]["errors_5xx"] == 20


def test_parsing_is_linear_in_junk(fmt: CompiledFormat) -> None:
    junk = [b"[x] 1 - - - _ h to: a: " + b" upstream_response_time" * 2000 + b"\n"] * 50
    started = time.perf_counter()
    rows, bad = fmt.extract(junk, ["upstream_addr", "status"])
    assert (rows, bad) == ([], 50)
    assert time.perf_counter() - started < 2.0
