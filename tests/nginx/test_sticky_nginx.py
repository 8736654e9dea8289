"""Sticky canaries on a real nginx: ``hash $cookie_uid consistent``, 5,000 distinct uid cookies, 1 -> 100 %."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence

from nginx_canary.nginx.chash import Ring
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.operations import Settings
from nginx_canary.rollout.applier import NginxSplitApplier

KEYS = [f"u{n:05d}" for n in range(5000)]
STEPS = [1, 5, 10, 25, 50, 100]

# The ring hangs on the servers' names ("HOST:PORT"), so fixed loopback names make the test the same
# at every run (free random ports would draw a new ring, and a new sampling error, each time).
CANDIDATE_PORTS = (18080, 18180, 18280)
HOSTS = {"v2": "127.0.7.2", "v1": "127.0.7.1", "v3": "127.0.7.3"}

STICKY_CONF = """\
# v1 and v3 are stable, v2 is the canary (staged as down)
upstream backend {{
    hash $cookie_uid consistent;
    server 127.0.7.1:{port};
    server 127.0.7.3:{port};
    server 127.0.7.2:{port} down;
}}
"""
APPS_CONF = """\
server {{ listen 127.0.7.1:{port}; return 200 "v1"; }}
server {{ listen 127.0.7.2:{port}; return 200 "v2"; }}
server {{ listen 127.0.7.3:{port}; return 200 "v3"; }}
"""


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def fixed_port() -> int:
    for port in CANDIDATE_PORTS:
        if all(_bindable(host, port) for host in HOSTS.values()):
            return port
    raise AssertionError(f"none of the ports {CANDIDATE_PORTS} is free on {', '.join(HOSTS.values())}")


def _fetch(port: int, keys: List[str]) -> Dict[str, str]:
    """The body (v1/v2/v3) each key's request gets, over one keep-alive connection (reopened when nginx closes it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = {}
    try:
        for key in keys:
            conn.request("GET", "/", headers={"Cookie": f"uid={key}"})
            resp = conn.getresponse()
            out[key] = resp.read().decode()
    finally:
        conn.close()
    return out


def route(port: int, keys: Sequence[str] = KEYS) -> Dict[str, str]:
    """Every key's backend, on four connections."""
    chunks = [list(keys[i::4]) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda keys: _fetch(port, keys), chunks))
    return {k: v for part in results for k, v in part.items()}


def set_weight(inst, percent: int, canary: str) -> str:
    result = subprocess.run([sys.executable, "-m", "nginx_canary", *inst.cli_args(), "set-weight", "backend",
                             str(percent), "--canary", canary], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_sticky_rollout_keeps_every_canary_key_on_the_canary(nginx_stopped):
    """1 -> 5 -> 10 -> 25 -> 50 -> 100 by set-weight: no key leaves the canary, shares within 1 point, rollback."""
    inst = nginx_stopped
    port = fixed_port()
    names = {body: f"{host}:{port}" for body, host in HOSTS.items()}
    inst.upstream_conf.write_text(STICKY_CONF.format(port=port))
    (inst.prefix / "conf.d" / "apps.conf").write_text(APPS_CONF.format(port=port))
    inst.start()
    original = inst.config_files()
    before = route(inst.ports["front"])
    assert set(before.values()) == {"v1", "v3"}
    settings = Settings(str(inst.conf), inst.binary, str(inst.prefix), str(inst.state_dir))
    applier = NginxSplitApplier(settings, "backend", [names["v2"]])
    snapshot = applier.begin("sticky")

    on_canary: set = set()
    for percent in STEPS:
        out = set_weight(inst, percent, names["v2"])
        assert "sticky: consistent hash on $cookie_uid, weights out of 1000" in out
        routes = route(inst.ports["front"])
        now = {k for k, body in routes.items() if body == "v2"}
        assert on_canary <= now, f"{len(on_canary - now)} keys left the canary at {percent} %"
        share = 100 * len(now) / len(KEYS)
        assert abs(share - percent) <= 1, (percent, share)
        # The ring model sends each key where nginx does.
        upstream = load_config(str(inst.conf), logs=False).upstream("backend")
        down = {s.address for s in upstream.servers if s.down}
        ring = Ring([(s.address, s.weight) for s in upstream.servers])
        if percent < 100:
            assert abs(ring.shares(down)[names["v2"]] - percent) < 0.5, (percent, ring.shares(down))
        assert all(names[body] == ring.lookup(key, down) for key, body in routes.items()), percent
        on_canary = now

    applier.restore(snapshot)
    assert inst.config_files() == original
    assert route(inst.ports["front"]) == before


def test_set_weight_on_a_plain_upstream_keeps_reduced_weights(nginx):
    out = set_weight(nginx, 10, nginx.v2)
    assert "sticky" not in out and "weight=9" in out
