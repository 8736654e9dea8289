"""conf.d/nginx-canary-sticky.conf on a real nginx: sticky by cookie, address fallback, forced override kept apart."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Dict, Optional

import pytest

from nginx_canary.demo.nginx_harness import PrivateNginx, free_ports

REPO = Path(__file__).resolve().parents[2]
CONF_D = REPO / "conf.d"
STICKY_SITE = "nginx-canary-sticky.conf"
LOG_FORMAT = "nginx-canary-log-format.conf"

MAIN = """\
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log logs/access.log;
    include conf.d/*.conf;
    server {{ listen 127.0.0.1:{v1}; return 200 "v1"; }}
    server {{ listen 127.0.0.1:{v2}; return 200 "v2"; }}
}}
"""


class Site(PrivateNginx):
    def get(self, cookie: Optional[str] = None, headers: Optional[Dict[str, str]] = None) -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{self.ports['front']}/", headers=dict(headers or {}))
        if cookie is not None:
            request.add_header("Cookie", f"uid={cookie}")
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.read().decode()

    def cli(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "nginx_canary", "--nginx-conf", str(self.conf),
                                 "--nginx-prefix", str(self.prefix), "--nginx-bin", self.binary,
                                 "--state-dir", str(self.prefix.parent / "state"), *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture
def site(nginx_bin: str, tmp_path: Path):
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    (prefix / "conf.d").mkdir()
    front, v1, v2 = free_ports(3)
    ports = {"front": front, "v1": v1, "v2": v2}
    (prefix / "nginx.conf").write_text(MAIN.format(**ports))
    (prefix / "conf.d" / LOG_FORMAT).write_text((CONF_D / LOG_FORMAT).read_text())
    text = (CONF_D / STICKY_SITE).read_text().replace("/var/log/nginx/", f"{prefix}/logs/")
    text = text.replace("listen 8090;", f"listen 127.0.0.1:{front};")
    text = text.replace("127.0.0.1:8081", f"127.0.0.1:{v1}").replace("127.0.0.1:8082", f"127.0.0.1:{v2}")
    (prefix / "conf.d" / STICKY_SITE).write_text(text)
    inst = Site(nginx_bin, prefix, ports)
    yield inst
    inst.stop()


def test_sticky_example_passes_nginx_t_and_keeps_each_user_on_one_version(site: Site):
    result = site.run("-t")
    assert result.returncode == 0 and "[warn]" not in result.stderr, result.stderr
    site.start()
    canary = f"127.0.0.1:{site.ports['v2']}"
    out = site.cli("set-weight", "shop", "50", "--canary", canary)
    assert "sticky: consistent hash on $shop_key, weights out of 1000" in out
    seen = set()
    for n in range(40):
        answers = {site.get(cookie=f"user-{n}") for _ in range(5)}
        assert len(answers) == 1, n  # one user, one version
        seen |= answers
    assert seen == {"v1", "v2"}
    # No cookie: keyed on the address, so every request of this client goes one way.
    assert len({site.get() for _ in range(20)}) == 1


def test_forced_requests_reach_the_canary_and_are_counted_apart(site: Site):
    site.start()
    canary = f"127.0.0.1:{site.ports['v2']}"
    assert site.get(cookie="a") == "v1"  # staged: the canary is down in `shop`
    assert {site.get(cookie=f"u{n}", headers={"canary": "true"}) for n in range(10)} == {"v2"}
    log = site.prefix / "logs" / "nginx-canary-sticky.access.log"
    report = json.loads(site.cli("analyze", str(log), "--format", "canary", "--upstream", "shop",
                                 "--canary", canary, "--json"))
    assert report["forced"][canary]["requests"] == 10
    assert report["upstreams"]["shop"]["requests"] == 1
