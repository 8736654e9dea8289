"""A private etcd for the tests, the fleet demo and the fleet benchmark: one data dir, free loopback ports.

A :class:`PrivateEtcd` runs Debian's ``etcd`` (v3.4) as a one-member cluster
listening on ``127.0.0.1`` (a client port and a peer port), waits until its
``/health`` endpoint answers ``"true"``, and stops it by PID: SIGTERM, then
SIGKILL after a deadline. The failure tests freeze it (SIGSTOP/SIGCONT) and
restart it on the same data dir and ports, so the keys survive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import psutil
import requests

from nginx_canary.demo.nginx_harness import free_ports, wait_gone


class EtcdHarnessError(RuntimeError):
    """etcd did not start, died, or did not become healthy in time."""


class PrivateEtcd:
    """One etcd member with its data in ``data_dir``; ``client_url`` is what clients dial.

    ``running`` is true from :meth:`start` until :meth:`stop`; ``paused`` while SIGSTOPped.
    """

    def __init__(self, data_dir: Path, *, binary: str = "etcd", name: str = "canary-test") -> None:
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.name = name
        self.client_port, self.peer_port = free_ports(2)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.process: Optional[subprocess.Popen] = None
        self.paused = False

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None

    @property
    def pid(self) -> int:
        """The etcd process's PID. Raises EtcdHarnessError when it is not running."""
        if self.process is None:
            raise EtcdHarnessError("etcd is not running")
        return self.process.pid

    def command(self) -> List[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}", "--initial-cluster-state", "new",
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ]

    def start(self, timeout: float = 15.0) -> None:
        """Run etcd and wait until it is healthy. Raises EtcdHarnessError (etcd stopped again) on failure."""
        if self.process is not None:
            raise EtcdHarnessError("etcd is already running")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.wait_healthy(timeout)
        except EtcdHarnessError:
            self.stop()
            raise

    def wait_healthy(self, timeout: float = 15.0) -> None:
        """Poll ``/health`` until it says true. Raises EtcdHarnessError if etcd exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise EtcdHarnessError(f"etcd exited while starting; its log: {self.log_tail()}")
            try:
                answer = requests.get(f"{self.client_url}/health", timeout=1.0)
                if answer.ok and answer.json().get("health") == "true":
                    return
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise EtcdHarnessError(f"etcd not healthy after {timeout:g}s; its log: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pause(self) -> None:
        """SIGSTOP etcd: its sockets stay open but nothing answers (a hung server, not a dead one)."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True
        # The signal is delivered asynchronously: return once every thread of etcd has stopped.
        proc = psutil.Process(self.pid)
        deadline = time.monotonic() + 2.0
        while proc.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.005)

    def resume(self) -> None:
        """SIGCONT a paused etcd."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM etcd (after SIGCONT if paused), SIGKILL it if it outlives ``timeout``; reaps it."""
        if self.process is None:
            return
        process, self.process = self.process, None
        try:
            proc = psutil.Process(process.pid)
            if self.paused:
                os.kill(process.pid, signal.SIGCONT)
            os.kill(process.pid, signal.SIGTERM)
            if wait_gone([proc], timeout):
                os.kill(process.pid, signal.SIGKILL)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
        self.paused = False
        process.wait()

    def kill(self) -> None:
        """SIGKILL etcd at once (a crash), then reap it."""
        if self.process is None:
            return
        process, self.process = self.process, None
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.paused = False
        process.wait()

    def restart(self, timeout: float = 15.0) -> None:
        """Stop etcd and start it again on the same data dir and ports."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> "PrivateEtcd":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
