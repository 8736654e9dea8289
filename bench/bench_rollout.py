#!/usr/bin/env python3
"""Rollout daemon benchmarks (issue #4): time to rollback, errors caused by stepping, overhead.

Each benchmark runs a real nginx from a private prefix on free loopback ports
(nginx_canary.demo.site.DemoSite), the daemon as a subprocess of this same
interpreter (``python -m nginx_canary ... daemon``) and real load, and runs
next to its baseline in the same invocation:

rollback  Load from run_load (``--rate``, default 220 req/s) through nginx to two
          DemoApp backends, each in its own process (v1 stable, v2 canary).
          Rollout ``app`` with steps [10, 100] and a one-hour step interval,
          so it stays at 10 %; analysis
          interval 250ms, window 10s, min_requests 20, failure_threshold 2.
          Once the rollout has been at 10 % for ``--bake`` seconds (default 12:
          the 10 s window is full of healthy canary traffic) and its last check
          passed, T0 = the moment just before v2 is switched to 100 % 5xx
          (POST /__admin {"error_rate": 1.0}). This process then polls every 2 ms
          until the restored config is live: the upstream file holds its
          original bytes again AND a worker that was not there at T0 holds the
          listening socket AND no worker of T0 still holds it (read from
          /proc/PID/fd against the LISTEN inode in /proc/net/tcp). Reported per
          run, then p50 and max over ``--runs`` runs (default 5): T0 -> live;
          T0 -> first failed check and T0 -> rollback decision (from the
          daemon's history, rollouts/app.history.jsonl); decision -> file
          restored and decision -> live (observed here); T0 -> the last 5xx
          nginx logged (``$msec`` of the access log) and the 5xx clients got.
          A run whose healthy canary is rolled back before T0 (a false
          positive of the checks) is counted, reported and repeated.
          Baseline: the same poll measures ``nginx -s reload``'s equivalent
          (SIGHUP to the master, new generation live) on the same nginx, i.e.
          what any restore-and-reload costs without detection.
stepping  A separate backend nginx serves ``return 200 "v1"`` / ``"v2"`` on the
          site's v1/v2 ports, so the proxy nginx is what saturates. wrk
          (``-t1 -c8 -d20s`` by default, loopback) runs three times: no
          rollout; a full rollout 1 -> 2 -> 5 -> 10 -> 20 -> 50 -> 100 of the
          healthy canary (step_interval 1s) started 1 s into the run, which
          must be promoted before wrk ends; and plain SIGHUP reloads of nginx
          at the rollout's step times (what any reload costs). Counted: wrk's
          non-2xx/3xx answers (status > 399) and socket errors (connect, read,
          write, timeout) from bench/wrk_report.lua, and the statuses nginx
          logged in the access log over the run (499 = wrk closing its
          connections at its deadline, not an answer; left out of non-2xx).
overhead  Same two nginx instances, wrk for ``--overhead-duration`` s (default
          20): baseline with the rollout idle (the daemon still follows the
          log), then with a rollout progressing (steps 1 .. 100, step interval
          duration / 8, so it steps through the whole run). Daemon CPU
          seconds (its own; with its ``nginx -t`` children in brackets), split
          into its main thread and its other threads, over proxy nginx worker
          CPU seconds: live workers' times plus the master's reaped-children
          times (workers that exit on reload count); daemon RSS sampled every
          0.25 s (start, middle, end, max); access-log lines written per
          second; whole-machine CPU busy.

It prints figures only; nothing is asserted. Targets, for context: rollback
p50 <= 1 s; stepping zero non-2xx and zero socket errors; overhead ratio <=
0.05 with RSS flat.

Usage (a non-editable install gives figures as users see them)::

    python3 -m venv /tmp/vbr && /tmp/vbr/bin/pip install .
    PATH=/usr/sbin:$PATH /tmp/vbr/bin/python bench/bench_rollout.py \\
        [--runs 5] [--only rollback,stepping,overhead] [--json FILE]

Needs nginx and wrk (``make bench`` installs both on Debian as root) and
psutil. Every load is bounded in requests and time, loopback only; every
process started here (daemon, nginx instances, demo apps, wrk) is stopped on
exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import psutil

from nginx_canary.daemon import control_socket
from nginx_canary.demo.load import run_load
from nginx_canary.demo.nginx_harness import NginxHarnessError, PrivateNginx
from nginx_canary.demo.site import DemoSite

HERE = Path(__file__).resolve().parent
WRK_LUA = HERE / "wrk_report.lua"

ROLLBACK_ANALYSIS = {"interval": "250ms", "window": "10s", "min_requests": 20, "failure_threshold": 2}
FULL_STEPS = [1, 2, 5, 10, 20, 50, 100]
POLL = 0.002                # seconds between two looks at the file and the workers
LIVE_TIMEOUT = 30.0         # T0 -> restored config live, at most
READY_TIMEOUT = 60.0        # rollout at 10 % with a passing check, at most
DAEMON_START_TIMEOUT = 20.0
DAEMON_STOP_TIMEOUT = 20.0
SETTLE_TIMEOUT = 15.0       # old nginx workers gone after a reload / after load
RSS_EVERY = 0.25
MAX_FALSE_ROLLBACKS = 5     # healthy canary rolled back before T0: repeat the run at most this many times

BACKEND_CONF = """\
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{ listen 127.0.0.1:{v1}; location / {{ return 200 "v1\\n"; }} }}
    server {{ listen 127.0.0.1:{v2}; location / {{ return 200 "v2\\n"; }} }}
}}
"""


class BenchError(Exception):
    """Something went wrong that makes the figures meaningless: abort."""


def log(msg: str = "") -> None:
    print(msg, file=OUT, flush=True)


OUT = sys.stdout


# -- machine -----------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(argv: Sequence[str]) -> str:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (r.stdout + r.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def describe_machine(python: str, cwd: str, nginx_bin: str) -> Dict[str, Any]:
    """Cores, CPU, load average, versions, and which nginx_canary the daemon imports (with or without C)."""
    probe = ("import json, nginx_canary\n"
             "try:\n from nginx_canary.logs import counting\n acc = counting.ACCELERATOR_ERROR is None\n"
             "except ImportError:\n acc = None\n"
             "print(json.dumps({'file': nginx_canary.__file__, 'accelerator': acc}))")
    try:
        r = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30, cwd=cwd)
        info = json.loads(r.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        info = {"file": "?", "accelerator": None}
    return {
        "cpu": _cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "nginx": _version([nginx_bin, "-v"]),
        "wrk": _version(["wrk", "-v"]).split(" [")[0] if shutil.which("wrk") else "not found",
        "kernel": platform.release(),
        "nginx_canary": info.get("file"),
        "c_accelerator": info.get("accelerator"),
        "pure_python_env": os.environ.get("NGINX_CANARY_PURE_PYTHON", ""),
    }


# -- processes -----------------------------------------------------------------------

def stop_process(proc: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM) -> Optional[int]:
    """Signal ``proc`` and wait; SIGKILL after ``timeout``. Returns its exit status."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


class Backend(PrivateNginx):
    """A second nginx that answers ``v1`` / ``v2`` itself on the site's backend ports."""

    def __init__(self, root: Path, nginx_bin: str, ports: Dict[str, int]) -> None:
        # Both servers are one nginx's: once v1 accepts connections, v2's socket is bound too.
        super().__init__(nginx_bin, root / "backend", {"front": ports["v1"], "v2": ports["v2"]})

    def start(self, timeout: float = 10.0) -> None:
        """Write its config and start it. Raises BenchError."""
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        for d in (self.prefix, self.prefix / "logs"):
            d.chmod(0o755)
        self.conf.write_text(BACKEND_CONF.format(v1=self.ports["front"], v2=self.ports["v2"]))
        try:
            super().start(timeout)
        except NginxHarnessError as exc:
            raise BenchError(f"backend nginx did not start: {exc}") from None


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise BenchError(f"nothing listens on 127.0.0.1:{port}")


class AppProcess:
    """A DemoApp in its own process (``python -m nginx_canary.demo.app``), changed with POST /__admin."""

    def __init__(self, python: str, version: str, port: int, cwd: Path) -> None:
        self.port = port
        self._err = open(cwd / f"app-{version}.err", "w")
        self.proc = subprocess.Popen([python, "-m", "nginx_canary.demo.app", "--port", str(port),
                                      "--version", version], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err, cwd=str(cwd), start_new_session=True)
        try:
            wait_listening(port)
        except BenchError:
            self.stop()
            raise

    def update(self, **changes: Any) -> None:
        """POST /__admin with ``changes``; raises BenchError unless the app answers 200."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("POST", "/__admin", body=json.dumps(changes),
                         headers={"Content-Type": "application/json", "Host": f"127.0.0.1:{self.port}"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise BenchError(f"demo app on port {self.port} refused {changes}: {resp.status} {body[:200]!r}")

    def stop(self) -> None:
        try:
            stop_process(self.proc, 10.0)
        finally:
            self._err.close()


class FalseRollback(BenchError):
    """The healthy canary was rolled back before T0: the run measures nothing and is repeated."""


class Daemon:
    """The daemon subprocess of one site."""

    def __init__(self, site: DemoSite, python: str) -> None:
        self.site = site
        self.err_path = site.root / "daemon.err"
        env = {**os.environ, "PATH": "/usr/sbin:" + os.environ.get("PATH", "")}
        self._err = open(self.err_path, "w")
        # cwd = the temp root: `-m nginx_canary` must import the installed package, not a checkout in cwd.
        self.proc = subprocess.Popen(site.daemon_command(python), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err, env=env,
                                     cwd=str(site.root), start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"daemon exited with {self.proc.returncode}: {self.tail()}")
            try:
                self.call("ping")
                return
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline:
                    raise BenchError(f"daemon did not answer within {DAEMON_START_TIMEOUT:g} s: {self.tail()}")
                time.sleep(0.05)

    def call(self, command: str, args: Optional[Dict[str, Any]] = None) -> Any:
        return control_socket.call(self.site.socket_path, command, args or {}, timeout=30.0)

    def status(self) -> Dict[str, Any]:
        return self.call("status", {"name": "app"})["rollouts"][0]

    def history(self, since: float) -> List[Dict[str, Any]]:
        path = self.site.state_dir / "rollouts" / "app.history.jsonl"
        out = []
        try:
            with open(path, "rb") as f:
                for raw in f:
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        continue
                    if (rec.get("time") or 0) >= since:
                        out.append(rec)
        except FileNotFoundError:
            pass
        return out

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.err_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> Optional[int]:
        try:
            return stop_process(self.proc, DAEMON_STOP_TIMEOUT)
        finally:
            self._err.close()


def run_wrk(url: str, duration: int, threads: int, connections: int, stack: contextlib.ExitStack) -> Dict[str, Any]:
    """One bounded wrk run against a loopback URL; wrk's counters (from wrk_report.lua) plus its summary text."""
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s",
            "-s", str(WRK_LUA), url]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    stack.callback(stop_process, proc, 5.0, signal.SIGKILL)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError("wrk did not finish in time")
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}: {out.strip()[-500:]}")
    m = re.search(r"^WRK_JSON (\{.*\})$", out, re.M)
    if not m:
        raise BenchError(f"no WRK_JSON line in wrk's output: {out.strip()[-500:]}")
    res = json.loads(m.group(1))
    res["socket_errors"] = sum(res[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout"))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6) if res["duration_us"] else 0.0
    # wrk prints these two lines only when they are not zero; kept as a cross-check of the Lua figures.
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["summary_non2xx3xx"] = int(m2.group(1)) if m2 else 0
    m3 = re.search(r"Socket errors: (.*)", out)
    res["summary_socket_errors"] = m3.group(1).strip() if m3 else ""
    return res


# -- nginx observation -----------------------------------------------------------------

def master_pid(site: DemoSite) -> int:
    pid = site.nginx_pid()
    if pid is None:
        raise BenchError("no nginx pid file")
    return pid


def worker_pids(master: int) -> Set[int]:
    """The master's children now (from /proc/PID/task/PID/children, else a scan)."""
    try:
        text = Path(f"/proc/{master}/task/{master}/children").read_text()
        return {int(x) for x in text.split()}
    except OSError:
        try:
            return {c.pid for c in psutil.Process(master).children()}
        except psutil.Error:
            return set()


def listen_inodes(port: int) -> Set[str]:
    """Socket inodes listening on ``port`` (from /proc/net/tcp and tcp6)."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def holds_socket(pid: int, inodes: Set[str]) -> bool:
    """True while process ``pid`` has one of ``inodes`` open (a worker that still accepts on it)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False  # gone (or a zombie: no fds)
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def wait_generation_settled(master: int, workers: int, timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until the master has exactly its configured number of children (old generations gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(master)
        alive = [p for p in pids if _alive(p)]
        if len(alive) == workers and len(pids) == workers:
            return
        time.sleep(0.02)
    raise BenchError(f"nginx master {master} still has old workers after {timeout:g} s")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_live(original: bytes, upstream_conf: Path, master: int, before: Set[int], inodes: Set[str],
              start: float, timeout: float = LIVE_TIMEOUT) -> Tuple[Optional[float], Optional[float], Dict[str, Any]]:
    """Poll every POLL s: (time the file held ``original`` again, time the restored config was live, detail).

    Live = file restored AND a worker not in ``before`` holds the listening socket AND no worker of
    ``before`` still holds it. Times are time.time(); None if it did not happen within ``timeout``.
    """
    t_file = None
    polls = 0
    deadline = start + timeout
    while time.time() < deadline:
        polls += 1
        now = time.time()
        if t_file is None:
            try:
                if upstream_conf.read_bytes() == original:
                    t_file = now
            except OSError:
                pass  # between the rename and ... never, but do not die on it
        if t_file is not None:
            kids = worker_pids(master)
            new = [p for p in kids if p not in before and holds_socket(p, inodes)]
            old = [p for p in before if holds_socket(p, inodes)]
            if new and not old:
                return t_file, now, {"polls": polls, "new_workers": sorted(new), "old_workers": sorted(before)}
        time.sleep(POLL)
    return t_file, None, {"polls": polls}


def nginx_cpu(master: int) -> Tuple[float, Dict[int, float], float]:
    """(master's reaped children user+system, {live worker: user+system}, master's own user+system)."""
    mp = psutil.Process(master)
    t = mp.cpu_times()
    workers: Dict[int, float] = {}
    for pid in worker_pids(master):
        try:
            wt = psutil.Process(pid).cpu_times()
            workers[pid] = wt.user + wt.system
        except psutil.Error:
            pass
    return t.children_user + t.children_system, workers, t.user + t.system


def read_log_from(path: Path, offset: int) -> Tuple[List[bytes], int]:
    """Complete lines of ``path`` after byte ``offset``, and the offset after them."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), offset + end


def log_statuses(lines: List[bytes]) -> Dict[str, int]:
    """Client statuses nginx logged (field 3 of the canary format), plus upstream attempts that failed."""
    counts: Dict[str, int] = {}
    retried = failed_attempts = 0
    for line in lines:
        f = line.split(b"\t")
        if len(f) < 4:
            counts["unparsed"] = counts.get("unparsed", 0) + 1
            continue
        status = f[2].decode()
        counts[status] = counts.get(status, 0) + 1
        if b"," in f[1]:
            retried += 1
        if any(s.strip()[:1] == b"5" for s in re.split(rb"[,:]", f[3])):
            failed_attempts += 1
    return {"statuses": counts, "requests_retried_upstream": retried, "lines_with_5xx_attempt": failed_attempts}


# -- statistics -------------------------------------------------------------------------

def p50(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def new_site(stack: contextlib.ExitStack, nginx_bin: str, workers: int, tag: str) -> DemoSite:
    root = Path(tempfile.mkdtemp(prefix=f"bench-rollout-{tag}-"))
    stack.callback(shutil.rmtree, root, True)
    os.chmod(root, 0o755)
    site = DemoSite(root, nginx_bin, workers=workers)
    stack.callback(site.cleanup)
    return site


def start_nginx(stack: contextlib.ExitStack, site: DemoSite) -> int:
    stack.callback(site.stop_nginx)
    try:
        site.start_nginx()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    master = master_pid(site)
    wait_generation_settled(master, site.workers)
    return master


def start_daemon(stack: contextlib.ExitStack, site: DemoSite, python: str) -> Daemon:
    daemon = Daemon(site, python)
    stack.callback(daemon.stop)
    return daemon


# -- 1. time to rollback -------------------------------------------------------------------

def bench_rollback(args: argparse.Namespace, python: str, nginx_bin: str) -> Dict[str, Any]:
    log(f"== 1. time to rollback: {args.runs} runs, load {args.rate:g} req/s (run_load), canary 10 %, "
        f"analysis {ROLLBACK_ANALYSIS}, T0 after {args.bake:g} s at 10 % with a passing check")
    with contextlib.ExitStack() as stack:
        site = new_site(stack, nginx_bin, args.workers, "rollback")
        site.write(steps=[10, 100], step_interval="3600s", analysis=dict(ROLLBACK_ANALYSIS))
        v1 = AppProcess(python, "v1", site.ports["v1"], site.root)
        stack.callback(v1.stop)
        v2 = AppProcess(python, "v2", site.ports["v2"], site.root)
        stack.callback(v2.stop)
        master = start_nginx(stack, site)
        original = site.upstream_conf.read_bytes()
        inodes = listen_inodes(site.ports["front"])
        if not inodes:
            raise BenchError("cannot find nginx's listening socket in /proc/net/tcp")
        daemon = start_daemon(stack, site, python)

        # Baseline: the reload alone (SIGHUP to the master, new generation live), on the same nginx and load.
        baseline: List[float] = []
        stop = threading.Event()
        holder: Dict[str, Any] = {}
        loader = threading.Thread(target=lambda: holder.setdefault("r", run_load(
            site.url, rate=args.rate, duration=30.0, max_requests=int(args.rate * 30) + 1, stop_event=stop)),
            daemon=True)
        loader.start()
        try:
            time.sleep(1.0)
            for _ in range(args.runs):
                before = worker_pids(master)
                t0 = time.time()
                os.kill(master, signal.SIGHUP)
                _, t_live, _ = wait_live(original, site.upstream_conf, master, before, inodes, t0)
                if t_live is None:
                    raise BenchError("baseline reload did not go live")
                baseline.append(t_live - t0)
                wait_generation_settled(master, site.workers)
                time.sleep(0.3)
        finally:
            stop.set()
            loader.join(45)
        log(f"   baseline, SIGHUP -> new generation live (same poll): "
            + ", ".join(ms(x) for x in baseline) + f" ms; p50 {ms(p50(baseline))}, max {ms(max(baseline))}")

        runs: List[Dict[str, Any]] = []
        false_rollbacks: List[str] = []
        attempts = 0
        while len(runs) < args.runs:
            attempts += 1
            if attempts > args.runs + MAX_FALSE_ROLLBACKS:
                raise BenchError(f"{len(false_rollbacks)} false rollbacks of the healthy canary before T0; "
                                 f"giving up: {false_rollbacks[-1]}")
            try:
                runs.append(_one_rollback(args, site, daemon, v2, master, original, inodes, len(runs) + 1))
            except FalseRollback as exc:
                false_rollbacks.append(str(exc))
                log(f"   attempt {attempts}: {exc}; run repeated")
        live = [r["t0_to_live"] for r in runs]
        summary = {
            "p50_t0_to_live": p50(live), "max_t0_to_live": max(live),
            "p50_t0_to_rollback_decision": p50([r["t0_to_rollback_decision"] for r in runs]),
            "p50_decision_to_live": p50([r["decision_to_live"] for r in runs]),
            "p50_t0_to_last_5xx_logged": p50([r["t0_to_last_5xx_logged"] for r in runs
                                              if r["t0_to_last_5xx_logged"] is not None]),
            "baseline_reload_p50": p50(baseline), "baseline_reload_max": max(baseline),
            "target_p50_s": 1.0,
        }
        summary["target_met"] = summary["p50_t0_to_live"] <= 1.0
        log(f"   T0 -> restored config live: p50 {ms(summary['p50_t0_to_live'])} ms, "
            f"max {ms(summary['max_t0_to_live'])} ms over {len(runs)} runs "
            f"(target p50 <= 1000 ms: {'met' if summary['target_met'] else 'NOT met'}); "
            f"of which detection p50 {ms(summary['p50_t0_to_rollback_decision'])} ms, "
            f"decision -> live p50 {ms(summary['p50_decision_to_live'])} ms; "
            f"last 5xx logged p50 {ms(summary['p50_t0_to_last_5xx_logged'])} ms after T0")
        summary["false_rollbacks_before_t0"] = len(false_rollbacks)
        if false_rollbacks:
            log(f"   the healthy canary was rolled back before T0 in {len(false_rollbacks)} of {attempts} attempts "
                f"(repeated; reasons above)")
        return {"settings": {"rate": args.rate, "bake": args.bake, "analysis": ROLLBACK_ANALYSIS,
                             "steps": [10, 100], "workers": args.workers, "apps": "separate processes"},
                "baseline_reload": baseline, "runs": runs, "summary": summary,
                "false_rollbacks": false_rollbacks,
                "daemon_exit": daemon.stop()}


def _one_rollback(args: argparse.Namespace, site: DemoSite, daemon: Daemon, v2: AppProcess, master: int,
                  original: bytes, inodes: Set[str], number: int) -> Dict[str, Any]:
    v2.update(error_rate=0.0)
    if site.upstream_conf.read_bytes() != original:
        raise BenchError("the upstream file does not hold its original bytes before the run")
    wait_generation_settled(master, site.workers)
    log_offset = site.access_log.stat().st_size
    stop = threading.Event()
    holder: Dict[str, Any] = {}
    cap = args.bake + READY_TIMEOUT + LIVE_TIMEOUT + 10
    loader = threading.Thread(target=lambda: holder.setdefault("r", run_load(
        site.url, rate=args.rate, duration=cap, max_requests=int(args.rate * cap) + 1, stop_event=stop)),
        daemon=True)
    run_start = time.time()
    loader.start()
    try:
        time.sleep(1.0)
        started = daemon.call("start", {"name": "app"})
        t_start = time.time()
        if started["state"] != "progressing":
            raise BenchError(f"rollout did not start: {started.get('message')}")
        deadline = time.monotonic() + args.bake + READY_TIMEOUT
        while True:
            st = daemon.status()
            verdict = (st.get("last_check") or {}).get("verdict")
            if st["state"] != "progressing":
                if st["state"] == "rolled_back":
                    raise FalseRollback(f"healthy canary rolled back before T0: {st.get('message')}")
                raise BenchError(f"rollout left progressing before T0: {st['state']}: {st.get('message')}")
            if st["canary_percent"] == 10 and verdict == "pass" and time.time() - t_start >= args.bake:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"rollout not at 10 % with a passing check after {args.bake + READY_TIMEOUT:g} s: "
                                 f"{st['canary_percent']} %, last verdict {verdict}")
            time.sleep(0.05)
        canary_in_window = (st.get("canary") or {}).get("requests")
        before = worker_pids(master)
        t0 = time.time()
        v2.update(error_rate=1.0)
        t_file, t_live, detail = wait_live(original, site.upstream_conf, master, before, inodes, t0)
        if t_live is None:
            raise BenchError(f"run {number}: restored config not live {LIVE_TIMEOUT:g} s after T0 "
                             f"(file restored: {t_file is not None}); daemon: {daemon.tail(5)}")
        end_deadline = time.monotonic() + 10
        while daemon.status()["state"] == "progressing" and time.monotonic() < end_deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # clients keep going: any 5xx after the restore would show
    finally:
        stop.set()
        loader.join(LIVE_TIMEOUT + 20)
    load = holder.get("r")
    st = daemon.status()
    history = daemon.history(run_start)
    all_fails = [r for r in history if r["event"] == "check"
                 and (r["detail"].get("verdict") or {}).get("verdict") == "fail"]
    fails = [r for r in all_fails if r["time"] >= t0]
    rollback = next((r for r in history if r["event"] == "rollback" and r["time"] >= t0), None)
    restored = next((r for r in history if r["event"] == "restored" and r["time"] >= t0), None)
    lines, _ = read_log_from(site.access_log, log_offset)
    last_5xx = None
    logged_5xx = 0
    for line in lines:
        f = line.split(b"\t")
        if len(f) > 2 and f[2][:1] == b"5":
            logged_5xx += 1
            t = float(f[0])
            last_5xx = t if last_5xx is None else max(last_5xx, t)
    run = {
        "run": number,
        "state_after": st["state"],
        "canary_requests_in_window_at_t0": canary_in_window,
        "seconds_at_10pct_before_t0": round(t0 - t_start, 3),
        "t0_to_file_restored": t_file - t0,
        "t0_to_live": t_live - t0,
        "t0_to_first_failed_check": fails[0]["time"] - t0 if fails else None,
        "t0_to_rollback_decision": rollback["time"] - t0 if rollback else None,
        "decision_to_file_restored": t_file - rollback["time"] if rollback else None,
        "decision_to_live": t_live - rollback["time"] if rollback else None,
        "history_restored_minus_rollback": restored["time"] - rollback["time"] if rollback and restored else None,
        "failed_checks": len(fails),
        "failed_checks_before_t0": len(all_fails) - len(fails),
        "rollback_reason": (rollback or {}).get("detail", {}).get("reason"),
        "t0_to_last_5xx_logged": None if last_5xx is None else last_5xx - t0,
        "logged_5xx": logged_5xx,
        "client_5xx": load.status_5xx if load else None,
        "client_socket_errors": load.socket_errors if load else None,
        "load_rate": round(load.rate, 1) if load else None,
        "load_answers": load.responses if load else None,
        "polls": detail.get("polls"),
    }
    log(f"   run {number}: T0 -> live {ms(run['t0_to_live'])} ms (file restored {ms(run['t0_to_file_restored'])}); "
        f"first failed check {ms(run['t0_to_first_failed_check'])}, rollback decision "
        f"{ms(run['t0_to_rollback_decision'])}, decision -> live {ms(run['decision_to_live'])}; "
        f"last 5xx logged {ms(run['t0_to_last_5xx_logged'])} ms; clients got {run['client_5xx']} 5xx, "
        f"{run['client_socket_errors']} socket errors at {run['load_rate']} req/s; "
        f"canary requests in window at T0 {canary_in_window}; state {run['state_after']}")
    if st["state"] != "rolled_back":
        raise BenchError(f"run {number}: state {st['state']} after the canary broke: {st.get('message')}")
    return run


# -- 2. errors caused by stepping ---------------------------------------------------------------

def _proxy_site(stack: contextlib.ExitStack, args: argparse.Namespace, nginx_bin: str, tag: str,
                steps: Sequence[int], step_interval: str) -> Tuple[DemoSite, int]:
    site = new_site(stack, nginx_bin, args.workers, tag)
    site.write(steps=steps, step_interval=step_interval, analysis=dict(ROLLBACK_ANALYSIS))
    backend = Backend(site.root, nginx_bin, site.ports)
    stack.callback(backend.stop)
    backend.start()
    master = start_nginx(stack, site)
    return site, master


def bench_stepping(args: argparse.Namespace, python: str, nginx_bin: str) -> Dict[str, Any]:
    log(f"== 2. errors caused by stepping: wrk -t{args.wrk_threads} -c{args.wrk_connections} "
        f"-d{args.wrk_duration}s, backends served by a separate nginx, rollout {FULL_STEPS} "
        f"with step_interval {args.step_interval}; baselines: no rollout, and plain SIGHUP reloads at the "
        f"rollout's step times")
    with contextlib.ExitStack() as stack:
        site, master = _proxy_site(stack, args, nginx_bin, "stepping", FULL_STEPS, args.step_interval)
        daemon = start_daemon(stack, site, python)
        out: Dict[str, Any] = {"settings": {"wrk_duration": args.wrk_duration, "wrk_threads": args.wrk_threads,
                                            "wrk_connections": args.wrk_connections, "steps": FULL_STEPS,
                                            "step_interval": args.step_interval, "workers": args.workers}}
        step_offsets: List[float] = []
        for kind in ("baseline", "rollout", "reloads"):
            wait_generation_settled(master, site.workers)
            offset = site.access_log.stat().st_size
            result: Dict[str, Any] = {}
            with contextlib.ExitStack() as run_stack:
                t_wrk = time.time()
                action: Optional[threading.Thread] = None
                halt = threading.Event()
                run_stack.callback(halt.set)
                if kind == "rollout":
                    def start_rollout() -> None:
                        if halt.wait(1.0):
                            return
                        try:
                            result["start_answer"] = daemon.call("start", {"name": "app"})["state"]
                        except Exception as exc:  # noqa: BLE001 - reported below
                            result["start_error"] = str(exc)
                    action = threading.Thread(target=start_rollout, daemon=True)
                elif kind == "reloads":
                    def reload_at_offsets() -> None:
                        done = []
                        for at in step_offsets:
                            if halt.wait(max(0.0, t_wrk + at - time.time())):
                                break
                            os.kill(master, signal.SIGHUP)
                            done.append(round(time.time() - t_wrk, 2))
                        result["reloads_at"] = done
                    action = threading.Thread(target=reload_at_offsets, daemon=True)
                if action is not None:
                    action.start()
                wrk = run_wrk(site.url, args.wrk_duration, args.wrk_threads, args.wrk_connections, run_stack)
                t_end = time.time()
                if action is not None:
                    action.join(10)
            time.sleep(0.5)
            lines, _ = read_log_from(site.access_log, offset)
            logged = log_statuses(lines)
            result.update(wrk=wrk, access_log=logged, wall=t_end - t_wrk)
            extra = ""
            if kind == "rollout":
                if "start_error" in result:
                    raise BenchError(f"rollout did not start: {result['start_error']}")
                history = daemon.history(t_wrk)
                steps = [(r["time"] - t_wrk, r["detail"].get("to_percent")) for r in history if r["event"] == "step"]
                step_offsets = [t for t, _ in steps]
                promoted = next((r["time"] - t_wrk for r in history if r["event"] == "promoted"), None)
                st = daemon.status()
                fails = [r for r in history if r["event"] == "check"
                         and (r["detail"].get("verdict") or {}).get("verdict") == "fail"]
                result.update(steps=steps, promoted_at=promoted, state_after=st["state"],
                              failed_checks=len(fails), finished_inside_wrk=promoted is not None and
                              promoted <= t_end - t_wrk,
                              fail_reasons=sorted({(r["detail"].get("verdict") or {}).get("reason", "")
                                                   for r in fails})[:3])
                extra = ("\n             steps at (s after wrk start, %): " +
                         ", ".join(f"{t:.1f}s {p}" for t, p in steps) +
                         f"; promoted at {'-' if promoted is None else f'{promoted:.1f}s'} "
                         f"(wrk ran {result['wall']:.1f}s; finished inside wrk: {result['finished_inside_wrk']}); "
                         f"state {result['state_after']}; failed checks {result['failed_checks']}"
                         + (f" {result['fail_reasons']}" if result["fail_reasons"] else ""))
            elif kind == "reloads":
                extra = f"\n             SIGHUP at (s after wrk start): {result.get('reloads_at')}"
            # 499 = the client closed the connection before the answer: wrk stopping at its deadline.
            non2xx = sum(n for s, n in logged["statuses"].items() if not s.startswith("2") and s != "499")
            result["logged_non2xx"] = non2xx
            log(f"   {kind:8s}: wrk {wrk['requests']:.0f} requests, {wrk['rps']:.0f} req/s, non-2xx/3xx "
                f"{wrk['errors_status']:.0f}, socket errors {wrk['socket_errors']:.0f} (connect "
                f"{wrk['errors_connect']:.0f}, read {wrk['errors_read']:.0f}, write {wrk['errors_write']:.0f}, "
                f"timeout {wrk['errors_timeout']:.0f}), p99 {wrk['latency_p99_us'] / 1000:.1f} ms; "
                f"access log: {len(lines)} lines, statuses {logged['statuses']} (499 = closed by wrk at its end), "
                f"upstream retries {logged['requests_retried_upstream']}" + extra)
            out[kind] = result
        r = out["rollout"]
        out["target_met"] = bool(r["finished_inside_wrk"] and r["wrk"]["errors_status"] == 0
                                 and r["wrk"]["socket_errors"] == 0 and r["logged_non2xx"] == 0)
        log(f"   target zero non-2xx and zero socket errors over a full rollout: "
            f"{'met' if out['target_met'] else 'NOT met'}")
        out["daemon_exit"] = daemon.stop()
        return out


# -- 3. overhead ------------------------------------------------------------------------------

class RssSampler(threading.Thread):
    """Samples the daemon's RSS every RSS_EVERY s, and notes every nginx worker seen meanwhile."""

    def __init__(self, pid: int, master: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.master = master
        self.samples: List[Tuple[float, int]] = []
        self.workers_seen: Set[int] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.halt.is_set():
            self.workers_seen |= worker_pids(self.master)
            try:
                self.samples.append((time.monotonic() - start, self.proc.memory_info().rss))
            except psutil.Error:
                return
            self.halt.wait(RSS_EVERY)


def thread_cpu(proc: psutil.Process) -> Dict[int, float]:
    """user+system seconds of each live thread of ``proc``, by thread id."""
    try:
        return {t.id: t.user_time + t.system_time for t in proc.threads()}
    except psutil.Error:
        return {}


def _vm_hwm(pid: int) -> Optional[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def bench_overhead(args: argparse.Namespace, python: str, nginx_bin: str) -> Dict[str, Any]:
    duration = args.overhead_duration
    interval_ms = max(1000, int(duration * 1000 / 8))
    log(f"== 3. overhead: wrk -t{args.wrk_threads} -c{args.wrk_connections} -d{duration}s through nginx "
        f"({args.workers} worker(s)), rollout {FULL_STEPS} with step_interval {interval_ms}ms vs rollout idle")
    with contextlib.ExitStack() as stack:
        site, master = _proxy_site(stack, args, nginx_bin, "overhead", FULL_STEPS, f"{interval_ms}ms")
        daemon = start_daemon(stack, site, python)
        time.sleep(1.0)
        rss_idle = daemon.ps.memory_info().rss
        out: Dict[str, Any] = {"settings": {"duration": duration, "step_interval_ms": interval_ms,
                                            "wrk_threads": args.wrk_threads, "wrk_connections": args.wrk_connections,
                                            "workers": args.workers},
                               "daemon_rss_idle_before": rss_idle}
        for kind in ("baseline", "rollout"):
            wait_generation_settled(master, site.workers)
            offset = site.access_log.stat().st_size
            sampler = RssSampler(daemon.proc.pid, master)
            c0, w0, m0 = nginx_cpu(master)
            d0 = daemon.ps.cpu_times()
            th0 = thread_cpu(daemon.ps)
            sys0 = psutil.cpu_times()
            t0 = time.monotonic()
            sampler.start()
            with contextlib.ExitStack() as run_stack:
                run_stack.callback(sampler.halt.set)
                if kind == "rollout":
                    answer = daemon.call("start", {"name": "app"})
                    if answer["state"] != "progressing":
                        raise BenchError(f"rollout did not start: {answer.get('message')}")
                wrk = run_wrk(site.url, duration, args.wrk_threads, args.wrk_connections, run_stack)
                time.sleep(0.5)  # the daemon reads the last lines; old workers finish
                if kind == "rollout":
                    st_end = daemon.status()
                wait_generation_settled(master, site.workers)
                elapsed = time.monotonic() - t0
                c1, w1, m1 = nginx_cpu(master)
                d1 = daemon.ps.cpu_times()
                th1 = thread_cpu(daemon.ps)
                sys1 = psutil.cpu_times()
            sampler.join(2)
            workers_cpu = (c1 - c0) + sum(w1.values()) - sum(w0.values())
            daemon_self = (d1.user + d1.system) - (d0.user + d0.system)
            daemon_children = (d1.children_user + d1.children_system) - (d0.children_user + d0.children_system)
            busy = (sum(sys1) - sys1.idle - sys1.iowait) - (sum(sys0) - sys0.idle - sys0.iowait)
            total = sum(sys1) - sum(sys0)
            lines, _ = read_log_from(site.access_log, offset)
            rss = [s for _, s in sampler.samples]
            result = {
                "elapsed": elapsed,
                "wrk": wrk,
                "daemon_cpu_s": daemon_self,
                "daemon_children_cpu_s": daemon_children,
                "nginx_workers_cpu_s": workers_cpu,
                "nginx_master_cpu_s": m1 - m0,
                "ratio": daemon_self / workers_cpu if workers_cpu > 0 else None,
                "ratio_with_children": (daemon_self + daemon_children) / workers_cpu if workers_cpu > 0 else None,
                "log_lines": len(lines),
                "log_lines_per_s": len(lines) / elapsed,
                "daemon_us_per_line": daemon_self / len(lines) * 1e6 if lines else None,
                "machine_busy_pct": 100.0 * busy / total if total > 0 else None,
                "workers_exited_during": len((sampler.workers_seen | set(w0)) - set(w1)),
                # The main thread tails the log, analyses it, runs the checks and the steps; the others are
                # the control socket's and the log tailer's watchdog (inotify) threads.
                "daemon_main_thread_cpu_s": th1.get(daemon.proc.pid, 0.0) - th0.get(daemon.proc.pid, 0.0),
                "daemon_other_threads_cpu_s": sum(v - th0.get(k, 0.0) for k, v in th1.items()
                                                  if k != daemon.proc.pid),
                "daemon_threads": len(th1),
                "rss_start": rss[0] if rss else None,
                "rss_middle": rss[len(rss) // 2] if rss else None,
                "rss_end": rss[-1] if rss else None,
                "rss_max": max(rss) if rss else None,
                "rss_samples": len(rss),
                "daemon_vm_hwm": _vm_hwm(daemon.proc.pid),
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            }
            if kind == "rollout":
                history = daemon.history(time.time() - elapsed - 5)
                result["steps_taken"] = sum(1 for r in history if r["event"] == "step")
                result["state_at_end"] = st_end["state"]
                result["canary_percent_at_end"] = st_end["canary_percent"]
            us_line = "-" if result["daemon_us_per_line"] is None else f"{result['daemon_us_per_line']:.1f}"
            mib = lambda b: "-" if b is None else f"{b / 2**20:.1f}"  # noqa: E731
            log(f"   {kind:8s}: {elapsed:.1f}s, wrk {wrk['rps']:.0f} req/s, access log {result['log_lines_per_s']:.0f} "
                f"lines/s; daemon CPU {daemon_self:.2f}s (+{daemon_children:.2f}s nginx -t children), nginx workers "
                f"{workers_cpu:.2f}s (master {result['nginx_master_cpu_s']:.2f}s, {result['workers_exited_during']} "
                f"workers exited); ratio {result['ratio']:.4f} (with children {result['ratio_with_children']:.4f}); "
                f"{us_line} "
                f"daemon us/line; machine busy {result['machine_busy_pct']:.0f}%")
            log(f"             daemon CPU by thread: main (tail, analysis, checks) "
                f"{result['daemon_main_thread_cpu_s']:.2f}s, the {result['daemon_threads'] - 1} other threads "
                f"(step-change worker, watchdog observers, control socket, metrics) {result['daemon_other_threads_cpu_s']:.2f}s")
            log(f"             daemon RSS MiB: start {mib(result['rss_start'])}, middle {mib(result['rss_middle'])}, "
                f"end {mib(result['rss_end'])}, max {mib(result['rss_max'])} ({len(rss)} samples); "
                + (f"rollout: {result['steps_taken']} steps, {result['state_at_end']} at "
                   f"{result['canary_percent_at_end']} %" if kind == "rollout" else "rollout idle"))
            out[kind] = result
        r = out["rollout"]
        growth = (r["rss_end"] - r["rss_start"]) if r["rss_start"] else None
        out["rss_growth_during_rollout"] = growth
        out["target_met"] = r["ratio"] is not None and r["ratio"] <= 0.05
        log(f"   target daemon / nginx workers CPU <= 0.05: {'met' if out['target_met'] else 'NOT met'} "
            f"({r['ratio']:.4f}); RSS {rss_idle / 2**20:.1f} MiB idle before, "
            f"{(growth or 0) / 2**20:+.1f} MiB start -> end of the rollout run")
        out["daemon_exit"] = daemon.stop()
        return out


# -- main ---------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    global OUT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="rollback runs (default: %(default)s; at least 5 for p50/max)")
    p.add_argument("--rate", type=float, default=220.0, help="rollback load, req/s (default: %(default)s)")
    p.add_argument("--bake", type=float, default=12.0,
                   help="seconds at 10 %% before T0 (default: %(default)s: the 10 s window is full)")
    p.add_argument("--workers", type=int, default=1, help="proxy nginx worker_processes (default: %(default)s)")
    p.add_argument("--wrk-duration", type=int, default=20, help="stepping: wrk seconds (default: %(default)s)")
    p.add_argument("--step-interval", default="1s", help="stepping: step_interval (default: %(default)s)")
    p.add_argument("--overhead-duration", type=int, default=20, help="overhead: wrk seconds (default: %(default)s)")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--wrk-connections", type=int, default=8)
    p.add_argument("--only", default="rollback,stepping,overhead", help="comma-separated subset")
    p.add_argument("--json", metavar="FILE",
                   help="also write every figure as JSON to FILE ('-': stdout, the text goes to stderr)")
    args = p.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - {"rollback", "stepping", "overhead"}
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.runs < 1 or args.runs > 100:
        p.error("--runs must be from 1 to 100")
    if not 0 <= args.bake <= 120 or not 1 <= args.workers <= 8:
        p.error("--bake must be from 0 to 120 s, --workers from 1 to 8")
    if not 200 <= args.rate <= 2000:
        p.error("--rate must be from 200 to 2000 req/s")
    if not 1 <= args.wrk_duration <= 300 or not 1 <= args.overhead_duration <= 300:
        p.error("wrk durations must be from 1 to 300 s")
    if not 1 <= args.wrk_connections <= 64 or not 1 <= args.wrk_threads <= 8:
        p.error("--wrk-connections 1..64, --wrk-threads 1..8")
    if args.json == "-":
        OUT = sys.stderr
    nginx_bin = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx_bin is None:
        p.error("nginx not found (PATH=/usr/sbin:$PATH, or `make nginx`)")
    if ({"stepping", "overhead"} & set(only)) and not shutil.which("wrk"):
        p.error("wrk not found (`make wrk`, or apt-get install wrk)")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    python = sys.executable
    machine = describe_machine(python, tempfile.gettempdir(), nginx_bin)
    log(f"machine: {machine['cpu']}, {machine['cores_logical']} logical cores ({machine['cores_physical']} physical), "
        f"{machine['memory_gib']} GiB; load average {machine['loadavg_start']}; kernel {machine['kernel']}")
    log(f"software: Python {machine['python']} ({python}), {machine['nginx']}, {machine['wrk']}; "
        f"nginx_canary from {machine['nginx_canary']}, C log accelerator "
        f"{ {True: 'built', False: 'not built', None: 'absent from this version'}[machine['c_accelerator']] }"
        + (f", NGINX_CANARY_PURE_PYTHON={machine['pure_python_env']}" if machine["pure_python_env"] else ""))
    results: Dict[str, Any] = {"machine": machine, "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    benches: Dict[str, Callable[[argparse.Namespace, str, str], Dict[str, Any]]] = {
        "rollback": bench_rollback, "stepping": bench_stepping, "overhead": bench_overhead}
    status = 0
    try:
        for name in ("rollback", "stepping", "overhead"):
            if name in only:
                results[name] = benches[name](args, python, nginx_bin)
                log()
    except BenchError as exc:
        log(f"bench_rollout: error: {exc}")
        results["error"] = str(exc)
        status = 1
    except KeyboardInterrupt:
        log("bench_rollout: interrupted; everything started here has been stopped")
        return 130
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    log(f"load average at the end: {machine['loadavg_end']}")
    if args.json:
        text = json.dumps(results, indent=2, sort_keys=True, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
