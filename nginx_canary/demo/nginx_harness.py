"""A private nginx for the demo, the tests and the benchmarks: one prefix, free loopback ports, its own processes.

The caller writes the configuration (with ``pid logs/nginx.pid``); a
:class:`PrivateNginx` runs ``nginx -p PREFIX -c CONF -e stderr``, waits until
it accepts connections on ``ports["front"]`` with all its workers, tells the
master's and the workers' PIDs, reloads it, and stops it by PID: a signal to
the master (SIGQUIT, a graceful stop, by default), then SIGKILL for whatever
of the master and its workers is still there after a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import psutil


class NginxHarnessError(RuntimeError):
    """nginx did not start, died, or did not reach the expected workers in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> List[int]:
    """``count`` distinct ports, each free a moment ago."""
    ports: List[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def wait_gone(procs: Sequence[psutil.Process], timeout: float) -> List[psutil.Process]:
    """Wait until every process has exited (a zombie counts as gone); returns those still alive.

    Polls every 10 ms: psutil.wait_procs backs off to long sleeps for processes that are not our children.
    """
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        still = []
        for proc in alive:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    still.append(proc)
            except psutil.NoSuchProcess:
                pass
        alive = still
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return alive


class PrivateNginx:
    """One nginx running from ``prefix`` (config ``conf``, default ``prefix/nginx.conf``).

    ``ports["front"]`` is the port that must accept connections once nginx
    runs; ``worker_processes`` is the number of workers its config asks for.
    ``started`` is true from the moment :meth:`start` runs nginx until
    :meth:`stop` (or whoever kills nginx) clears it.
    """

    def __init__(self, binary: str, prefix: Path, ports: Dict[str, int], *, worker_processes: int = 1,
                 conf: Optional[Path] = None) -> None:
        self.binary = binary
        self.prefix = Path(prefix)
        self.ports = ports
        self.worker_processes = worker_processes
        self.conf = Path(conf) if conf is not None else self.prefix / "nginx.conf"
        self.started = False

    @property
    def pid_file(self) -> Path:
        return self.prefix / "logs" / "nginx.pid"

    def command(self, *args: str) -> List[str]:
        """nginx's command line for this prefix and config, plus ``args``."""
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", "stderr", *args]

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run nginx with ``args`` (``-t``, ``-s reopen``, ...) and return its result (text, captured).

        Raises subprocess.TimeoutExpired.
        """
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)

    def start(self, timeout: float = 10.0) -> None:
        """Start nginx; wait until it accepts connections on the front port and all its workers run.

        The master listens before it forks its workers: a connection alone does
        not prove them there, and whoever reloads next must find them (or it
        takes workers of the first generation for the new one's).
        Raises NginxHarnessError (nginx refused to start, its master died, or ``timeout`` passed).
        """
        self.started = True  # from here on stop() has work to do, even if interrupted right now
        try:
            result = self.run(timeout=max(timeout, 30.0))
        except subprocess.TimeoutExpired:
            raise NginxHarnessError(f"nginx did not daemonize within {max(timeout, 30.0):g} s") from None
        if result.returncode != 0:
            raise NginxHarnessError(f"nginx did not start: {result.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.master_pid()
            if pid is not None and not psutil.pid_exists(pid):
                raise NginxHarnessError(f"nginx master {pid} exited after start; see {self.prefix}/logs/error.log")
            if self._listening() and len(self.worker_pids()) >= self.worker_processes:
                return
            time.sleep(0.01)
        raise NginxHarnessError(f"nginx did not start listening on port {self.ports['front']} "
                                f"with {self.worker_processes} workers within {timeout:g} s")

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.ports["front"]), timeout=0.5):
                return True
        except OSError:
            return False

    def master_pid(self) -> Optional[int]:
        """The master's PID from the pid file (None when there is none: not started, or stopped)."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def master(self) -> psutil.Process:
        """The running master. Raises NginxHarnessError (no pid file) or psutil.NoSuchProcess."""
        pid = self.master_pid()
        if pid is None:
            raise NginxHarnessError(f"no nginx pid file at {self.pid_file}")
        return psutil.Process(pid)

    def _children(self) -> List[psutil.Process]:
        try:
            return self.master().children()
        except (NginxHarnessError, psutil.Error):
            return []

    @staticmethod
    def _is_live_worker(proc: psutil.Process) -> bool:
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:  # exited, a zombie the master has not reaped yet, or not ours to read
            return False
        return "worker process" in title and "shutting down" not in title

    def worker_pids(self) -> List[int]:
        """PIDs of the workers that accept connections (not shutting down, not exited), sorted; [] without a master."""
        return sorted(proc.pid for proc in self._children() if self._is_live_worker(proc))

    def settled(self) -> bool:
        """True when the master's children are exactly its ``worker_processes`` live workers (no old generation)."""
        children = self._children()
        return len(children) == self.worker_processes and all(self._is_live_worker(p) for p in children)

    def wait_settled(self, timeout: float = 15.0) -> bool:
        """Wait until :meth:`settled` (True) or ``timeout`` passes (False). Raises NginxHarnessError if the master is gone."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self.master_pid()
            if pid is None or not psutil.pid_exists(pid):
                raise NginxHarnessError(f"nginx master {pid} is gone; see {self.prefix}/logs/error.log")
            if self.settled():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP the master; wait until a new generation of workers runs and the old one has left.

        Raises NginxHarnessError (no master, or no new settled generation within ``timeout``:
        nginx keeps its old workers when the new config fails).
        """
        old = set(self.worker_pids())
        os.kill(self.master().pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.settled() and not old.intersection(self.worker_pids()):
                return
            time.sleep(0.01)
        raise NginxHarnessError(f"nginx did not reload within {timeout:g} s; see {self.prefix}/logs/error.log")

    def _ours(self, proc: psutil.Process) -> bool:
        """An nginx master started from this prefix (never signal a process whose PID was reused)."""
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            return False
        return "master process" in title and str(self.prefix) in title

    def _masters(self) -> List[psutil.Process]:
        pid = self.master_pid()
        if pid is not None:
            try:
                proc = psutil.Process(pid)
            except psutil.NoSuchProcess:
                return []
            return [proc] if self._ours(proc) else []
        # Interrupted before nginx wrote its pid file (or it was removed): find the master by its prefix.
        return [proc for proc in psutil.process_iter() if self._ours(proc)]

    def stop(self, timeout: float = 10.0, sig: signal.Signals = signal.SIGQUIT) -> List[int]:
        """Send ``sig`` to the master; SIGKILL the master and workers still there after ``timeout``.

        Returns the PIDs that had to be killed (none after a clean stop). Does nothing unless started.
        """
        if not self.started:
            return []
        self.started = False
        killed: List[int] = []
        for master in self._masters():
            try:
                family = [master] + master.children(recursive=True)
                master.send_signal(sig)
            except psutil.NoSuchProcess:
                continue
            for proc in wait_gone(family, timeout):
                try:
                    proc.kill()
                    killed.append(proc.pid)
                except psutil.NoSuchProcess:
                    pass
            wait_gone(family, 5.0)
        return killed
