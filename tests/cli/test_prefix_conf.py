"""A relative nginx conf is read as ``nginx -p PREFIX -c conf/nginx.conf`` reads it: under the prefix, on a real nginx.

The tree is tests/data/real-world/prefix-relative (conf/nginx.conf includes upstreams/*.conf, relative to conf/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Dict

import pytest

from nginx_canary.cli.context import CliContext
from nginx_canary.demo.nginx_harness import PrivateNginx, free_ports
from nginx_canary.nginx.paths import main_conf_path

DATA = Path(__file__).resolve().parents[1] / "data" / "real-world" / "prefix-relative"


@pytest.fixture
def tree(nginx_bin: str, tmp_path: Path):
    """nginx running as ``nginx -p PREFIX -c conf/nginx.conf`` (a relative -c), and an unrelated working directory."""
    prefix = tmp_path / "nginx"
    shutil.copytree(DATA, prefix)
    (prefix / "logs").mkdir()
    ports = dict(zip(("front", "v1", "v2"), free_ports(3)))
    for path in prefix.rglob("*.conf"):
        text = path.read_text()
        for name, port in ports.items():
            text = text.replace(f"@{name.upper()}_PORT@", str(port))
        path.write_text(text)
    inst = PrivateNginx(nginx_bin, prefix, ports, worker_processes=2, conf=Path("conf/nginx.conf"))
    inst.start()
    (tmp_path / "elsewhere").mkdir()
    yield inst
    inst.stop()


def run(inst: PrivateNginx, *args: str, env: Dict[str, str] = None) -> subprocess.CompletedProcess:
    cwd = inst.prefix.parent / "elsewhere"
    return subprocess.run([sys.executable, "-m", "nginx_canary", "--nginx-bin", inst.binary,
                           "--state-dir", str(inst.prefix.parent / "state"), *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), **(env or {})))


def v2_share(inst: PrivateNginx, count: int) -> float:
    hits = 0
    for _ in range(count):
        with urllib.request.urlopen(f"http://127.0.0.1:{inst.ports['front']}/", timeout=5) as resp:
            hits += resp.read() == b"v2"
    return 100.0 * hits / count


def test_relative_conf_with_prefix_option(tree: PrivateNginx):
    upstream_file = tree.prefix / "conf" / "upstreams" / "app.conf"
    v2 = f"127.0.0.1:{tree.ports['v2']}"
    result = run(tree, "--nginx-conf", "conf/nginx.conf", "--nginx-prefix", str(tree.prefix),
                 "set-weight", "app", "25", "--canary", v2)
    assert result.returncode == 0, result.stderr
    assert f"--- {upstream_file}" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("reloaded: canary 25 % of upstream app; ")
    assert upstream_file.read_text().splitlines()[1] == f"    server 127.0.0.1:{tree.ports['v1']} weight=3;        # stable"
    assert abs(v2_share(tree, 400) - 25) <= 6


def test_relative_conf_and_prefix_from_the_environment(tree: PrivateNginx):
    v2 = f"127.0.0.1:{tree.ports['v2']}"
    env = {"NGINX_CANARY_NGINX_CONF": "conf/nginx.conf", "NGINX_CANARY_NGINX_PREFIX": str(tree.prefix)}
    result = run(tree, "set-weight", "app", "100", "--canary", v2, env=env)
    assert result.returncode == 0, result.stderr
    assert v2_share(tree, 20) == 100.0
    listing = run(tree, "upstreams", env=env)
    assert f"upstream app  ({tree.prefix}/conf/upstreams/app.conf:1)  in http" in listing.stdout


def test_relative_conf_under_the_yaml_prefix(tree: PrivateNginx):
    config = tree.prefix.parent / "config.yaml"
    config.write_text(f"nginx:\n  conf: conf/nginx.conf\n  prefix: {tree.prefix}\n  binary: {tree.binary}\n"
                      f"state_dir: {tree.prefix.parent / 'state'}\n")
    result = subprocess.run([sys.executable, "-m", "nginx_canary", "--config", str(config), "validate"],
                            capture_output=True, text=True, timeout=60, cwd=tree.prefix.parent / "elsewhere",
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert result.returncode == 0, result.stderr
    assert "config ok: 2 file(s), 1 upstream(s)" in result.stdout and "nginx running: master" in result.stdout


def test_without_a_prefix_a_relative_conf_is_taken_from_the_current_directory(tree: PrivateNginx):
    result = run(tree, "--nginx-conf", "conf/nginx.conf", "upstreams")
    assert result.returncode == 1
    where = tree.prefix.parent / "elsewhere" / "conf" / "nginx.conf"
    assert result.stderr == f"nginx-canary: error: {where}: nginx config file not found\n"


def test_main_conf_path_follows_nginx():
    assert main_conf_path("conf/nginx.conf", "/srv/nginx", cwd="/tmp") == "/srv/nginx/conf/nginx.conf"
    assert main_conf_path("conf/nginx.conf", "/srv/nginx/", cwd="/tmp") == "/srv/nginx/conf/nginx.conf"
    assert main_conf_path("conf/nginx.conf", "rel", cwd="/tmp") == "/tmp/rel/conf/nginx.conf"
    assert main_conf_path("/etc/nginx/nginx.conf", "/srv/nginx", cwd="/tmp") == "/etc/nginx/nginx.conf"
    assert main_conf_path("nginx.conf", None, cwd="/tmp") == "/tmp/nginx.conf"


def test_cli_context_resolves_each_conf_with_its_own_prefix(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("nginx:\n  conf: conf/nginx.conf\n  prefix: /srv/nginx\n")
    ctx = CliContext(config_file=str(config), state_dir=str(tmp_path), state_dir_writers=lambda path: [])
    assert (ctx.settings.nginx_conf, ctx.settings.nginx_prefix) == ("/srv/nginx/conf/nginx.conf", "/srv/nginx")
    # The YAML's conf keeps the YAML's prefix; --nginx-prefix alone names the prefix nginx runs with.
    ctx = CliContext(config_file=str(config), nginx_prefix="/opt/other", state_dir=str(tmp_path),
                     state_dir_writers=lambda path: [])
    assert (ctx.settings.nginx_conf, ctx.settings.nginx_prefix) == ("/srv/nginx/conf/nginx.conf", "/opt/other")
    ctx = CliContext(config_file=str(config), nginx_conf="conf/nginx.conf", nginx_prefix="/opt/other",
                     state_dir=str(tmp_path), state_dir_writers=lambda path: [])
    assert ctx.settings.nginx_conf == "/opt/other/conf/nginx.conf"
