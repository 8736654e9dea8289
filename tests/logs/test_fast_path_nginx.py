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

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import pytest

from nginx_canary.demo.nginx_harness import PrivateNginx, free_port
from nginx_canary.logs import counting
from nginx_canary.logs.counting import PyFieldCounter, regex_row
from nginx_canary.logs.format import compile_format, upstream_fields
from tests.logs.test_counting import need_accelerator
from tests.logs.test_fast_path import DATA, SPECS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "conf.d" / "nginx-canary-log-format.conf"
NAMES = sorted(SPECS) + ["canary"]

CONF = """\
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 256; }}
http {{
{includes}
    log_format seen '$request_uri';
    upstream backend {{
        server 127.0.0.1:{b1};
        server 127.0.0.1:{b2};
        server 127.0.0.1:{dead} max_fails=0;   # refuses connections: its attempts go on to another server
    }}
    server {{
        listen 127.0.0.1:{front};
{logs}
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

# Client text holding what the formats use as separators and fake figures after them.
HOSTILE_HEADERS = ['x" "127.0.0.1:1" 500 9.999', 'a","upstream_addr":"127.0.0.1:1","status":500,"x":"',
                   '] [x] 127.0.0.1:1 0 9.999 500 ', 'back\\slash " ua="127.0.0.1:1" us="500"', 'caf\u00e9 \u00ff']
REFUSED_REQUEST_LINES = [
    b"GET /x 200 upstream_response_time 9.999 msec 1.0 request_time 9.999 HTTP/1.1",
    b'GET /a" 500 0 "-" "-" "127.0.0.1:1" 500 9.999 HTTP/1.1',
    b'GET /a","upstream_addr":"127.0.0.1:1" x HTTP/1.1',
]


class Site(PrivateNginx):
    def __init__(self, binary: str, root: Path) -> None:
        ports = {"front": free_port(), "b1": free_port(), "b2": free_port(), "dead": free_port()}
        super().__init__(binary, root / "nginx", ports, worker_processes=2)
        (self.prefix / "logs").mkdir(parents=True)
        for d in (root, self.prefix, self.prefix / "logs"):
            d.chmod(0o755)
        files = sorted(DATA.glob("*.conf")) + [SHIPPED]
        includes = "\n".join(f"    include {f};" for f in files)
        logs = "\n".join(f"        access_log logs/{name}.log {name};" for name in NAMES)
        self.conf.write_text(CONF.format(includes=includes, logs=logs, **self.ports))
        self.state = root / "state"

    def logfile(self, name: str) -> Path:
        return self.prefix / "logs" / name

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nginx_canary", "--nginx-conf", str(self.conf), "--nginx-prefix", str(self.prefix),
             "--nginx-bin", self.binary, "--state-dir", str(self.state), *args],
            capture_output=True, text=True, timeout=60)

    def get(self, path: str, headers: Dict[str, str]) -> int:
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

    def wait_for_lines(self, n: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(self.logfile(f"{name}.log").exists() and self.logfile(f"{name}.log").read_bytes().count(b"\n") >= n
                   for name in NAMES):
                return
            time.sleep(0.05)
        raise AssertionError(f"nginx did not log {n} lines in every log")


@pytest.fixture(scope="module")
def site(nginx_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = Site(nginx_bin, tmp_path_factory.mktemp("fast-path"))
    s.start()
    sent = 0
    for i in range(80):
        hostile = HOSTILE_HEADERS[i % len(HOSTILE_HEADERS)]
        headers = {"User-Agent": hostile.encode().decode("latin-1"), "Referer": hostile.encode().decode("latin-1"),
                   "X-Forwarded-For": hostile.encode().decode("latin-1")}
        if i % 7 == 0:
            user = '" - u [x] to: 127.0.0.1:1: " "'
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()
        assert s.get("/err" if i % 5 == 0 else f"/item/{i}?q=a%20b&r=%22", headers) in (200, 503)
        sent += 1
    for line in REFUSED_REQUEST_LINES:
        assert s.raw(line).startswith(b"HTTP/1.1 400")
        sent += 1
    s.wait_for_lines(sent)
    s.sent = sent
    yield s
    s.stop()


@pytest.mark.parametrize("name", NAMES)
def test_analyze_counts_what_the_backends_saw(site: Site, name: str) -> None:
    result = site.cli("analyze", "--json", str(site.logfile(f"{name}.log")))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["lines"], report["unparsed"]) == (site.sent, 0)
    servers = report["servers"]
    b1, b2, dead = (f"127.0.0.1:{site.ports[k]}" for k in ("b1", "b2", "dead"))
    seen_b1 = site.logfile("b1.log").read_bytes().splitlines()
    seen_b2 = site.logfile("b2.log").read_bytes().splitlines()
    assert set(servers) == {b1, b2, dead}  # nothing forged: no 127.0.0.1:1
    assert servers[b1]["requests"] == len(seen_b1) and servers[b2]["requests"] == len(seen_b2)
    assert servers[b1]["errors_5xx"] == 0
    assert servers[b2]["errors_5xx"] == sum(1 for uri in seen_b2 if uri == b"/err") > 0
    assert servers[dead]["requests"] > 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_walk_reads_the_lines_nginx_wrote(site: Site, name: str) -> None:
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
