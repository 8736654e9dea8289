"""Talk to nginx: ``nginx -t``, find the master, reload it and prove the reload took effect."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import psutil

from nginx_canary.errors import ConfigError, NginxNotRunningError, NginxRejectedError
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.nginx.error_log import ReloadWitness, first_failure, size_of
from nginx_canary.text import printable

Runner = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]
DEFAULT_RELOAD_TIMEOUT = 10.0
_FIRST_POLL_SECONDS = 0.002
_MAX_POLL_SECONDS = 0.025
# `nginx -t` writes "nginx: [emerg] ..." to its own stderr, which no client reaches.
_FAILURE_LEVELS = re.compile(r"\[(emerg|alert)\]")


def run_process(argv: Sequence[str], timeout: float) -> "subprocess.CompletedProcess[str]":
    """Run ``argv`` and capture its output as text.

    Raises:
        ConfigError: the program cannot be started or runs past ``timeout``.
    """
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ConfigError(f"nginx binary not found: {argv[0]} (set --nginx-bin)") from exc
    except PermissionError as exc:
        raise ConfigError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"{' '.join(argv)} did not finish within {timeout:g} s") from exc


def _nginx_message(output: str) -> str:
    """The line of nginx's output that says what is wrong."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if _FAILURE_LEVELS.search(ln):
            return printable(ln)
    return printable(lines[0]) if lines else "no output"


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


@dataclass(frozen=True)
class ReloadResult:
    """Proof that a reload took effect."""

    master_pid: int
    old_workers: Tuple[int, ...]
    new_workers: Tuple[int, ...]
    seconds: float


@dataclass
class Nginx:
    """One nginx installation: its binary, main config file and prefix (``-p``)."""

    binary: str
    conf_path: str
    prefix: Optional[str] = None
    runner: Runner = run_process
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _compiled: Optional[Dict[str, str]] = field(default=None, repr=False)

    def args(self) -> List[str]:
        """``-p``/``-c`` as the running nginx was given them."""
        out = []
        if self.prefix:
            out += ["-p", self.prefix]
        return out + ["-c", self.conf_path]

    def test(self) -> None:
        """Run ``nginx -t`` on the configuration as it is on disk now.

        Raises:
            NginxRejectedError: nginx rejects it (the message is nginx's own).
        """
        result = self.runner([self.binary, "-t", "-q", *self.args()], 120.0)
        if result.returncode != 0:
            raise NginxRejectedError(f"nginx -t failed: {_nginx_message(result.stderr + result.stdout)}")

    def compiled_defaults(self) -> Dict[str, str]:
        """The ``--prefix``, ``--pid-path``, ... that ``nginx -V`` shows."""
        if self._compiled is None:
            result = self.runner([self.binary, "-V"], 30.0)
            found = re.findall(r"--([a-z-]+)=(\S+)", result.stderr + result.stdout)
            self._compiled = dict(found)
        return self._compiled

    def full_path(self, path: str) -> str:
        """``path`` as nginx reads it: relative paths are relative to the prefix."""
        if os.path.isabs(path):
            return path
        prefix = self.prefix or self.compiled_defaults().get("prefix", "/usr/share/nginx")
        return os.path.join(prefix, path)

    def pid_path(self, config: NginxConfig) -> str:
        """Where the master writes its PID: the ``pid`` directive, else nginx's compiled default."""
        path = config.pid or self.compiled_defaults().get("pid-path", "logs/nginx.pid")
        return self.full_path(path)

    def error_log_path(self, config: NginxConfig) -> Optional[str]:
        """The main error log file, or None when it is not a file (stderr, syslog, memory)."""
        candidates = list(config.error_logs) or [self.compiled_defaults().get("error-log-path", "logs/error.log")]
        path = candidates[-1]
        if path == "stderr" or path.startswith(("syslog:", "memory:")):
            return None
        return self.full_path(path)

    def find_master(self, config: NginxConfig) -> psutil.Process:
        """The running master process of this configuration.

        Raises:
            NginxNotRunningError: no PID file, a stale one, or a PID that is not an nginx master.
        """
        pid_file = self.pid_path(config)
        try:
            with open(pid_file, encoding="ascii") as fh:
                raw = fh.read().strip()
        except OSError as exc:
            raise NginxNotRunningError(f"nginx is not running: cannot read PID file {pid_file} ({exc.strerror})") from exc
        if not raw.isdigit():
            raise NginxNotRunningError(f"nginx is not running: PID file {pid_file} holds {raw[:40]!r}")
        try:
            master = psutil.Process(int(raw))
        except psutil.NoSuchProcess as exc:
            raise NginxNotRunningError(f"nginx is not running: no process {raw} (stale PID file {pid_file})") from exc
        if not _cmdline(master).startswith("nginx: master process"):
            raise NginxNotRunningError(f"nginx is not running: process {raw} from {pid_file} is not an nginx master")
        return master

    @staticmethod
    def children(master: psutil.Process) -> Tuple[int, ...]:
        """PIDs of the master's child processes.

        Raises:
            psutil.NoSuchProcess: the master is gone.
        """
        # psutil finds children by scanning every process in /proc (a few ms);
        # the kernel's list for the master's (only) thread is one small read.
        try:
            with open(f"/proc/{master.pid}/task/{master.pid}/children", "rb") as fh:
                return tuple(int(p) for p in fh.read().split())
        except (OSError, ValueError):
            return tuple(c.pid for c in master.children())

    @classmethod
    def workers(cls, master: psutil.Process) -> Tuple[int, ...]:
        """PIDs of the master's worker processes that are not shutting down."""
        try:
            children = cls.children(master)
        except psutil.NoSuchProcess:
            return ()
        pids = []
        for pid in children:
            try:
                line = _cmdline(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
            if "worker process" in line and "shutting down" not in line:
                pids.append(pid)
        return tuple(sorted(pids))

    @staticmethod
    def _quit(pids: Iterable[int]) -> None:
        for pid in pids:
            try:
                psutil.Process(pid).send_signal(signal.SIGQUIT)
            except psutil.NoSuchProcess:
                pass

    def reload(self, master: psutil.Process, error_log: Optional[str], timeout: float = DEFAULT_RELOAD_TIMEOUT) -> ReloadResult:
        """Send SIGHUP to ``master`` and wait for a new generation of workers.

        Success needs new worker processes within ``timeout`` and no failure
        logged since the signal by the master or a new process (see
        :mod:`nginx_canary.nginx.error_log`; client text in the log is data). It returns once
        the old workers have stopped accepting (exited or shutting down; they
        are sent the graceful SIGQUIT as soon as the new generation is up), so
        that new connections meet the new config; if they linger past
        ``timeout``, the new workers alone are taken as proof.

        Raises:
            NginxRejectedError: the reload did not take effect.
            NginxNotRunningError: the master went away.
        """
        old = self.workers(master)
        # Every child counts as old, even one forked so recently that it still
        # carries the master's title: it must not pass for a new worker later.
        try:
            old_children = set(self.children(master))
        except psutil.NoSuchProcess as exc:
            raise NginxNotRunningError(f"nginx master {master.pid} exited before the reload") from exc
        log_offset = size_of(error_log)
        witness = ReloadWitness(master.pid, frozenset(old_children))
        started = self.clock()
        try:
            master.send_signal(signal.SIGHUP)
        except psutil.NoSuchProcess as exc:
            raise NginxNotRunningError(f"nginx master {master.pid} exited before the reload") from exc
        deadline = started + timeout
        new: Tuple[int, ...] = ()
        pause = _FIRST_POLL_SECONDS
        quit_sent = False
        while True:
            problem = first_failure(error_log, log_offset, witness)
            if problem:
                raise NginxRejectedError(f"reload failed: {problem}")
            if not master.is_running():
                raise NginxNotRunningError(f"nginx master {master.pid} exited during the reload")
            active = self.workers(master)
            new = tuple(p for p in active if p not in old_children)
            if new and len(new) >= len(old):
                lingering = set(active) & set(old)
                if not lingering:
                    break
                # Old workers go on accepting connections with the old config
                # until the master tells them to quit, which it does only after
                # a fixed 100 ms pause. Once the new generation is up, ask them
                # ourselves: SIGQUIT is nginx's documented graceful shutdown of
                # a worker, and the master would send the same a moment later.
                if not quit_sent:
                    self._quit(lingering)
                    quit_sent = True
            if self.clock() >= deadline:
                if new:
                    break
                raise NginxRejectedError(f"reload did not take effect: no new worker processes within {timeout:g} s")
            self.sleep(pause)
            # Back off so that polling does not compete with a master busy re-reading a large config.
            pause = min(pause * 1.5, _MAX_POLL_SECONDS)
        problem = first_failure(error_log, log_offset, witness)
        if problem:
            raise NginxRejectedError(f"reload failed: {problem}")
        return ReloadResult(master.pid, old, new, self.clock() - started)

