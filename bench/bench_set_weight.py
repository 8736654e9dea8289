#!/usr/bin/env python3
"""How long does ``nginx-canary set-weight`` take, end to end, next to ``nginx -t``?

Builds two nginx configurations in a temporary directory, starts a real nginx
for each on free loopback ports, then measures, interleaved in the same run:

  * ``nginx -t -p PREFIX -c CONF`` alone (process start to exit), and
  * ``nginx-canary ... set-weight UPSTREAM PERCENT --canary ADDR`` as a user
    runs it (process start to exit), cycling PERCENT through 10 25 50 100 0.

Configs:
  small  one upstream ``backend`` (stable + canary staged down), backends
         served by nginx itself, a front server proxying to it.
  large  5,000 upstreams in 500 include files (conf.d/*.conf), 2 servers each,
         one server block per include file with 10 proxy_pass locations.

The first set-weight run of each config starts with no parse cache
(STATE/parse-cache.json deleted) and is reported apart from the warm runs.

It prints figures only; nothing is asserted about timing. Targets, for
context: small set-weight <= 300 ms; large set-weight <= 2.5 x nginx -t.

Usage: .venv/bin/python bench/bench_set_weight.py [--runs N] [--quick] [--profile DIR]

Standard library and the package's nginx harness (nginx_canary.demo.nginx_harness,
on psutil; the tests and the demo use it too).
Everything (both nginx instances, the temp dir) is cleaned up on exit, Ctrl-C
or error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from nginx_canary.demo.nginx_harness import NginxHarnessError, PrivateNginx, free_ports

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PERCENTS = (10, 25, 50, 100, 0)

LARGE_FILES = 500
LARGE_UPSTREAMS_PER_FILE = 10
LARGE_LISTEN_PORTS = 4

START_TIMEOUT = 30.0       # nginx start until it listens with all its workers
SETTLE_TIMEOUT = 15.0      # old workers gone after a reload
NGINX_T_TIMEOUT = 120.0
SET_WEIGHT_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0
RSS_POLL = 0.002           # seconds between VmHWM samples of the nginx-canary process


class BenchError(Exception):
    """Something went wrong that makes the figures meaningless: abort."""


# -- small helpers -------------------------------------------------------------

def find_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not found:
        raise BenchError("nginx not found (PATH or /usr/sbin/nginx); install it: apt-get install -y nginx")
    return found


def find_canary() -> str:
    candidates = [
        os.path.join(os.path.dirname(sys.executable), "nginx-canary"),
        os.path.join(REPO, ".venv", "bin", "nginx-canary"),
    ]
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    found = shutil.which("nginx-canary")
    if not found:
        raise BenchError("nginx-canary not found; run with the venv's python (.venv/bin/python bench/bench_set_weight.py)")
    return found


@dataclass
class Timed:
    """One child process run: wall time, exit code, peak RSS (KiB, 0 = not sampled), output."""

    argv: List[str]
    ms: float
    returncode: int
    peak_rss_kib: int
    stdout: str
    stderr: str


_SELF_CMDLINE = b""


def _peak_rss_kib(pid: int) -> Optional[int]:
    """VmHWM (peak resident set) of ``pid`` once it has exec'd, else None.

    Until the child has exec'd, /proc/PID shows this process's memory (fork or
    vfork), so samples are taken only when its cmdline differs from ours.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if fh.read() == _SELF_CMDLINE:
                return None
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _wait_exit(pid: int, deadline: float, poll_rss: float) -> Tuple[int, Optional[int]]:
    """Reap ``pid`` by ``deadline`` (perf_counter); (wait status, peak RSS KiB or None).

    While it runs, its VmHWM is sampled every ``poll_rss`` seconds (0: not at
    all). A pidfd wakes us the moment it exits, so the sampling does not
    round the measured time.
    """
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    peak: Optional[int] = None
    try:
        while True:
            if poll_rss:
                sample = _peak_rss_kib(pid)
                if sample is not None:
                    peak = sample if peak is None else max(peak, sample)
            got, status = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                return status, peak
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError
            step = min(left, poll_rss or 1.0)
            if pidfd is not None:
                select.select([pidfd], [], [], step)
            else:
                time.sleep(min(step, 0.0005))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def run_timed(argv: Sequence[str], timeout: float, poll_rss: float = 0.0) -> Timed:
    """Run ``argv``; wall time from just before the fork to reaping the exited process.

    With ``poll_rss`` > 0, peak RSS is the child's own VmHWM from
    /proc/PID/status, sampled every ``poll_rss`` s (the last sample before
    exit; VmHWM only grows, so only growth in the final interval is missed).
    It is the nginx-canary process alone, not the nginx -t it runs.
    (rusage ru_maxrss is not used: on Linux a child's includes the parent's
    RSS at fork/exec time, i.e. this script's.)
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            status, peak = _wait_exit(proc.pid, t0 + timeout, poll_rss)
        except TimeoutError:
            proc.kill()
            proc.wait(timeout=10)
            raise BenchError(f"{' '.join(argv)} did not finish within {timeout:g} s") from None
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise
        t1 = time.perf_counter()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by us; keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        return Timed(list(argv), (t1 - t0) * 1000.0, proc.returncode, peak or 0,
                     out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"))


def stats(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


# -- configs ---------------------------------------------------------------------

COMMON_HTTP = """\
    access_log logs/access.log;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
"""

SMALL_MAIN = """\
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 512; }}
http {{
{common}    include conf.d/*.conf;
    server {{
        listen 127.0.0.1:{front};
        location / {{ proxy_pass http://backend; }}
    }}
    server {{ listen 127.0.0.1:{v1}; return 200 "v1"; }}
    server {{ listen 127.0.0.1:{v2}; return 200 "v2"; }}
}}
"""

SMALL_UPSTREAM = """\
# the application: v1 is stable, v2 is the canary (staged as down)
upstream backend {{
    server 127.0.0.1:{v1};
    server 127.0.0.1:{v2} down;
}}
"""

LARGE_MAIN = """\
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log notice;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
{common}    server_names_hash_max_size 4096;
    server_names_hash_bucket_size 128;
    proxy_connect_timeout 2s;
    proxy_read_timeout 30s;
    # one file per site: its upstreams and its server block
    include conf.d/*.conf;
    server {{
        listen 127.0.0.1:{front} default_server;
        location = /healthz {{ return 200 "ok"; }}
    }}
}}
"""


@dataclass
class Site:
    """One nginx under test: where it lives and what set-weight changes."""

    name: str
    prefix: str
    state_dir: str
    front_port: int
    upstream: str
    canary: str
    stable: str
    upstream_file: str
    workers: int
    nginx: PrivateNginx
    files: int = 0
    upstreams: int = 0

    @property
    def conf(self) -> str:
        return os.path.join(self.prefix, "nginx.conf")


def _make_prefix(root: str, name: str) -> str:
    prefix = os.path.join(root, name)
    for d in (prefix, os.path.join(prefix, "logs"), os.path.join(prefix, "conf.d"), os.path.join(prefix, "tmp")):
        os.makedirs(d, exist_ok=True)
    # nginx workers run as nobody: the prefix and logs must be reachable.
    for d in (prefix, os.path.join(prefix, "logs")):
        os.chmod(d, 0o755)
    return prefix


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def build_small(root: str, nginx: str) -> Site:
    prefix = _make_prefix(root, "small")
    front, v1, v2 = free_ports(3)
    _write(os.path.join(prefix, "nginx.conf"), SMALL_MAIN.format(common=COMMON_HTTP, front=front, v1=v1, v2=v2))
    upstream_file = os.path.join(prefix, "conf.d", "upstream.conf")
    _write(upstream_file, SMALL_UPSTREAM.format(v1=v1, v2=v2))
    return Site("small", prefix, os.path.join(root, "state-small"), front, "backend",
                canary=f"127.0.0.1:{v2}", stable=f"127.0.0.1:{v1}", upstream_file=upstream_file,
                workers=2, nginx=PrivateNginx(nginx, prefix, {"front": front}, worker_processes=2),
                files=2, upstreams=1)


def _large_site_file(i: int, listen_ports: Sequence[int], chosen: Tuple[int, int]) -> str:
    """Include file ``i``: 10 upstreams and one server block proxying to them."""
    lines = [f"# site {i:04d}: generated by bench_set_weight.py", ""]
    for j in range(LARGE_UPSTREAMS_PER_FILE):
        n = i * LARGE_UPSTREAMS_PER_FILE + j
        port = 20000 + n  # nothing listens there; nginx only needs the addresses
        a, b = f"127.0.1.{1 + n % 250}:{port}", f"127.0.2.{1 + n % 250}:{port}"
        lines.append(f"upstream app-{i:04d}-{j:02d} {{")
        if (i, j) == chosen or j % 3 == 0:
            # stable plus a canary staged as down (what set-weight expects)
            lines.append(f"    server {a} max_fails=3 fail_timeout=10s;")
            lines.append(f"    server {b} max_fails=3 fail_timeout=10s down;")
        elif j % 3 == 1:
            lines.append(f"    server {a} weight=3;")
            lines.append(f"    server {b} weight=1;")
        else:
            lines.append(f"    server {a};")
            lines.append(f"    server {b} backup;")
        lines.append("    keepalive 16;")
        lines.append("}")
        lines.append("")
    port = listen_ports[i % len(listen_ports)]
    lines.append("server {")
    lines.append(f"    listen 127.0.0.1:{port};")
    lines.append(f"    server_name site{i:04d}.bench.test www.site{i:04d}.bench.test;")
    lines.append("    proxy_http_version 1.1;")
    lines.append('    proxy_set_header Connection "";')
    lines.append("    proxy_set_header Host $host;")
    lines.append("    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
    for j in range(LARGE_UPSTREAMS_PER_FILE):
        lines.append(f"    location /svc{j:02d}/ {{")
        lines.append(f"        proxy_pass http://app-{i:04d}-{j:02d};")
        if j % 2:
            lines.append("        proxy_next_upstream error timeout http_502;")
        lines.append("    }")
    lines.append("}")
    lines.append("")
    return "\n".join(lines)


def build_large(root: str, nginx: str) -> Site:
    prefix = _make_prefix(root, "large")
    ports = free_ports(1 + LARGE_LISTEN_PORTS)
    front, listen_ports = ports[0], ports[1:]
    _write(os.path.join(prefix, "nginx.conf"), LARGE_MAIN.format(common=COMMON_HTTP, front=front))
    chosen = (LARGE_FILES // 2, LARGE_UPSTREAMS_PER_FILE // 2)  # middle include file, middle upstream
    for i in range(LARGE_FILES):
        _write(os.path.join(prefix, "conf.d", f"site-{i:04d}.conf"), _large_site_file(i, listen_ports, chosen))
    i, j = chosen
    n = i * LARGE_UPSTREAMS_PER_FILE + j
    port = 20000 + n
    return Site("large", prefix, os.path.join(root, "state-large"), front, f"app-{i:04d}-{j:02d}",
                canary=f"127.0.2.{1 + n % 250}:{port}", stable=f"127.0.1.{1 + n % 250}:{port}",
                upstream_file=os.path.join(prefix, "conf.d", f"site-{i:04d}.conf"),
                workers=2, nginx=PrivateNginx(nginx, prefix, {"front": front}, worker_processes=2),
                files=1 + LARGE_FILES, upstreams=LARGE_FILES * LARGE_UPSTREAMS_PER_FILE)


# -- running nginx -----------------------------------------------------------------

def nginx_test_ok(nginx: str, site: Site) -> None:
    res = run_timed([nginx, "-t", "-p", site.prefix, "-c", site.conf], NGINX_T_TIMEOUT)
    if res.returncode != 0:
        raise BenchError(f"{site.name}: nginx -t rejects the generated config:\n{res.stderr.strip()}")


def start_nginx(site: Site) -> None:
    """Start the site's nginx; wait until it listens with all its workers. Raises BenchError."""
    try:
        site.nginx.start(START_TIMEOUT)
    except NginxHarnessError as exc:
        raise BenchError(f"{site.name}: {exc}") from None


def settle(site: Site) -> float:
    """Wait until only the new generation of workers is left (old ones exited); seconds waited. Raises BenchError."""
    t0 = time.monotonic()
    try:
        settled = site.nginx.wait_settled(SETTLE_TIMEOUT)
    except NginxHarnessError as exc:
        raise BenchError(f"{site.name}: {exc}") from None
    if not settled:
        print(f"  warning: {site.name}: old workers still present after {SETTLE_TIMEOUT:g} s; going on", file=sys.stderr)
    return time.monotonic() - t0


def stop_nginx(site: Site) -> None:
    """SIGQUIT the site's master, wait with a deadline, then SIGKILL what is left."""
    killed = site.nginx.stop(STOP_TIMEOUT)
    if killed:
        print(f"warning: {site.name}: nginx processes {killed} ignored SIGQUIT for {STOP_TIMEOUT:g} s; killed",
              file=sys.stderr)


# -- the measurement -------------------------------------------------------------------

_RELOAD_MS = re.compile(r", (\d+) ms\s*$")


@dataclass
class Result:
    site: Site
    nginx_t: List[Timed] = field(default_factory=list)
    cold: Optional[Timed] = None
    warm: List[Timed] = field(default_factory=list)
    reload_ms: List[float] = field(default_factory=list)  # as nginx-canary reports it (SIGHUP to new workers)


def global_args(nginx: str, site: Site) -> List[str]:
    return ["--nginx-conf", site.conf, "--nginx-prefix", site.prefix, "--nginx-bin", nginx, "--state-dir", site.state_dir]


def set_weight_args(site: Site, percent: int) -> List[str]:
    return ["set-weight", site.upstream, str(percent), "--canary", site.canary]


def canary_argv(canary: str, nginx: str, site: Site, percent: int) -> List[str]:
    return [canary, *global_args(nginx, site), *set_weight_args(site, percent)]


def check_set_weight(res: Timed, site: Site, percent: int) -> float:
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if res.returncode != 0 or not last.startswith("reloaded:"):
        raise BenchError(
            f"{site.name}: set-weight {site.upstream} {percent} failed (exit {res.returncode}); "
            f"expected a last line starting with 'reloaded:'\n"
            f"  command: {' '.join(res.argv)}\n  stdout: {res.stdout.strip()[-2000:]!r}\n  stderr: {res.stderr.strip()[-2000:]!r}"
        )
    m = _RELOAD_MS.search(last)
    return float(m.group(1)) if m else float("nan")


def measure(nginx: str, canary: str, site: Site, warm_runs: int, percent_iter: List[int]) -> Result:
    result = Result(site)
    cache = os.path.join(site.state_dir, "parse-cache.json")
    if os.path.exists(cache):
        os.unlink(cache)
    t_argv = [nginx, "-t", "-p", site.prefix, "-c", site.conf]
    for run in range(1 + warm_runs):
        percent = percent_iter.pop(0)
        percent_iter.append(percent)
        label = "cold" if run == 0 else f"warm {run}"
        # Interleave, alternating which goes first, so drift hits both alike.
        order = ("t", "sw") if run % 2 == 0 else ("sw", "t")
        for what in order:
            if what == "t":
                res = run_timed(t_argv, NGINX_T_TIMEOUT)
                if res.returncode != 0:
                    raise BenchError(f"{site.name}: nginx -t failed (exit {res.returncode}): {res.stderr.strip()}")
                result.nginx_t.append(res)
            else:
                res = run_timed(canary_argv(canary, nginx, site, percent), SET_WEIGHT_TIMEOUT, poll_rss=RSS_POLL)
                result.reload_ms.append(check_set_weight(res, site, percent))
                if run == 0:
                    result.cold = res
                else:
                    result.warm.append(res)
                settle(site)  # old workers gone before the next measurement
                print(f"  {site.name:5} {label:8} set-weight {percent:>3}%  {res.ms:8.1f} ms   "
                      f"(nginx -t so far median {statistics.median(r.ms for r in result.nginx_t) if result.nginx_t else float('nan'):.1f} ms)",
                      flush=True)
    return result


def summarize(result: Result) -> Dict[str, object]:
    t_ms = [r.ms for r in result.nginx_t]
    warm_ms = [r.ms for r in result.warm]
    t_med = statistics.median(t_ms)
    cold_ms = result.cold.ms if result.cold else None
    warm_med = statistics.median(warm_ms) if warm_ms else None
    return {
        "config": {"name": result.site.name, "files": result.site.files, "upstreams": result.site.upstreams,
                   "upstream": result.site.upstream, "upstream_file": os.path.basename(result.site.upstream_file)},
        "nginx_t_ms": stats(t_ms),
        "set_weight_cold_ms": cold_ms,
        "set_weight_warm_ms": stats(warm_ms),
        "set_weight_all_ms": stats(([cold_ms] if cold_ms is not None else []) + warm_ms),
        "ratio_warm_median_to_nginx_t_median": (warm_med / t_med) if warm_med else None,
        "ratio_cold_to_nginx_t_median": (cold_ms / t_med) if cold_ms else None,
        "reload_wait_ms_reported_by_tool": stats([x for x in result.reload_ms if x == x]),
        "samples_ms": {"nginx_t": [round(x, 1) for x in t_ms], "set_weight_warm": [round(x, 1) for x in warm_ms],
                       "set_weight_cold": round(cold_ms, 1) if cold_ms is not None else None},
        "peak_rss_mib": {
            "method": f"polling /proc/PID/status VmHWM of the nginx-canary process every {RSS_POLL * 1000:g} ms "
                      "(the process alone, not the nginx -t it runs)",
            "set_weight_cold": result.cold.peak_rss_kib / 1024 if result.cold and result.cold.peak_rss_kib else None,
            "set_weight_warm_max": max(r.peak_rss_kib for r in result.warm) / 1024 if result.warm else None,
        },
    }


def _f(x: Optional[float], nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def print_table(summaries: List[Dict[str, object]], facts: Dict[str, object]) -> None:
    print()
    print(f"machine: nproc={facts['nproc']}  python {facts['python']}  {facts['nginx']}  crossplane {facts['crossplane']}  "
          f"click {facts['click']}  psutil {facts['psutil']}  kernel {facts['kernel']}")
    print(f"load average (1/5/15 min) at start {facts['loadavg_start']}, at end {facts.get('loadavg_end')} "
          f"(other work on this machine skews the figures)")
    header = f"{'config':<7} {'what':<26} {'n':>3} {'median':>9} {'min':>9} {'max':>9}  {'peak RSS':>9}"
    print(header)
    print("-" * len(header))
    for s in summaries:
        cfg = s["config"]
        name = cfg["name"]
        rss = s["peak_rss_mib"]
        t = s["nginx_t_ms"]
        w = s["set_weight_warm_ms"]
        a = s["set_weight_all_ms"]
        r = s["reload_wait_ms_reported_by_tool"]
        print(f"{name:<7} {'nginx -t':<26} {t['n']:>3} {_f(t['median']):>9} {_f(t['min']):>9} {_f(t['max']):>9}")
        print(f"{name:<7} {'set-weight cold cache':<26} {1:>3} {_f(s['set_weight_cold_ms']):>9} {'':>9} {'':>9}  "
              f"{_f(rss['set_weight_cold']):>6} MiB")
        print(f"{name:<7} {'set-weight warm cache':<26} {w['n']:>3} {_f(w['median']):>9} {_f(w['min']):>9} {_f(w['max']):>9}  "
              f"{_f(rss['set_weight_warm_max']):>6} MiB")
        print(f"{name:<7} {'set-weight all runs':<26} {a['n']:>3} {_f(a['median']):>9} {_f(a['min']):>9} {_f(a['max']):>9}")
        print(f"{name:<7} {'  of which reload wait*':<26} {r['n']:>3} {_f(r['median']):>9} {_f(r['min']):>9} {_f(r['max']):>9}")
        print(f"{name:<7} {'ratio set-weight/nginx -t':<26} {'':>3} "
              f"warm {_f(s['ratio_warm_median_to_nginx_t_median'], 2)}x, cold {_f(s['ratio_cold_to_nginx_t_median'], 2)}x   "
              f"({cfg['files']} files, {cfg['upstreams']} upstreams; set-weight on {cfg['upstream']} in {cfg['upstream_file']})")
    print("-" * len(header))
    print(f"times in ms, process start to exit. peak RSS = VmHWM of the nginx-canary process, polled every {RSS_POLL * 1000:g} ms")
    print("(excludes the nginx -t it runs). * reload wait = SIGHUP until new workers, as printed by nginx-canary.")
    small = next((s for s in summaries if s["config"]["name"] == "small"), None)
    large = next((s for s in summaries if s["config"]["name"] == "large"), None)
    if small and small["set_weight_warm_ms"]["median"] is not None:
        print(f"target small set-weight <= 300 ms: warm median {_f(small['set_weight_warm_ms']['median'])} ms, "
              f"cold {_f(small['set_weight_cold_ms'])} ms")
    if large and large["ratio_warm_median_to_nginx_t_median"] is not None:
        print(f"target large set-weight <= 2.5 x nginx -t: warm {_f(large['ratio_warm_median_to_nginx_t_median'], 2)}x, "
              f"cold {_f(large['ratio_cold_to_nginx_t_median'], 2)}x")


# -- optional profiling ------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
_IMPORTS_OF_INTEREST = ("click", "psutil", "crossplane", "site", "__editable___nginx_canary_0_1_0_finder")


def _import_summary(log: str) -> Dict[str, float]:
    """Cumulative import ms of the packages of interest, self ms of nginx_canary's own modules, and the total."""
    out: Dict[str, float] = {}
    own = 0.0
    total = 0.0
    for line in log.splitlines():
        m = _IMPORT_LINE.match(line)
        if not m:
            continue
        self_ms, cum_ms, depth, name = int(m.group(1)) / 1000, int(m.group(2)) / 1000, len(m.group(3)), m.group(4)
        if name.startswith("nginx_canary"):
            own += self_ms
        if name in _IMPORTS_OF_INTEREST and name not in out:
            out[name] = round(cum_ms, 1)
        if depth <= 1:
            total += cum_ms
    out["nginx_canary modules (self time)"] = round(own, 1)
    out["all imports (incl. site)"] = round(total, 1)
    return out


_PHASES = (
    # label, file suffix ("~" for builtins), function name
    ("total (profiled)", None, None),
    ("read_config", "nginx_canary/nginx/operations.py", "read_config"),
    ("  json.loads (parse cache)", "json/__init__.py", "loads"),
    ("  crossplane.parse", "crossplane/parser.py", "parse"),
    ("  json.dumps (parse cache)", "json/__init__.py", "dumps"),
    ("plan_split", "nginx_canary/nginx/operations.py", "plan_split"),
    ("find_master", "nginx_canary/nginx/control.py", "find_master"),
    ("snapshot", "nginx_canary/nginx/transaction.py", "_snapshot"),
    ("atomic_write (fsync)", "nginx_canary/fsutil.py", "atomic_write"),
    ("nginx -t", "nginx_canary/nginx/control.py", "test"),
    ("nginx -V", "nginx_canary/nginx/control.py", "compiled_defaults"),
    ("reload wait", "nginx_canary/nginx/control.py", "reload"),
    ("  Nginx.workers (psutil process scans)", "nginx_canary/nginx/control.py", "workers"),
)


def _pstats_summary(path: str) -> Dict[str, float]:
    """Cumulative ms of set-weight's phases from a cProfile dump (cProfile inflates pure-Python parts)."""
    import pstats  # only needed with --profile

    st = pstats.Stats(path)
    raw = st.stats  # type: ignore[attr-defined]
    out: Dict[str, float] = {}
    for label, filename, func in _PHASES:
        if filename is None:
            out[label] = round(st.total_tt * 1000, 1)  # type: ignore[attr-defined]
            continue
        hits = [v for k, v in raw.items() if k[0].endswith(filename) and k[2] == func]
        cum = sum(v[3] for v in hits)
        calls = sum(v[1] for v in hits)
        out[label + (f" [{calls} calls]" if calls > 1 else "")] = round(cum * 1000, 1)
    return out


def profile(nginx: str, canary: str, site: Site, out_dir: str, percent_iter: List[int], py: str) -> Dict[str, object]:
    """One extra set-weight under -X importtime and one under cProfile (warm cache); files go to out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    found: Dict[str, object] = {}
    args = global_args(nginx, site)
    for kind in ("importtime", "cprofile"):
        percent = percent_iter.pop(0)
        percent_iter.append(percent)
        tail = set_weight_args(site, percent)
        if kind == "importtime":
            argv = [py, "-X", "importtime", "-m", "nginx_canary", *args, *tail]
        else:
            pstats_path = os.path.join(out_dir, f"{site.name}.pstats")
            argv = [py, "-m", "cProfile", "-o", pstats_path, "-m", "nginx_canary", *args, *tail]
        res = run_timed(argv, SET_WEIGHT_TIMEOUT)
        check_set_weight(res, site, percent)
        settle(site)
        if kind == "importtime":
            log = os.path.join(out_dir, f"{site.name}.importtime.txt")
            _write(log, res.stderr)
            found["import_ms"] = _import_summary(res.stderr)
            found["importtime_file"] = log
        else:
            found["phases_ms"] = _pstats_summary(pstats_path)
            found["pstats_file"] = pstats_path
    return found


# -- main ---------------------------------------------------------------------------------

def facts(nginx: str) -> Dict[str, object]:
    def version(mod: str) -> str:
        try:
            from importlib.metadata import version as v
            return v(mod)
        except Exception:  # noqa: BLE001 - a fact we cannot get is just "?"
            return "?"
    nv = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "nginx": (nv.stderr or nv.stdout).strip().replace("nginx version: ", ""),
        "crossplane": version("crossplane"),
        "click": version("click"),
        "psutil": version("psutil"),
        "kernel": platform.release(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.machine(),
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None,
                    help="warm set-weight runs per config (default 10 small, 5 large; 3/2 with --quick); "
                         "each config also gets one cold run first")
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--only", choices=("small", "large"), help="run one config only")
    ap.add_argument("--profile", metavar="DIR",
                    help="afterwards, run one set-weight per config under -X importtime and one under cProfile; "
                         "write DIR/<config>.importtime.txt and DIR/<config>.pstats")
    opts = ap.parse_args(argv)
    small_runs = opts.runs if opts.runs is not None else (3 if opts.quick else 10)
    large_runs = opts.runs if opts.runs is not None else (2 if opts.quick else 5)
    if small_runs < 1 or large_runs < 1:
        ap.error("--runs must be at least 1")

    # Ctrl-C and SIGTERM both end up in the finally below.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored

    global _SELF_CMDLINE
    with open("/proc/self/cmdline", "rb") as fh:
        _SELF_CMDLINE = fh.read()
    try:
        nginx = find_nginx()
        canary = find_canary()
        info = facts(nginx)
    except BenchError as exc:
        print(f"bench_set_weight: ABORTED: {exc}", file=sys.stderr)
        return 2
    root = tempfile.mkdtemp(prefix="nginx-canary-bench-")
    os.chmod(root, 0o755)
    sites: List[Site] = []
    summaries: List[Dict[str, object]] = []
    profiling: Dict[str, object] = {}
    try:
        wanted = [opts.only] if opts.only else ["small", "large"]
        for name in wanted:
            t0 = time.perf_counter()
            site = build_small(root, nginx) if name == "small" else build_large(root, nginx)
            sites.append(site)
            nginx_test_ok(nginx, site)
            start_nginx(site)
            print(f"{name}: {site.files} files, {site.upstreams} upstreams, nginx master {site.nginx.master_pid()} "
                  f"(built, tested and started in {time.perf_counter() - t0:.1f} s)", flush=True)
        if "small" in wanted:
            small = next(s for s in sites if s.name == "small")
            with urllib.request.urlopen(f"http://127.0.0.1:{small.front_port}/", timeout=5) as resp:
                body = resp.read().decode()
            if body != "v1":
                raise BenchError(f"small: front answered {body!r}, expected 'v1'")
        for site in sites:
            runs = small_runs if site.name == "small" else large_runs
            percent_iter = list(PERCENTS)
            result = measure(nginx, canary, site, runs, percent_iter)
            summaries.append(summarize(result))
            if opts.profile:
                profiling[site.name] = profile(nginx, canary, site, os.path.abspath(opts.profile), percent_iter, sys.executable)
        info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        print_table(summaries, info)
        if profiling:
            print()
            for name, found in profiling.items():
                imports = ", ".join(f"{k} {v:.0f}" for k, v in found.get("import_ms", {}).items())
                print(f"profile {name} (one warm run each; cProfile/importtime inflate Python time):")
                print(f"  import ms (-X importtime): {imports}")
                for label, ms in found.get("phases_ms", {}).items():
                    print(f"  {label:<50} {ms:9.1f} ms")
                print(f"  files: {found.get('pstats_file')}, {found.get('importtime_file')}")
        print("JSON: " + json.dumps({"facts": info, "results": summaries, "profile": profiling or None}, sort_keys=True))
        return 0
    except BenchError as exc:
        print(f"bench_set_weight: ABORTED: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench_set_weight: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        for site in sites:
            try:
                stop_nginx(site)
            except Exception as exc:  # noqa: BLE001 - keep cleaning up the rest
                print(f"warning: stopping {site.name} nginx: {exc}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
