"""Shared fixtures: a real nginx in a temporary prefix on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from nginx_canary.demo.nginx_harness import PrivateNginx, free_port
from nginx_canary.demo.site import TwoVersions, make_prefix

# A vendored copy of ../shared/corpus/nginx-configs (certbot's round-trip test
# data, Apache-2.0; see tests/data/README.md), so a clean clone can run it.
CORPUS = Path(__file__).resolve().parent / "data" / "nginx-configs"

MAIN_CONF = """\
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log logs/access.log;
    # upstreams and sites live in conf.d
    include conf.d/*.conf;
    server {{
        listen 127.0.0.1:{front};
        location / {{ proxy_pass http://backend; }}
    }}
    server {{ listen 127.0.0.1:{v1}; return 200 "v1"; }}
    server {{ listen 127.0.0.1:{v2}; return 200 "v2"; }}
}}
"""

UPSTREAM_CONF = """\
# the application: v1 is stable, v2 is the canary (staged as down)
upstream backend {{
    server 127.0.0.1:{v1};
    server 127.0.0.1:{v2} down;
}}
"""


def find_nginx() -> Optional[str]:
    return shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx") or None


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """The nginx binary; CI sets NGINX_CANARY_REQUIRE_NGINX=1 so a missing nginx fails instead of skipping."""
    found = find_nginx()
    if not found:
        if os.environ.get("NGINX_CANARY_REQUIRE_NGINX") == "1":
            pytest.fail("nginx is required for the integration tests (apt-get install -y nginx)")
        pytest.skip("nginx not installed")
    return found


def snapshot_tree(root: Path) -> Dict[str, bytes]:
    """Every file's bytes under ``root`` (for byte-identical comparisons)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class NginxInstance(PrivateNginx, TwoVersions):
    """A real nginx running from ``prefix`` with a stable (v1) and a canary (v2) backend, and its state dir."""

    def __init__(self, binary: str, prefix: Path, ports: Dict[str, int], state_dir: Path,
                 worker_processes: int = 2) -> None:
        super().__init__(binary, prefix, ports, worker_processes=worker_processes)
        self.state_dir = state_dir

    def cli_args(self) -> List[str]:
        """Global nginx-canary options pointing at this instance."""
        return ["--nginx-conf", str(self.conf), "--nginx-prefix", str(self.prefix),
                "--nginx-bin", self.binary, "--state-dir", str(self.state_dir)]

    def config_files(self) -> Dict[str, bytes]:
        return snapshot_tree(self.prefix / "conf.d") | {"nginx.conf": self.conf.read_bytes()}

    def workers(self) -> List[int]:
        """Worker PIDs that accept connections (not shutting down, not exited)."""
        return self.worker_pids()

    def get(self, path: str = "/") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['front']}{path}", timeout=5) as resp:
            return resp.read().decode()

    def count_versions(self, requests: int) -> Dict[str, int]:
        """Send ``requests`` requests through nginx; count answers by body."""
        counts: Dict[str, int] = {}
        for _ in range(requests):
            body = self.get()
            counts[body] = counts.get(body, 0) + 1
        return counts


def make_nginx(binary: str, root: Path) -> NginxInstance:
    """Write the standard two-backend config under ``root/nginx`` (not started)."""
    prefix = make_prefix(root)
    ports = {"front": free_port(), "v1": free_port(), "v2": free_port()}
    (prefix / "nginx.conf").write_text(MAIN_CONF.format(**ports))
    (prefix / "conf.d" / "upstream.conf").write_text(UPSTREAM_CONF.format(**ports))
    return NginxInstance(binary, prefix, ports, root / "state")


@pytest.fixture
def nginx_stopped(nginx_bin: str, tmp_path: Path):
    """The standard config, nginx not started (stopped at teardown if a test starts it)."""
    inst = make_nginx(nginx_bin, tmp_path)
    yield inst
    inst.stop()


@pytest.fixture
def nginx(nginx_stopped: NginxInstance) -> NginxInstance:
    """A running nginx with upstream ``backend``: v1 stable, v2 canary staged as down."""
    nginx_stopped.start()
    return nginx_stopped


@pytest.fixture
def unbindable_listen(nginx: NginxInstance):
    """Add a server block listening on a port another socket holds: nginx -t passes, the reload cannot bind."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    (nginx.prefix / "conf.d" / "extra.conf").write_text(f"server {{ listen 127.0.0.1:{port}; return 200; }}\n")
    yield port
    holder.close()
