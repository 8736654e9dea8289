"""Every real-world log format on a real nginx: analysed on the fast path, figures equal to what the backends saw.

One nginx writes the same traffic to one access log per format of
tests/data/real-world/log-formats (and the shipped ``canary`` format). The
traffic has what real logs have: retries past a dead server (``A, B`` lists),
503s, quotes, backslashes, non-ASCII bytes and each format's own literals in
client headers, a Basic user name full of separators, and request lines nginx
refuses (400) that carry forged figures. For each log, ``nginx-canary
analyze`` must count every line, none unparsed, each server's requests and
5xx as its own access log has them; and the C walk must read every line
itself (none handed back to the regex), with the regex's answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List

import pytest

from nginx_canary.logs import counting
from nginx_canary.logs.counting import PyFieldCounter, regex_row
from nginx_canary.logs.format import compile_format, upstream_fields
from tests.log_site import LogSite, basic_auth, running_site
from tests.logs.test_counting import need_accelerator
from tests.logs.test_fast_path import DATA, SPECS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "conf.d" / "nginx-canary-log-format.conf"
NAMES = sorted(SPECS) + ["canary"]

# Client text holding what the formats use as separators and fake figures after them.
HOSTILE_HEADERS = ['x" "127.0.0.1:1" 500 9.999', 'a","upstream_addr":"127.0.0.1:1","status":500,"x":"',
                   '] [x] 127.0.0.1:1 0 9.999 500 ', 'back\\slash " ua="127.0.0.1:1" us="500"', 'caf\u00e9 \u00ff']
REFUSED_REQUEST_LINES = [
    b"GET /x 200 upstream_response_time 9.999 msec 1.0 request_time 9.999 HTTP/1.1",
    b'GET /a" 500 0 "-" "-" "127.0.0.1:1" 500 9.999 HTTP/1.1',
    b'GET /a","upstream_addr":"127.0.0.1:1" x HTTP/1.1',
]


@pytest.fixture(scope="module")
def site(nginx_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogSite]:
    formats = sorted(DATA.glob("*.conf")) + [SHIPPED]
    with running_site(nginx_bin, tmp_path_factory.mktemp("fast-path"), formats,
                      {f"{name}.log": name for name in NAMES}) as s:
        sent = 0
        for i in range(80):
            hostile = HOSTILE_HEADERS[i % len(HOSTILE_HEADERS)]
            headers = {"User-Agent": hostile.encode().decode("latin-1"), "Referer": hostile.encode().decode("latin-1"),
                       "X-Forwarded-For": hostile.encode().decode("latin-1")}
            if i % 7 == 0:
                headers.update(basic_auth('" - u [x] to: 127.0.0.1:1: " "'))
            assert s.get("/err" if i % 5 == 0 else f"/item/{i}?q=a%20b&r=%22", headers) in (200, 503)
            sent += 1
        for line in REFUSED_REQUEST_LINES:
            assert s.raw(line).startswith(b"HTTP/1.1 400")
            sent += 1
        s.wait_for_lines(sent)
        s.sent = sent
        yield s


@pytest.mark.parametrize("name", NAMES)
def test_analyze_counts_what_the_backends_saw(site: LogSite, name: str) -> None:
    report = site.analyze_json(f"{name}.log")
    servers = report["servers"]
    assert set(servers) == {site.server(k) for k in ("b1", "b2", "dead")}  # nothing forged: no 127.0.0.1:1
    site.assert_servers_match_backends(report, site.sent)
    assert servers[site.server("dead")]["requests"] > 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_walk_reads_the_lines_nginx_wrote(site: LogSite, name: str) -> None:
    module = need_accelerator()
    fmt = compile_format(SPECS[name])
    fields = upstream_fields(fmt)
    names = list(fields.read())
    layout = fmt.walk_layout(names)
    assert layout is not None
    handed_back: List[bytes] = []
    regex = regex_row(fmt, names)

    def fallback(line: bytes) -> Any:
        handed_back.append(line)
        return regex(line)

    walk = module.WalkCounter(layout.prefix, layout.steps, layout.wanted, fallback)
    block = site.logfile(f"{name}.log").read_bytes()
    assert walk.feed_block(block) == (site.sent, 0)
    reference = PyFieldCounter(fmt, names)
    assert reference.feed_block(block) == (site.sent, 0)
    assert walk.items() == reference.items()
    assert b"127.0.0.1:1" in block  # the forged figures are in the log, as a client wrote them
    assert handed_back == []  # hostile lines included: none needed the regex
    assert isinstance(counting.field_counter(fmt, names), module.WalkCounter)
