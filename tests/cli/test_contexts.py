"""The same upstream name in http {} and stream {}: each is steered on its own, on a real nginx with real traffic.

The config is tests/data/real-world/http-and-stream-same-name.conf (stream module loaded).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from nginx_canary.config.model import RolloutSettings
from nginx_canary.daemon.runtime import check_rollout_against_config
from nginx_canary.demo.nginx_harness import PrivateNginx, free_ports
from nginx_canary.errors import BadInputError
from nginx_canary.nginx.conf import load_config

DATA = Path(__file__).resolve().parents[1] / "data" / "real-world" / "http-and-stream-same-name.conf"
PORTS = ("front", "v1", "v2", "sv1", "sv2", "stream", "only")


@pytest.fixture
def twin(nginx_bin: str, tmp_path: Path):
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    ports = dict(zip(PORTS, free_ports(len(PORTS))))
    text = DATA.read_text()
    for name, port in ports.items():
        text = text.replace(f"@{name.upper()}_PORT@", str(port))
    assert "@" not in re.sub(r"'[^']*'", "", text)
    (prefix / "nginx.conf").write_text(text)
    inst = PrivateNginx(nginx_bin, prefix, ports, worker_processes=2)
    inst.start()
    yield inst
    inst.stop()


def run(inst: PrivateNginx, *args: str) -> subprocess.CompletedProcess:
    opts = ["--nginx-conf", str(inst.conf), "--nginx-prefix", str(inst.prefix), "--nginx-bin", inst.binary,
            "--state-dir", str(inst.prefix.parent / "state")]
    return subprocess.run([sys.executable, "-m", "nginx_canary", *opts, *args], capture_output=True, text=True,
                          timeout=60)


def http_bodies(inst: PrivateNginx, count: int) -> Dict[str, int]:
    import urllib.request

    seen: Dict[str, int] = {}
    for _ in range(count):
        with urllib.request.urlopen(f"http://127.0.0.1:{inst.ports['front']}/", timeout=5) as resp:
            body = resp.read().decode()
        seen[body] = seen.get(body, 0) + 1
    return seen


def tcp_bodies(port: int, count: int) -> Dict[str, int]:
    seen: Dict[str, int] = {}
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            chunks: List[bytes] = []
            while True:
                data = sock.recv(100)
                if not data:
                    break
                chunks.append(data)
        body = b"".join(chunks).decode()
        seen[body] = seen.get(body, 0) + 1
    return seen


def test_the_http_one_by_default_and_the_stream_one_with_context(twin: PrivateNginx):
    conf = twin.conf
    original = conf.read_bytes()
    sv2 = f"127.0.0.1:{twin.ports['sv2']}"
    v2 = f"127.0.0.1:{twin.ports['v2']}"

    result = run(twin, "set-weight", "backend", "100", "--canary", v2)
    assert result.returncode == 0, result.stderr
    assert "is also defined in stream {}; this is the http one (--context stream for the other)" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("reloaded: canary 100 % of upstream backend; ")
    assert http_bodies(twin, 20) == {"http-v2": 20}
    assert tcp_bodies(twin.ports["stream"], 20) == {"tcp-v1": 20}
    stream_part = original.split(b"\nstream {")[1]
    assert conf.read_bytes().split(b"\nstream {")[1] == stream_part  # stream's bytes untouched

    result = run(twin, "set-weight", "backend", "50", "--canary", sv2, "--context", "stream")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("reloaded: canary 50 % of upstream backend (stream); ")
    assert f"+        server {sv2};   # the new replica" in result.stdout
    assert "weight=1 max_fails=2;" in result.stdout  # weight=3 becomes 1: 1:1 is 50 %
    tcp = tcp_bodies(twin.ports["stream"], 60)
    assert set(tcp) == {"tcp-v1", "tcp-v2"} and min(tcp.values()) >= 20, tcp
    assert http_bodies(twin, 20) == {"http-v2": 20}  # the http upstream stays where it was


def test_a_stream_only_upstream_is_found_without_the_option(twin: PrivateNginx):
    sv2 = f"127.0.0.1:{twin.ports['sv2']}"
    result = run(twin, "set-weight", "tcp_only", "100", "--canary", sv2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("reloaded: canary 100 % of upstream tcp_only (stream); ")
    assert tcp_bodies(twin.ports["only"], 10) == {"tcp-v2": 10}


def test_upstreams_lists_each_context(twin: PrivateNginx):
    text = run(twin, "upstreams").stdout
    assert re.search(r"upstream backend  \(.*nginx.conf:19\)  in http", text)
    assert re.search(r"upstream backend  \(.*nginx.conf:38\)  in stream", text)
    data = json.loads(run(twin, "upstreams", "--json").stdout)
    assert [(u["name"], u["context"]) for u in data["upstreams"]] == [
        ("backend", "http"), ("backend", "stream"), ("tcp_only", "stream")]


def test_validate_and_bad_context(twin: PrivateNginx):
    sv2 = f"127.0.0.1:{twin.ports['sv2']}"
    result = run(twin, "validate", "backend", "10", "--canary", sv2, "--context", "stream")
    assert result.returncode == 0, result.stderr
    assert "split ok: canary 10 % of backend (stream) would change 1 file(s)" in result.stdout
    # Without --context the http upstream is meant, where sv2 is no server.
    result = run(twin, "validate", "backend", "10", "--canary", sv2)
    assert result.returncode == 2 and f"{sv2!r} is not a server of upstream 'backend'" in result.stderr
    result = run(twin, "set-weight", "tcp_only", "10", "--canary", sv2, "--context", "http")
    assert result.returncode == 2
    assert result.stderr.startswith("nginx-canary: error: no upstream named 'tcp_only' in http {} of ")
    assert "it is defined in stream (" in result.stderr
    result = run(twin, "set-weight", "backend", "10", "--canary", sv2, "--context", "mail")
    assert result.returncode == 2 and "'mail' is not one of 'http', 'stream'" in result.stderr


def test_a_rollout_on_a_stream_upstream_is_refused(twin: PrivateNginx):
    config = load_config(str(twin.conf))
    sv2 = f"127.0.0.1:{twin.ports['sv2']}"
    check_rollout_against_config(RolloutSettings("web", "backend", (f"127.0.0.1:{twin.ports['v2']}",)), config)
    for rollout in (RolloutSettings("db", "backend", (sv2,), context="stream"),
                    RolloutSettings("tcp", "tcp_only", (sv2,))):
        with pytest.raises(BadInputError) as info:
            check_rollout_against_config(rollout, config)
        assert f"rollout {rollout.name!r}: upstream {rollout.upstream!r} is in stream {{}}" in str(info.value)
        assert "cannot analyse stream sessions: steer it by hand with set-weight --context stream" in str(info.value)


def test_replay_of_a_stream_rollout_says_why_in_one_line(twin: PrivateNginx):
    config = twin.prefix.parent / "config.yaml"
    config.write_text(f"nginx:\n  conf: {twin.conf}\n  prefix: {twin.prefix}\n  binary: {twin.binary}\n"
                      f"state_dir: {twin.prefix.parent / 'state'}\n"
                      f"rollouts:\n  db:\n    upstream: backend\n    context: stream\n"
                      f"    canary: ['127.0.0.1:{twin.ports['sv2']}']\n")
    log = twin.prefix / "logs" / "stream.log"
    log.touch()
    result = subprocess.run([sys.executable, "-m", "nginx_canary", "--config", str(config), "replay", str(log),
                             "--rollout", "db", "--instant"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (
        f"nginx-canary: error: rollout 'db': upstream 'backend' is in stream {{}} ({twin.conf}:38); rollouts judge "
        "http access logs and cannot analyse stream sessions: steer it by hand with set-weight --context stream\n")


def test_a_rollout_on_the_http_twin_leaves_the_stream_one_to_the_operator(twin: PrivateNginx):
    from nginx_canary.rollout.store import RolloutState, StateStore

    StateStore(str(twin.prefix.parent / "state")).save(RolloutState(
        name="web", state="progressing", steps=("10", "100"), canary_percent="10", snapshot_id="web-1",
        started_at=1.0, step_started_at=2.0, upstream="backend"))
    result = run(twin, "set-weight", "backend", "10", "--canary", f"127.0.0.1:{twin.ports['v2']}")
    assert result.returncode == 2 and "under rollout 'web'" in result.stderr
    result = run(twin, "set-weight", "backend", "100", "--canary", f"127.0.0.1:{twin.ports['sv2']}",
                 "--context", "stream")
    assert result.returncode == 0, result.stderr
    assert tcp_bodies(twin.ports["stream"], 10) == {"tcp-v2": 10}
