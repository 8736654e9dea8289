"""An OpenResty-style config on a real nginx with the Lua module: read, steered and refused as nginx does.

The config is tests/data/real-world/openresty.conf (Lua blocks full of strings,
braces, long brackets and comments; the upstream to steer stands after them).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from nginx_canary.demo.nginx_harness import PrivateNginx, free_port
from nginx_canary.errors import ConfigError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.lexer import statements
from tests.nginx.test_lexer_lua import LUA_BODIES

REAL_WORLD = Path(__file__).resolve().parents[1] / "data" / "real-world"
MODULES = ("load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
           "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n")
UPSTREAM = "app_backend"


class OpenResty(PrivateNginx):
    """nginx running the real-world OpenResty-style config, and the state dir nginx-canary uses for it."""

    def __init__(self, binary: str, root: Path) -> None:
        prefix = root / "nginx"
        (prefix / "logs").mkdir(parents=True)
        ports = {"front": free_port(), "v1": free_port(), "v2": free_port()}
        text = (REAL_WORLD / "openresty.conf").read_text()
        for name, port in ports.items():
            text = text.replace(f"@{name.upper()}_PORT@", str(port))
        (prefix / "nginx.conf").write_text(text)
        super().__init__(binary, prefix, ports, worker_processes=2)
        self.state_dir = root / "state"

    @property
    def v2(self) -> str:
        return f"127.0.0.1:{self.ports['v2']}"

    def canary(self, *args: str) -> subprocess.CompletedProcess:
        """Run nginx-canary against this nginx."""
        return subprocess.run(
            [sys.executable, "-m", "nginx_canary", "--nginx-conf", str(self.conf), "--nginx-prefix", str(self.prefix),
             "--nginx-bin", self.binary, "--state-dir", str(self.state_dir), *args],
            capture_output=True, text=True, timeout=60)

    def answers(self, requests: int) -> Dict[str, int]:
        import urllib.request

        counts: Dict[str, int] = {}
        for _ in range(requests):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['front']}/", timeout=5) as resp:
                body = resp.read().decode()
            counts[body] = counts.get(body, 0) + 1
        return counts


@pytest.fixture
def openresty(nginx_bin: str, tmp_path: Path):
    inst = OpenResty(nginx_bin, tmp_path)
    inst.start()
    yield inst
    inst.stop()


def weights_blanked(text: str) -> str:
    return re.sub(r"\bweight=\d+", "weight=N", text)


def test_set_weight_changes_only_weight_bytes_and_steers_real_traffic(openresty: OpenResty) -> None:
    before = openresty.conf.read_text()
    assert openresty.answers(100).get("v2", 0) <= 25  # 10 % to start with
    listed = openresty.canary("upstreams")
    assert listed.returncode == 0, listed.stderr
    assert f"upstream {UPSTREAM}" in listed.stdout and "upstream dynamic_backend" in listed.stdout
    checked = openresty.canary("validate", UPSTREAM, "50", "--canary", openresty.v2)
    assert checked.returncode == 0, checked.stderr
    assert openresty.conf.read_text() == before
    master, workers = openresty.master().pid, openresty.worker_pids()

    result = openresty.canary("set-weight", UPSTREAM, "50", "--canary", openresty.v2)

    assert result.returncode == 0, result.stderr
    after = openresty.conf.read_text()
    assert after != before and weights_blanked(after) == weights_blanked(before)
    assert re.findall(r"weight=(\d+)", after)[0] == re.findall(r"weight=(\d+)", after)[1]
    assert openresty.run("-t").returncode == 0
    assert openresty.master().pid == master and not set(openresty.worker_pids()) & set(workers)
    counts = openresty.answers(200)
    assert set(counts) == {"v1", "v2"} and abs(counts["v2"] - 100) <= 12, counts


def missing_semicolon(conf: Path) -> int:
    """Drop the ";" ending the first server line of the upstream; return the line nginx will name (the next one)."""
    lines = conf.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if "weight=9" in line)
    lines[first] = lines[first].replace("fail_timeout=10s;", "fail_timeout=10s")
    conf.write_text("".join(lines))
    return first + 2


@pytest.mark.parametrize("command", [
    ["upstreams"], ["set-weight", UPSTREAM, "25", "--canary", "V2"], ["validate"],
    ["validate", UPSTREAM, "25", "--canary", "V2"],
])
def test_missing_semicolon_is_refused_like_nginx_and_changes_nothing(openresty: OpenResty, command: List[str]) -> None:
    line = missing_semicolon(openresty.conf)
    broken = openresty.conf.read_bytes()
    workers = openresty.worker_pids()
    nginx_says = openresty.run("-t").stderr
    assert f'invalid parameter "server" in {openresty.conf}:{line}' in nginx_says

    result = openresty.canary(*[openresty.v2 if arg == "V2" else arg for arg in command])

    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f'nginx-canary: error: {openresty.conf}:{line}: invalid parameter "server" '
        f'(a ";" missing at the end of line {line - 1}?)']
    assert openresty.conf.read_bytes() == broken
    assert openresty.worker_pids() == workers
    assert openresty.answers(10)


def nginx_t(nginx_bin: str, root: Path, body: str) -> subprocess.CompletedProcess:
    (root / "logs").mkdir(exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(MODULES + "error_log logs/error.log;\nevents {}\nhttp {\n    server {\n"
                    "        location / {\n            content_by_lua_block {\n" + body + "\n}\n        }\n    }\n"
                    "    upstream app { server 127.0.0.1:1; }\n}\n")
    return subprocess.run([nginx_bin, "-p", str(root), "-c", str(conf), "-e", "stderr", "-t"],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("body", list(LUA_BODIES.values()) + [
    'local s = "}\n', "local s = [[ }\n", 'local s = "}\n}', "local t = { }}",
], ids=list(LUA_BODIES) + ["open quote", "open long string", "open quote, extra brace", "extra brace"])
def test_lexer_agrees_with_nginx_on_lua_blocks(nginx_bin: str, tmp_path: Path, body: str) -> None:
    """Where nginx -t accepts a Lua block our lexer and crossplane read the config; where it refuses, so do they."""
    result = nginx_t(nginx_bin, tmp_path, body)
    conf = tmp_path / "nginx.conf"
    try:
        upstreams = [s for s in statements(conf.read_text()) if s.name.value == "upstream"]
    except ConfigError:
        upstreams = None
    try:
        loaded = load_config(str(conf)).upstreams
    except ConfigError:
        loaded = None
    assert (result.returncode == 0) == (upstreams is not None) == (loaded is not None), result.stderr
    if upstreams is not None and loaded is not None:
        assert len(upstreams) == len(loaded) == 1 and upstreams[0].depth == 1
