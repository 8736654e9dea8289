"""`nginx-canary analyze` on a real nginx writing the widely copied ``upstreamlog`` format, and on a log it cannot read.

The format comes from tests/data/real-world/log-formats/upstreamlog.conf. Each
backend keeps its own access log, so the per-server figures are compared with
what the backends saw. Clients also send what an unquoted ``$request`` lets
them write: request lines nginx refuses (400) that hold the format's own
literals and forged figures, and a Basic user name full of the format's
separators; none of it may change a server's figures.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nginx_canary.demo.nginx_harness import PrivateNginx, free_port

REPO = Path(__file__).resolve().parents[2]
UPSTREAMLOG = REPO / "tests" / "data" / "real-world" / "log-formats" / "upstreamlog.conf"

CONF = """\
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 256; }}
http {{
    include {formats};
    log_format seen '$request_uri';
    access_log logs/upstream.log upstreamlog;
    upstream backend {{
        server 127.0.0.1:{b1};
        server 127.0.0.1:{b2};
        server 127.0.0.1:{dead} max_fails=0;   # refuses connections: its attempts go on to another server
    }}
    server {{
        listen 127.0.0.1:{front};
        location / {{ proxy_pass http://backend; proxy_next_upstream error; }}
    }}
    server {{
        listen 127.0.0.1:{b1};
        access_log logs/b1.log seen;
        location / {{ return 200 "b1"; }}
    }}
    server {{
        listen 127.0.0.1:{b2};
        access_log logs/b2.log seen;
        location / {{ return 200 "b2"; }}
        location /err {{ return 503; }}
    }}
}}
"""

FORGING_REQUEST_LINES = [
    b"GET /x 200 upstream_response_time 9.999 msec 1.0 request_time 9.999 HTTP/1.1",
    b"GET /a b to: 127.0.0.1:1: GET / HTTP/1.1",
]


class Site(PrivateNginx):
    def __init__(self, binary: str, root: Path) -> None:
        ports = {"front": free_port(), "b1": free_port(), "b2": free_port(), "dead": free_port()}
        super().__init__(binary, root / "nginx", ports, worker_processes=2)
        (self.prefix / "logs").mkdir(parents=True)
        for d in (root, self.prefix, self.prefix / "logs"):
            d.chmod(0o755)
        self.conf.write_text(CONF.format(formats=UPSTREAMLOG, **self.ports))
        self.state = root / "state"

    def logfile(self, name: str) -> Path:
        return self.prefix / "logs" / name

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nginx_canary", "--nginx-conf", str(self.conf), "--nginx-prefix", str(self.prefix),
             "--nginx-bin", self.binary, "--state-dir", str(self.state), *args],
            capture_output=True, text=True, timeout=60)

    def get(self, path: str, user: str = "") -> int:
        headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()} if user else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.ports['front']}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def raw(self, request_line: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.ports["front"]), timeout=5) as conn:
            conn.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
            return conn.recv(100)

    def wait_for_lines(self, name: str, n: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            path = self.logfile(name)
            if path.exists() and path.read_bytes().count(b"\n") >= n:
                return
            time.sleep(0.05)
        raise AssertionError(f"nginx did not log {n} lines in {name}")


@pytest.fixture
def site(nginx_bin, tmp_path):
    s = Site(nginx_bin, tmp_path)
    s.start()
    yield s
    s.stop()


def test_per_server_figures_match_what_the_backends_saw(site):
    sent = 0
    for i in range(90):
        path = "/err" if i % 5 == 0 else f"/item/{i}?q=a%20b"
        status = site.get(path, user="u - _ h to - 127.0.0.9 - x y to" if i % 7 == 0 else "")
        assert status in (200, 503)
        sent += 1
    assert site.get('/q"uote') == 200
    sent += 1
    for line in FORGING_REQUEST_LINES:
        assert site.raw(line).startswith(b"HTTP/1.1 400")
        sent += 1
    site.wait_for_lines("upstream.log", sent)

    result = site.cli("analyze", "--json", str(site.logfile("upstream.log")))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["lines"], report["unparsed"]) == (sent, 0)
    servers = report["servers"]
    b1, b2, dead = (f"127.0.0.1:{site.ports[k]}" for k in ("b1", "b2", "dead"))
    seen_b1 = site.logfile("b1.log").read_bytes().splitlines()
    seen_b2 = site.logfile("b2.log").read_bytes().splitlines()
    assert servers[b1]["requests"] == len(seen_b1) and servers[b2]["requests"] == len(seen_b2)
    assert servers[b1]["errors_5xx"] == 0
    assert servers[b2]["errors_5xx"] == sum(1 for uri in seen_b2 if uri == b"/err") > 0
    raw = site.logfile("upstream.log").read_bytes()
    assert servers[dead]["requests"] == raw.count(f"to: {dead}".encode()) + raw.count(f", {dead}".encode()) > 0
    assert b", " in raw  # attempts at the dead server were logged as "DEAD, NEXT"
    assert set(servers) == {b1, b2, dead}  # nothing forged: no 127.0.0.1:1, no 127.0.0.9:80
    assert len(seen_b1) + len(seen_b2) == sent - len(FORGING_REQUEST_LINES)


def test_a_log_in_another_format_fails_with_the_reason(site):
    for i in range(30):
        assert site.get(f"/n/{i}") == 200
    site.wait_for_lines("upstream.log", 30)
    # a format nginx-canary can read, but not the one nginx writes to this log
    log_format = "$msec\\t$upstream_addr\\t$status\\t$upstream_response_time"
    result = site.cli("analyze", "--log-format", log_format.replace("\\t", "\t"), str(site.logfile("upstream.log")))
    assert result.returncode == 2, result.stdout
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1 and result.stdout == ""
    assert error.startswith("nginx-canary: error: 30 of 30 lines of ") and "do not fit log format '--log-format'" in error
    assert "e.g. '[" in error and " to: 127.0.0.1:" in error
