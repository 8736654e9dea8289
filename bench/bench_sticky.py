#!/usr/bin/env python3
"""Sticky canaries: share per step and keys that moved, sticky weights against today's reduced weights.

Starts a real nginx (temporary prefix, loopback) with an upstream of two stable
servers and a canary, and steps the canary through STEPS three ways:

  sticky      ``hash $cookie_uid consistent`` with the weights set-weight picks
              for it (nginx_canary.nginx.sticky: out of 1000, canary only grows)
  reduced     the same ``hash`` upstream with the smallest-integer weights
              (10 % -> 1:9:9 would be 2:9:9 ...; what set-weight wrote before sticky splits)
  per-request no ``hash``: weighted round robin with the reduced weights

At each step every one of KEYS distinct ``uid`` cookies sends one request
(keep-alive, 4 connections); the table shows the canary's measured share, the
share the ring model computes (hash modes), and how many keys left the canary
or joined it since the previous step. It also times ``nginx -t`` with both
kinds of weights. Figures only; nothing is asserted.

Usage: .venv/bin/python bench/bench_sticky.py [--keys N]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from nginx_canary.demo.nginx_harness import PrivateNginx, free_ports
from nginx_canary.nginx.chash import Ring
from nginx_canary.nginx.split import Split, compute_split
from nginx_canary.nginx.sticky import sticky_split

STEPS = (Fraction(1), Fraction(5), Fraction(10), Fraction(25), Fraction(3333, 100), Fraction(40), Fraction(50),
         Fraction(100))
MAIN = """\
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    include upstream.conf;
    server {{ listen 127.0.0.1:{front}; location / {{ proxy_pass http://backend; }} }}
    server {{ listen 127.0.0.1:{v1}; return 200 "v1"; }}
    server {{ listen 127.0.0.1:{v2}; return 200 "v2"; }}
    server {{ listen 127.0.0.1:{v3}; return 200 "v3"; }}
}}
"""


def upstream_conf(hash_line: str, servers: Sequence[Tuple[str, int, bool]]) -> str:
    lines = [f"    server {name} weight={weight}{' down' if down else ''};" for name, weight, down in servers]
    return "upstream backend {\n" + (f"    {hash_line}\n" if hash_line else "") + "\n".join(lines) + "\n}\n"


def fetch(port: int, keys: List[str]) -> Dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = {}
    try:
        for key in keys:
            conn.request("GET", "/", headers={"Cookie": f"uid={key}"})
            out[key] = conn.getresponse().read().decode()
    finally:
        conn.close()
    return out


def route(port: int, keys: List[str]) -> Dict[str, str]:
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda chunk: fetch(port, chunk), [keys[i::4] for i in range(4)]))
    return {k: v for part in parts for k, v in part.items()}


def splits(mode: str) -> List[Split]:
    out = []
    canary, stable = (1,), (1, 1)
    for percent in STEPS:
        split = sticky_split(canary, stable, percent) if mode == "sticky" else compute_split([1], [1, 1], percent)
        canary, stable = split.canary_weights, split.stable_weights
        out.append(split)
    return out


def servers_of(split: Split, names: Dict[str, str]) -> List[Tuple[str, int, bool]]:
    return [(names["v2"], split.canary_weights[0], split.canary_down),
            (names["v1"], split.stable_weights[0], split.stable_down),
            (names["v3"], split.stable_weights[1], split.stable_down)]


def run_mode(nginx: PrivateNginx, mode: str, names: Dict[str, str], keys: List[str]) -> None:
    hash_line = "" if mode == "per-request" else "hash $cookie_uid consistent;"
    print(f"\n{mode}: {hash_line or 'weighted round robin'}")
    print(f"{'target %':>9} {'weights c:s1:s2':>16} {'measured %':>11} {'ring %':>7} {'left canary':>12} {'joined':>7}")
    before: Optional[Set[str]] = None
    for percent, split in zip(STEPS, splits(mode)):
        servers = servers_of(split, names)
        (nginx.prefix / "upstream.conf").write_text(upstream_conf(hash_line, servers))
        nginx.reload()
        routes = route(nginx.ports["front"], keys)
        on_canary = {k for k, body in routes.items() if body == "v2"}
        ring = "-"
        if hash_line:
            model = Ring([(name, weight) for name, weight, _ in servers])
            down = {name for name, _, is_down in servers if is_down}
            ring = f"{model.shares(down).get(names['v2'], 0.0):.2f}"
        left = "-" if before is None else str(len(before - on_canary))
        joined = "-" if before is None else str(len(on_canary - before))
        weights = ":".join(str(w) for _, w, _ in servers)
        print(f"{float(percent):>9.2f} {weights:>16} {100 * len(on_canary) / len(keys):>11.2f} {ring:>7} "
              f"{left:>12} {joined:>7}", flush=True)
        before = on_canary


def time_nginx_t(nginx: PrivateNginx, names: Dict[str, str]) -> None:
    print("\nnginx -t at 50 % (median of 5 runs):")
    for mode in ("sticky", "reduced"):
        split = splits(mode)[STEPS.index(Fraction(50))]
        (nginx.prefix / "upstream.conf").write_text(upstream_conf("hash $cookie_uid consistent;",
                                                                   servers_of(split, names)))
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            nginx.run("-t")
            runs.append(time.perf_counter() - start)
        total = sum(split.canary_weights) + sum(split.stable_weights)
        print(f"  {mode:<8} weights out of {total:<5} {sorted(runs)[2] * 1000:6.1f} ms "
              f"({160 * total} ring points, {160 * total * 16 / 1024:.0f} KiB)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10000, help="distinct uid cookies per step (default 10000)")
    args = parser.parse_args(argv)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    keys = [f"u{n:05d}" for n in range(args.keys)]
    root = Path(tempfile.mkdtemp(prefix="bench-sticky-"))
    front, v1, v2, v3 = free_ports(4)
    names = {"v1": f"127.0.0.1:{v1}", "v2": f"127.0.0.1:{v2}", "v3": f"127.0.0.1:{v3}"}
    (root / "logs").mkdir()
    (root / "nginx.conf").write_text(MAIN.format(front=front, v1=v1, v2=v2, v3=v3))
    (root / "upstream.conf").write_text(upstream_conf("", [(names["v1"], 1, False), (names["v3"], 1, False),
                                                           (names["v2"], 1, True)]))
    nginx = PrivateNginx(binary, root, {"front": front}, worker_processes=2)
    try:
        nginx.start()
        print(f"nginx {binary}, {args.keys} distinct uid cookies, canary {names['v2']}, "
              f"stable {names['v1']} and {names['v3']}")
        for mode in ("sticky", "reduced", "per-request"):
            run_mode(nginx, mode, names, keys)
        time_nginx_t(nginx, names)
    finally:
        nginx.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
