"""Slow clients on the metrics port and the control socket do not stop a rollback (issue #14, item 2).

The attack: 1,200 TCP connections to ``metrics_listen`` and 1,600 to the
control socket, each trickling one byte of a request that never ends every
3 s, and reconnecting whenever the daemon drops it (as a determined attacker
would). On the old servers (a thread per connection, 10 s per read) that
took a descriptor and a thread per connection until the open-file limit or
the task limit ran out: the rollback's ``nginx -t`` and reload failed, the
rollout stayed ``failed`` at 10 %, and ``status`` never answered again.

The daemon runs with the unit's limits: ``prlimit --nofile=LimitNOFILE
--nproc=TasksMax`` (RLIMIT_NPROC does not bind root, so where the pids
cgroup is writable the daemon is also moved into a cgroup whose
``pids.max`` is the unit's ``TasksMax=``, which is what systemd does).

One daemon, two rollouts of a canary that turns to 500-for-everything
after a bake at 10 %: first without the attack (the baseline), then with
the attack started once the rollout is at 10 %. Measured: T0 (the canary turns bad) to the ``restored`` history record,
``status`` answer times under attack, check lateness, and the daemon's
threads and descriptors at their highest. Asserted: the rollback under
attack restores the snapshot within the usual time (at most twice the
baseline, or the baseline + 2 s), every ``status`` call answers, and the
daemon's threads and descriptors stay within the servers' fixed bounds.
The figures are printed (tests/reliability, docs/RELIABILITY.md).
"""

from __future__ import annotations

import configparser
import errno
import os
import resource
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import psutil
import pytest

from nginx_canary.daemon import control_socket

from nginx_canary.integrations import metrics_server as metrics
from nginx_canary.demo.nginx_harness import free_port
from nginx_canary.errors import CanaryError
from tests.reliability.conftest import Steps, history, saved_state, wait_for

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "nginx-canary.service"
STEPS = (10, 100)
METRICS_CONNECTIONS = 1200
CONTROL_CONNECTIONS = 1600
TRICKLE_EVERY = 3.0
#: The attack's ramp: long enough for the old servers to have taken a thread and a descriptor per connection.
RAMP = 8.0
BAKE = 3.0
ATTACK_LIMIT = 120.0  # the attack stops by itself after this long, whatever happens to the test
PIDS_CGROUP = Path("/sys/fs/cgroup/pids")


def unit_limits() -> Tuple[int, int]:
    """``LimitNOFILE=`` and ``TasksMax=`` of the shipped unit."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    return int(service["LimitNOFILE"]), int(service["TasksMax"])


class Trickle:
    """``count`` connections made by ``connect``, each sending the next byte of ``payload`` every ``every`` s.

    One thread, non-blocking sockets, loopback only; stops on :meth:`stop` or
    after ``limit`` seconds. A connection the server drops is made again at
    its next turn. Counts connects, drops and bytes sent.
    """

    def __init__(self, connect: Callable[[], socket.socket], count: int, payload: bytes, every: float,
                 limit: float) -> None:
        self.connect = connect
        self.count = count
        self.payload = payload
        self.every = every
        self.limit = limit
        self.stats = {"connects": 0, "connect_failures": 0, "drops": 0, "bytes": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)

    def start(self) -> "Trickle":
        self._thread.start()
        return self

    def stop(self) -> Dict[str, int]:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the attack did not stop"
        return dict(self.stats)

    def _open(self) -> Optional[socket.socket]:
        self.stats["connects"] += 1
        try:
            return self.connect()
        except OSError:
            self.stats["connect_failures"] += 1
            return None

    def _run(self) -> None:
        socks: List[Optional[socket.socket]] = [None] * self.count
        sent = [0] * self.count
        start = time.monotonic()
        due = [start + self.every * i / self.count for i in range(self.count)]
        try:
            for i in range(self.count):
                socks[i] = self._open()
            while not self._stop.wait(0.05) and time.monotonic() - start < self.limit:
                now = time.monotonic()
                for i in range(self.count):
                    if due[i] > now:
                        continue
                    due[i] = now + self.every
                    conn = socks[i]
                    if conn is None:
                        socks[i], sent[i] = self._open(), 0
                        continue
                    try:
                        conn.send(self.payload[sent[i] % len(self.payload):][:1], socket.MSG_NOSIGNAL)
                        sent[i] += 1
                        self.stats["bytes"] += 1
                    except BlockingIOError:
                        pass  # not connected yet
                    except OSError:
                        self.stats["drops"] += 1
                        conn.close()
                        socks[i], sent[i] = self._open(), 0
        finally:
            for conn in socks:
                if conn is not None:
                    conn.close()


def tcp_connector(port: int) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.setblocking(False)
        code = conn.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            conn.close()
            raise OSError(code, os.strerror(code))
        return conn
    return connect


def unix_connector(path: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.setblocking(False)
        try:
            conn.connect(path)
        except OSError:
            conn.close()
            raise
        return conn
    return connect


# Requests that never end: each byte is one more of an endless header or string.
HTTP_PAYLOAD = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000
CONTROL_PAYLOAD = b'{"command": "status", "args": {"slow": "' + b"a" * 4000


class Sampler:
    """Every ``every`` s: a ``status`` call (its answer time, or its error) and the daemon's threads and fds."""

    def __init__(self, socket_path: str, pid: int, every: float = 0.5) -> None:
        self.socket_path = socket_path
        self.process = psutil.Process(pid)
        self.every = every
        self.answers: List[float] = []
        self.errors: List[str] = []
        self.threads: List[int] = []
        self.fds: List[int] = []
        self.lateness_max = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + ATTACK_LIMIT
        while not self._stop.wait(self.every) and time.monotonic() < deadline:
            try:
                self.threads.append(self.process.num_threads())
                self.fds.append(self.process.num_fds())
            except psutil.Error:
                pass
            began = time.monotonic()
            try:
                answer = control_socket.call(self.socket_path, "status", {"name": "app"}, timeout=10.0)
            except CanaryError as exc:
                self.errors.append(str(exc))
                continue
            self.answers.append(time.monotonic() - began)
            self.lateness_max = max(self.lateness_max, answer["daemon"]["check_lateness_seconds"]["max"] or 0.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def tasks_cgroup() -> Iterator[Callable[[int, int], bool]]:
    """``put(pid, tasks_max)``: move ``pid`` into a fresh pids cgroup with ``pids.max``; False where not possible."""
    made: List[Path] = []

    def put(pid: int, tasks_max: int) -> bool:
        group = PIDS_CGROUP / f"nc-test-{os.getpid()}-{pid}"
        try:
            group.mkdir()
            made.append(group)
            (group / "pids.max").write_text(str(tasks_max))
            (group / "cgroup.procs").write_text(str(pid))
        except OSError:
            return False
        return True

    yield put
    for group in made:
        try:
            for pid in (group / "cgroup.procs").read_text().split():
                (PIDS_CGROUP / "cgroup.procs").write_text(pid)
            group.rmdir()
        except OSError:
            pass


@pytest.fixture
def many_files() -> Iterator[None]:
    """This process needs a descriptor per attacking connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * (METRICS_CONNECTIONS + CONTROL_CONNECTIONS) + 1024
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.fail(f"the attack needs {need} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start_at_10(h: Any) -> None:
    h.start_rollout()
    h.wait_step(0)


def rollback_seconds(h: Any, steps: Steps) -> float:
    """Turn the canary to 500 for everything and return T0 -> the ``restored`` record.

    Watches the state and history files, not ``status``: the rollback is
    judged on its own, whether the control socket answers or not.
    """
    assert saved_state(h.site)["state"] == "progressing", saved_state(h.site)
    seen = len(history(h.site))
    t0 = time.time()
    h.v2.update(error_rate=1.0)

    def ended() -> bool:
        done = [r for r in history(h.site)[seen:] if r["event"] in ("restored", "restore_failed")]
        return bool(done) or saved_state(h.site)["state"] in ("failed", "aborted", "promoted")

    wait_for(ended, "the rollback's restore", timeout=30, h=h)
    final = saved_state(h.site)
    assert final["state"] == "rolled_back", f"{final['state']}: {final['message']}"
    restored = [r for r in history(h.site)[seen:] if r["event"] == "restored"]
    assert restored, history(h.site)[seen:]
    h.v2.update(error_rate=0.0)
    assert steps.whole() == "snapshot" and h.site.config_files() == h.originals
    return restored[0]["time"] - t0


def test_slow_clients_on_both_servers_do_not_stop_a_rollback(tasks_cgroup, many_files, rel_harness, capsys):
    nofile, tasks_max = unit_limits()
    port = free_port()
    h = rel_harness(steps=STEPS, step_interval="1h", extra_yaml=[f"metrics_listen: 127.0.0.1:{port}"],
                    wrap=["prlimit", f"--nofile={nofile}:{nofile}", f"--nproc={tasks_max}:{tasks_max}", "--"])
    steps = Steps(h.site, STEPS)
    pid = h.daemon.pid
    in_cgroup = tasks_cgroup(pid, tasks_max)
    assert psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE) == (nofile, nofile)
    load = h.load(rate=150, duration=120, max_requests=20000)

    idle = psutil.Process(pid)
    idle_threads, idle_fds = idle.num_threads(), idle.num_fds()
    start_at_10(h)
    time.sleep(BAKE)
    baseline = rollback_seconds(h, steps)

    start_at_10(h)
    metrics_attack = Trickle(tcp_connector(port), METRICS_CONNECTIONS, HTTP_PAYLOAD, TRICKLE_EVERY,
                             ATTACK_LIMIT).start()
    control_attack = Trickle(unix_connector(h.site.socket_path), CONTROL_CONNECTIONS, CONTROL_PAYLOAD,
                             TRICKLE_EVERY, ATTACK_LIMIT).start()
    sampler = Sampler(h.site.socket_path, pid)
    try:
        time.sleep(RAMP)  # the bake at 10 %, under attack
        attacked = rollback_seconds(h, steps)
        time.sleep(1.0)
    finally:
        sampler.stop()
        metrics_stats = metrics_attack.stop()
        control_stats = control_attack.stop()
    seen = load.finish()

    after = h.call("status", name="app")
    assert after["rollouts"][0]["state"] == "rolled_back"
    assert h.site.nginx_t().returncode == 0
    bounds_threads = metrics.LIMITS.workers + control_socket.LIMITS.workers + 2
    bounds_fds = metrics.LIMITS.descriptors() + control_socket.LIMITS.descriptors()
    figures = {
        "limits": f"LimitNOFILE={nofile} TasksMax={tasks_max} (pids cgroup: {'yes' if in_cgroup else 'no'})",
        "rollback_baseline_s": round(baseline, 3), "rollback_under_attack_s": round(attacked, 3),
        "status_calls": len(sampler.answers), "status_errors": sampler.errors[:3],
        "status_answer_ms": {"median": round(statistics.median(sampler.answers) * 1e3, 1),
                             "max": round(max(sampler.answers) * 1e3, 1)} if sampler.answers else None,
        "check_lateness_max_s": round(sampler.lateness_max, 3),
        "daemon_threads": {"idle": idle_threads, "max_under_attack": max(sampler.threads, default=0)},
        "daemon_fds": {"idle": idle_fds, "max_under_attack": max(sampler.fds, default=0)},
        "metrics_attack": metrics_stats, "control_attack": control_stats,
        "client_load": seen.summary(),
    }
    with capsys.disabled():
        print("\nslow clients:", figures)

    assert not sampler.errors, sampler.errors[:5]
    assert sampler.answers, "no status call was made under attack"
    assert attacked <= max(2 * baseline, baseline + 2.0), figures
    # The attack really ran: it made more connections than the daemon may hold, and was cut off many times.
    assert metrics_stats["drops"] + metrics_stats["connect_failures"] > METRICS_CONNECTIONS / 2, figures
    assert control_stats["drops"] + control_stats["connect_failures"] > CONTROL_CONNECTIONS / 2, figures
    # Threads and descriptors stay within the servers' fixed bounds (the rest of the daemon's stay as they were,
    # give or take a rollback's nginx -t pipes and the change worker).
    assert max(sampler.threads) <= idle_threads + 4, figures
    assert max(sampler.fds) <= idle_fds + bounds_fds + 32, figures
    assert bounds_threads < tasks_max and 4 * bounds_fds < nofile
