"""Shared helpers of bench/bench_rollout.py: processes it starts (daemon, demo apps, a backend nginx, wrk),
what it observes of nginx (workers, listening sockets, the restored config going live, the access log),
and small statistics. Every wait here is bounded; failures raise BenchError.
"""

from __future__ import annotations

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
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import psutil

from nginx_canary.daemon import control_socket
from nginx_canary.demo.load import LoadResult, run_load
from nginx_canary.demo.nginx_harness import NginxHarnessError, PrivateNginx
from nginx_canary.demo.site import DemoSite
from nginx_canary.errors import ConfigError
from nginx_canary.nginx.lexer import statements

HERE = Path(__file__).resolve().parent
WRK_LUA = HERE / "wrk_report.lua"
#: Real-world log formats a benchmark's proxy nginx can write instead of the shipped ``canary`` one.
FORMATS_DIR = HERE.parent / "tests" / "data" / "real-world" / "log-formats"
SHIPPED_LOG_FORMAT = "canary"

POLL = 0.002                # seconds between two looks at the file and the workers
LIVE_TIMEOUT = 30.0         # T0 -> restored config live, at most
DAEMON_START_TIMEOUT = 20.0
DAEMON_STOP_TIMEOUT = 20.0
SETTLE_TIMEOUT = 15.0       # old nginx workers gone after a reload / after load

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


# -- access-log formats and the daemon's view of the log ---------------------------------

def log_format_names(values: Sequence[str]) -> List[str]:
    """The names of ``--log-format`` values (each a name or a comma list), in order, once each.

    A name is ``canary`` or the stem of a file in FORMATS_DIR. Raises ValueError naming an unknown one.
    """
    known = sorted(p.stem for p in FORMATS_DIR.glob("*.conf"))
    names: List[str] = []
    for value in values:
        for name in (x.strip() for x in value.split(",")):
            if not name:
                continue
            if name != SHIPPED_LOG_FORMAT and name not in known:
                raise ValueError(f"unknown log format {name!r}: {SHIPPED_LOG_FORMAT} or one of {', '.join(known)} "
                                 f"(files in {FORMATS_DIR})")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("no log format named")
    return names


def log_format_directive(name: str) -> str:
    """The http-level text of FORMATS_DIR/NAME.conf, comments dropped: its ``log_format NAME`` directive as
    written there (escape= included) and what the format needs beside it (the ``map`` blocks of a variable
    set elsewhere in real life).

    Raises BenchError unless the file holds exactly one ``log_format``, named NAME.
    """
    path = FORMATS_DIR / f"{name}.conf"
    text = "".join(line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                   if not line.lstrip().startswith("#"))
    try:
        found = [[a.value for a in st.args] for st in statements(text, str(path)) if st.name.value == "log_format"]
    except ConfigError as exc:
        raise BenchError(f"{path}: {exc}") from None
    if len(found) != 1 or not found[0] or found[0][0] != name:
        raise BenchError(f"{path}: expected exactly one `log_format {name} ...` directive, found {found}")
    return text.strip()


def use_log_format(site: DemoSite, name: str, metrics_port: int) -> None:
    """Make the written ``site`` log in format ``name``, its daemon read that format and serve metrics.

    nginx.conf gets the format's directive and its access_log names it; the daemon config names the
    format (``log_format``) explicitly and listens for metrics on 127.0.0.1:``metrics_port`` (how the
    benchmark sees the lines the daemon parsed). Raises BenchError when the files are not as DemoSite writes them.
    """
    conf = site.conf.read_text()
    access = "    access_log logs/access.log canary;\n"
    if conf.count(access) != 1:
        raise BenchError(f"no `access_log ... canary;` line in {site.conf}")
    if name != SHIPPED_LOG_FORMAT:
        directive = "\n".join("    " + line for line in log_format_directive(name).splitlines())
        conf = conf.replace(access, f"{directive}\n    access_log logs/access.log {name};\n")
    site.conf.write_text(conf)
    daemon = site.daemon_config.read_text()
    upstream = "    upstream: backend\n"
    if daemon.count(upstream) != 1 or not daemon.startswith("nginx:\n"):
        raise BenchError(f"{site.daemon_config} is not as DemoSite writes it")
    daemon = daemon.replace(upstream, f"{upstream}    log_format: {name}\n")
    site.daemon_config.write_text(f"metrics_listen: 127.0.0.1:{metrics_port}\n" + daemon)


_SAMPLE = re.compile(r'^(nginx_canary_log_lines_total|nginx_canary_upstream_requests_total)\{([^}]*)\} (\S+)$', re.M)


def daemon_counts(metrics_port: int) -> Dict[str, int]:
    """What the daemon read so far, from its metrics: lines ``parsed`` / ``unparsed``, ``canary`` / ``stable``
    upstream attempts. Raises BenchError when the endpoint does not answer."""
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError as exc:
        raise BenchError(f"daemon metrics on 127.0.0.1:{metrics_port}: {exc}") from None
    counts = {"parsed": 0, "unparsed": 0, "canary": 0, "stable": 0}
    for metric, labels, value in _SAMPLE.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = fields.get("result") if metric == "nginx_canary_log_lines_total" else fields.get("group")
        if key in counts:
            counts[key] += int(float(value))
    return counts


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


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


def write_site(site: DemoSite, steps: Sequence[int], step_interval: str, analysis: Dict[str, object],
               on_success: str = "keep") -> None:
    """``site.write`` with exactly ``analysis`` as the rollout's analysis keys (every other key at its default).

    DemoSite.write always sets interval, min_requests and failure_threshold; a figure "at the defaults" must not.
    """
    site.write(steps=steps, step_interval=step_interval, on_success=on_success)
    text = site.daemon_config.read_text()
    head, sep, _ = text.partition("    analysis:\n")
    if not sep:
        raise BenchError(f"no analysis block in {site.daemon_config}")
    site.daemon_config.write_text(head + sep + "".join(f"      {k}: {v}\n" for k, v in analysis.items()))


def cli_start(site: DemoSite, python: str) -> subprocess.Popen:
    """Launch ``nginx-canary start app --json`` as a user would (a separate process); see :func:`watch_restore`."""
    argv = [python, "-m", "nginx_canary", "--config", str(site.daemon_config), "start", "app", "--json"]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(site.root), start_new_session=True)


def watch_restore(cli: subprocess.Popen, original: bytes, upstream_conf: Path, master: int, inodes: Set[str],
                  timeout: float = LIVE_TIMEOUT) -> Dict[str, Any]:
    """Poll every POLL s from before the first step until the original config is live again after it.

    Returns the times (time.time()) the ``cli`` process was seen to exit ("returned"), the upstream file
    was changed by the step ("changed") and held ``original`` again ("file"), and the restored config was
    live ("live"): file restored AND some worker holds the listening socket AND none that does was seen
    before the file was restored. The CLI's answer (JSON) is under "answer". Raises BenchError when the CLI
    fails or this does not happen within ``timeout``.
    """
    out: Dict[str, Any] = {"returned": None, "changed": None, "file": None, "live": None}
    seen: Set[int] = set(worker_pids(master))
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            now = time.time()
            if out["returned"] is None and cli.poll() is not None:
                out["returned"] = now
            if out["file"] is None:
                try:
                    same = upstream_conf.read_bytes() == original
                except OSError:
                    same = False  # between the rename and ... never, but do not die on it
                if not same and out["changed"] is None:
                    out["changed"] = now
                elif same and out["changed"] is not None:
                    out["file"] = now
            kids = worker_pids(master)
            if out["file"] is None:
                seen |= kids
            elif out["live"] is None:
                holders = [p for p in kids if holds_socket(p, inodes)]
                if holders and not seen.intersection(holders) and not any(holds_socket(p, inodes) for p in seen):
                    out["live"] = now
            if out["live"] is not None and out["returned"] is not None:
                break
            time.sleep(POLL)
        else:
            raise BenchError(f"restored config not live {timeout:g} s after start (CLI returned: "
                             f"{out['returned'] is not None}, file changed {out['changed'] is not None}, "
                             f"restored {out['file'] is not None})")
    finally:
        if cli.poll() is None:
            stop_process(cli, 5.0, signal.SIGKILL)
    stdout, stderr = cli.communicate()
    if cli.returncode != 0:
        raise BenchError(f"nginx-canary start exited with {cli.returncode}: {(stderr or stdout).strip()[-300:]}")
    try:
        out["answer"] = json.loads(stdout)
    except ValueError:
        raise BenchError(f"nginx-canary start printed no JSON: {stdout[-300:]!r}") from None
    return out


def last_5xx_logged(lines: List[bytes]) -> Tuple[Optional[float], int]:
    """($msec of the last 5xx nginx logged or None, how many 5xx) in canary-format ``lines``."""
    last = None
    count = 0
    for line in lines:
        f = line.split(b"\t")
        if len(f) > 2 and f[2][:1] == b"5":
            count += 1
            t = float(f[0])
            last = t if last is None else max(last, t)
    return last, count


class BackgroundLoad:
    """run_load in a thread at ``rate`` req/s, bounded by ``cap`` seconds and ``rate * cap`` requests."""

    def __init__(self, url: str, rate: float, cap: float) -> None:
        self._stop = threading.Event()
        self._holder: Dict[str, Any] = {}
        self._cap = cap
        self._thread = threading.Thread(target=lambda: self._holder.setdefault("r", run_load(
            url, rate=rate, duration=cap, max_requests=int(rate * cap) + 1, stop_event=self._stop)), daemon=True)
        self._thread.start()

    def stop(self) -> Optional[LoadResult]:
        """Stop it; what it saw (None if it did not finish in time)."""
        self._stop.set()
        self._thread.join(30)
        return self._holder.get("r")
