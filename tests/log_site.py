"""A real proxy nginx with two backends and a dead server, writing its access logs in given formats (analyze tests).

:class:`LogSite` is that site. Its front server proxies to upstream
``backend``: b1 answers 200, b2 answers 200 (503 on ``/err``), and ``dead``
refuses connections, so its attempts go on to another server and the logs'
upstream lists read ``DEAD, NEXT``. Each backend logs the ``$request_uri`` of
every request it served to ``b1.log``/``b2.log``: what the front's logs must
add up to. :class:`CliSite`, what it runs on, serves a test that writes a
config of its own: a private nginx on free ports with ``nginx-canary`` pointed at it.
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from nginx_canary.demo.nginx_harness import PrivateNginx, free_ports
from nginx_canary.demo.site import make_prefix

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


def basic_auth(user: str) -> Dict[str, str]:
    """An ``Authorization`` header carrying Basic credentials ``user:pw``."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()}


class CliSite(PrivateNginx):
    """A private nginx under ``root/nginx`` (not started) on free loopback ports named ``names`` (one ``front``),
    with 2 workers; the subclass writes its config. ``logs`` are the file names of the access logs the front writes.
    """

    def __init__(self, binary: str, root: Path, names: Sequence[str], logs: Sequence[str]) -> None:
        super().__init__(binary, make_prefix(root), dict(zip(names, free_ports(len(names)))), worker_processes=2)
        self.logs = list(logs)
        self.state = root / "state"

    def server(self, name: str) -> str:
        """The ``host:port`` the logs name the server on port ``name`` (b1, b2, dead, ...) by."""
        return f"127.0.0.1:{self.ports[name]}"

    def logfile(self, name: str) -> Path:
        return self.prefix / "logs" / name

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``nginx-canary`` pointed at this site with ``args``. Raises subprocess.TimeoutExpired (60 s)."""
        return subprocess.run(
            [sys.executable, "-m", "nginx_canary", "--nginx-conf", str(self.conf), "--nginx-prefix", str(self.prefix),
             "--nginx-bin", self.binary, "--state-dir", str(self.state), *args],
            capture_output=True, text=True, timeout=60, check=False)

    def get(self, path: str, headers: Optional[Dict[str, str]] = None) -> int:
        """GET ``path`` through the front server; the status it answers."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.ports['front']}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def wait_for_lines(self, n: int) -> None:
        """Wait until every front log has ``n`` lines. Raises AssertionError after 10 s."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(self.logfile(name).exists() and self.logfile(name).read_bytes().count(b"\n") >= n
                   for name in self.logs):
                return
            time.sleep(0.05)
        raise AssertionError(f"nginx did not log {n} lines in every one of {self.logs}")


class LogSite(CliSite):
    """The standard site under ``root/nginx`` (not started); ``logs`` maps each front access log's file name to its
    format. ``formats`` are files of ``log_format`` definitions, included in ``http``.
    """

    def __init__(self, binary: str, root: Path, formats: Sequence[Path], logs: Mapping[str, str]) -> None:
        super().__init__(binary, root, ("front", "b1", "b2", "dead"), list(logs))
        includes = "\n".join(f"    include {f};" for f in formats)
        lines = "\n".join(f"        access_log logs/{name} {fmt};" for name, fmt in logs.items())
        self.conf.write_text(CONF.format(includes=includes, logs=lines, **self.ports))

    def backend_saw(self, name: str) -> List[bytes]:
        """The request URIs backend ``name`` (b1, b2) served, one a request."""
        return self.logfile(f"{name}.log").read_bytes().splitlines()

    def analyze_json(self, log: str) -> Dict[str, Any]:
        """``nginx-canary analyze --json`` of front log ``log``: its report (asserts it exits 0)."""
        result = self.cli("analyze", "--json", str(self.logfile(log)))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def raw(self, request_line: bytes) -> bytes:
        """Send ``request_line`` as it is (one an HTTP client would refuse to write); the answer's first bytes."""
        with socket.create_connection(("127.0.0.1", self.ports["front"]), timeout=5) as conn:
            conn.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
            return conn.recv(100)

    def assert_servers_match_backends(self, report: Dict[str, Any], sent: int) -> None:
        """``report`` counts ``sent`` lines, none unparsed, and each backend's requests and 5xx as its own log has them."""
        assert (report["lines"], report["unparsed"]) == (sent, 0)
        servers = report["servers"]
        seen_b1, seen_b2 = self.backend_saw("b1"), self.backend_saw("b2")
        assert servers[self.server("b1")]["requests"] == len(seen_b1)
        assert servers[self.server("b2")]["requests"] == len(seen_b2)
        assert servers[self.server("b1")]["errors_5xx"] == 0
        assert servers[self.server("b2")]["errors_5xx"] == sum(1 for uri in seen_b2 if uri == b"/err") > 0


@contextmanager
def running_site(binary: str, root: Path, formats: Sequence[Path], logs: Mapping[str, str]) -> Iterator[LogSite]:
    """A started :class:`LogSite`, stopped on the way out (also when the caller's traffic fails)."""
    site = LogSite(binary, root, formats, logs)
    try:
        site.start()
        yield site
    finally:
        site.stop()
