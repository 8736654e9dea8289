"""`nginx-canary analyze` on a real nginx writing the widely copied ``upstreamlog`` format, and on a log it cannot read.

The format comes from tests/data/real-world/log-formats/upstreamlog.conf. Each
backend keeps its own access log, so the per-server figures are compared with
what the backends saw. Clients also send what an unquoted ``$request`` lets
them write: request lines nginx refuses (400) that hold the format's own
literals and forged figures, and a Basic user name full of the format's
separators; none of it may change a server's figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.log_site import basic_auth, running_site

REPO = Path(__file__).resolve().parents[2]
UPSTREAMLOG = REPO / "tests" / "data" / "real-world" / "log-formats" / "upstreamlog.conf"

FORGING_REQUEST_LINES = [
    b"GET /x 200 upstream_response_time 9.999 msec 1.0 request_time 9.999 HTTP/1.1",
    b"GET /a b to: 127.0.0.1:1: GET / HTTP/1.1",
]


@pytest.fixture
def site(nginx_bin, tmp_path):
    with running_site(nginx_bin, tmp_path, [UPSTREAMLOG], {"upstream.log": "upstreamlog"}) as s:
        yield s


def test_per_server_figures_match_what_the_backends_saw(site):
    sent = 0
    for i in range(90):
        path = "/err" if i % 5 == 0 else f"/item/{i}?q=a%20b"
        status = site.get(path, basic_auth("u - _ h to - 127.0.0.9 - x y to") if i % 7 == 0 else None)
        assert status in (200, 503)
        sent += 1
    assert site.get('/q"uote') == 200
    sent += 1
    for line in FORGING_REQUEST_LINES:
        assert site.raw(line).startswith(b"HTTP/1.1 400")
        sent += 1
    site.wait_for_lines(sent)

    report = site.analyze_json("upstream.log")
    site.assert_servers_match_backends(report, sent)
    servers = report["servers"]
    b1, b2, dead = (site.server(k) for k in ("b1", "b2", "dead"))
    raw = site.logfile("upstream.log").read_bytes()
    assert servers[dead]["requests"] == raw.count(f"to: {dead}".encode()) + raw.count(f", {dead}".encode()) > 0
    assert b", " in raw  # attempts at the dead server were logged as "DEAD, NEXT"
    assert set(servers) == {b1, b2, dead}  # nothing forged: no 127.0.0.1:1, no 127.0.0.9:80
    assert len(site.backend_saw("b1")) + len(site.backend_saw("b2")) == sent - len(FORGING_REQUEST_LINES)


def test_a_log_in_another_format_fails_with_the_reason(site):
    for i in range(30):
        assert site.get(f"/n/{i}") == 200
    site.wait_for_lines(30)
    # a format nginx-canary can read, but not the one nginx writes to this log
    log_format = "$msec\\t$upstream_addr\\t$status\\t$upstream_response_time"
    result = site.cli("analyze", "--log-format", log_format.replace("\\t", "\t"), str(site.logfile("upstream.log")))
    assert result.returncode == 2, result.stdout
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1 and result.stdout == ""
    assert error.startswith("nginx-canary: error: 30 of 30 lines of ") and "do not fit log format '--log-format'" in error
    assert "e.g. '[" in error and " to: 127.0.0.1:" in error
