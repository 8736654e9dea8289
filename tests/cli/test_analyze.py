"""`nginx-canary analyze` on lines a real nginx wrote: retries, internal redirects, local answers."""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.log_site import CliSite

REPO = Path(__file__).resolve().parents[2]
LOG_FORMAT_SNIPPET = REPO / "conf.d" / "nginx-canary-log-format.conf"

CONF = """\
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 256; }}
http {{
    include {snippet};
    access_log logs/canary.log canary;
    access_log logs/combined.log;
    upstream backend {{
        server 127.0.0.1:{v1};
        server 127.0.0.1:{dead} max_fails=0;   # the canary: refuses connections
    }}
    upstream fallback {{
        server localhost:{v2};
    }}
    server {{
        listen 127.0.0.1:{front};
        location / {{ proxy_pass http://backend; proxy_next_upstream error; }}
        location /redirect {{
            proxy_pass http://backend;
            proxy_intercept_errors on;
            error_page 404 = @fallback;
        }}
        location @fallback {{ proxy_pass http://fallback; }}
        location /local {{ return 204; }}
    }}
    server {{
        listen 127.0.0.1:{v1};
        access_log off;
        location / {{ return 200 "v1"; }}
        location /redirect {{ return 404; }}
    }}
    server {{ listen 127.0.0.1:{v2}; access_log off; return 200 "v2"; }}
}}
"""

ROOT, REDIRECT, LOCAL = 40, 20, 10


class Site(CliSite):
    """v1 and a refusing canary in ``backend``, v2 behind ``fallback``, local answers; the canary format's log."""

    def __init__(self, binary: str, root: Path) -> None:
        super().__init__(binary, root, ("front", "v1", "v2", "dead"), ["canary.log"])
        self.conf.write_text(CONF.format(snippet=LOG_FORMAT_SNIPPET, **self.ports))

    @property
    def log(self) -> Path:
        return self.logfile("canary.log")

    def traffic(self) -> None:
        for _ in range(ROOT):
            assert self.get("/") == 200
        for _ in range(REDIRECT):
            assert self.get("/redirect") == 200
        for _ in range(LOCAL):
            assert self.get("/local") == 204


@pytest.fixture
def site(nginx_bin, tmp_path):
    s = Site(nginx_bin, tmp_path)
    s.start()
    yield s
    s.stop()


def dead_attempts(log: Path, site: Site) -> int:
    """Attempts at the refusing server, counted straight from the raw bytes."""
    return log.read_bytes().count(f"127.0.0.1:{site.ports['dead']}".encode())


def test_every_attempt_counts_against_its_own_server(site):
    site.traffic()
    site.wait_for_lines(ROOT + REDIRECT + LOCAL)
    result = site.cli("analyze", str(site.log), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    v1, v2, dead = (f"127.0.0.1:{site.ports[k]}" for k in ("v1", "v2", "dead"))
    k = dead_attempts(site.log, site)
    assert k >= 1  # round robin sends some first attempts to the refusing canary
    assert report["lines"] == ROOT + REDIRECT + LOCAL and report["unparsed"] == 0
    servers = report["servers"]
    assert set(servers) == {v1, v2, dead}  # /local never reached an upstream
    assert servers[dead] == {**servers[dead], "upstream": "backend", "requests": k, "errors_5xx": k, "error_rate": 1.0}
    assert servers[v1]["requests"] == ROOT + REDIRECT
    assert (servers[v1]["errors_5xx"], servers[v1]["errors_4xx"]) == (0, REDIRECT)
    assert servers[v2]["upstream"] == "fallback"  # written as localhost:PORT in the config
    assert servers[v2]["requests"] == REDIRECT and servers[v2]["errors_4xx"] == 0
    backend = report["upstreams"]["backend"]
    assert (backend["requests"], backend["errors_5xx"], backend["errors_4xx"]) == (ROOT + REDIRECT + k, k, REDIRECT)
    assert report["upstreams"]["fallback"]["requests"] == REDIRECT
    for fig in servers.values():
        assert fig["p50"] is not None and 0 <= fig["p50"] <= fig["p95"] <= fig["p99"] <= fig["max"] < 5


def test_groups_upstream_filter_and_text_output(site):
    site.traffic()
    site.wait_for_lines(ROOT + REDIRECT + LOCAL)
    dead = f"127.0.0.1:{site.ports['dead']}"
    report = json.loads(site.cli("analyze", str(site.log), "--upstream", "backend", "--canary", dead, "--json").stdout)
    k = dead_attempts(site.log, site)
    assert set(report["upstreams"]) == {"backend"}
    assert report["groups"]["canary"]["requests"] == k and report["groups"]["canary"]["error_rate"] == 1.0
    assert report["groups"]["stable"]["requests"] == ROOT + REDIRECT
    text = site.cli("analyze", str(site.log)).stdout
    assert text.startswith(f"lines {ROOT + REDIRECT + LOCAL}, unparsed 0")
    assert "upstream backend" in text and f"  {dead}" in text


def test_rotated_gzip_and_several_files(site):
    site.traffic()
    site.wait_for_lines(ROOT + REDIRECT + LOCAL)
    rotated = site.log.with_name("canary.log.1.gz")
    with gzip.open(rotated, "wb") as fh:
        fh.write(site.log.read_bytes())
    report = json.loads(site.cli("analyze", str(rotated), str(site.log), "--json").stdout)
    assert report["lines"] == 2 * (ROOT + REDIRECT + LOCAL)
    assert report["upstreams"]["fallback"]["requests"] == 2 * REDIRECT


def test_format_without_upstream_fields_is_a_clear_error(site):
    site.traffic()
    site.wait_for_lines(ROOT + REDIRECT + LOCAL)
    result = site.cli("analyze", str(site.prefix / "logs" / "combined.log"))
    assert result.returncode == 2
    assert "$upstream_addr" in result.stderr and "nginx-canary-log-format.conf" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_explicit_format_for_a_file_the_config_does_not_name(site, tmp_path):
    site.traffic()
    site.wait_for_lines(ROOT + REDIRECT + LOCAL)
    copy = tmp_path / "elsewhere.log"
    shutil.copyfile(site.log, copy)
    assert site.cli("analyze", str(copy)).returncode == 2
    report = json.loads(site.cli("analyze", str(copy), "--format", "canary", "--json").stdout)
    assert report["lines"] == ROOT + REDIRECT + LOCAL


def test_junk_lines_are_counted_not_fatal(site, tmp_path):
    site.traffic()
    site.wait_for_lines(ROOT + REDIRECT + LOCAL)
    junk = tmp_path / "junk.log"
    junk.write_bytes(site.log.read_bytes() + b"\x00\xff\xfe garbage\n" + b"x" * (2 << 20) + b"\nnot\ta\tline\n")
    report = json.loads(site.cli("analyze", str(junk), "--format", "canary", "--json").stdout)
    assert report["lines"] == ROOT + REDIRECT + LOCAL + 3
    assert report["unparsed"] == 3


def test_follow_prints_cumulative_snapshots(site):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nginx_canary", "--nginx-conf", str(site.conf), "--nginx-prefix", str(site.prefix),
         "--state-dir", str(site.state), "analyze", "--follow", "--upstream", "fallback", "--interval", "0.3", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # It starts at the end of the log: send traffic only once it is following
        # (its first snapshot comes after the log is open).
        first = json.loads(proc.stdout.readline())
        assert first["lines"] == 0
        site.traffic()
        deadline = time.monotonic() + 15
        last = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            last = json.loads(line)
            if last["upstreams"].get("fallback", {}).get("requests") == REDIRECT:
                break
        assert last is not None and last["upstreams"]["fallback"]["requests"] == REDIRECT
        assert last["lines"] == ROOT + REDIRECT + LOCAL
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
