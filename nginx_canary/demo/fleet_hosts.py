"""Several private nginx hosts in one etcd fleet, each with its ``nginx-canary daemon`` process, and their load.

The hosts (:class:`~nginx_canary.demo.site.DemoSite`, one directory each
under ``root``) stand in front of the same two demo apps v1 and v2 (threads
of this process); every host's daemon config carries the same ``fleet:``
section plus its own ``host``. ``nginx-canary demo --fleet``
(``fleet_tour.py``) and the fleet daemon tests build on this; the etcd is
the caller's.

Each daemon runs in a session of its own (Ctrl-C reaches only this process)
and writes to ``root/<host>-daemon.log``; :meth:`FleetHosts.stop` stops
every process started, by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from nginx_canary.daemon import control_socket
from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.load import LoadResult, run_load
from nginx_canary.demo.nginx_harness import free_port
from nginx_canary.demo.site import DemoSite
from nginx_canary.errors import CanaryError

#: How long a daemon may take from its start until it answers on its control socket.
DAEMON_READY_TIMEOUT = 30.0
#: Variables from outside that would change what a daemon reads or whom it notifies.
_FOREIGN = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def daemon_env(nginx_bin: str) -> Dict[str, str]:
    """The environment for a host's daemon or CLI: no NGINX_CANARY_* or systemd variables from outside,
    ``nginx_bin``'s directory first on PATH, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NGINX_CANARY_") and k not in _FOREIGN}
    env["PATH"] = os.pathsep.join([os.path.dirname(nginx_bin), env.get("PATH", "/usr/bin:/bin")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class FleetHosts:
    """Hosts ``hosts`` of the fleet ``fleet`` (the ``fleet:`` section without ``host``) under ``root``.

    ``site``: the other keyword arguments of :meth:`DemoSite.write` (steps, step_interval, analysis, ...);
    ``apps``: keyword arguments of :class:`DemoApp` for "v1" and "v2". :meth:`start_sites` starts the apps and
    every nginx, :meth:`start_daemons` the daemons, :meth:`start_load` the clients; :meth:`stop` ends them all.
    """

    def __init__(self, root: Path, nginx_bin: str, hosts: Sequence[str], fleet: Mapping[str, object], *,
                 site: Mapping[str, Any], apps: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
        self.root = root
        self.nginx_bin = nginx_bin
        self.hosts = list(hosts)
        self.fleet = dict(fleet)
        self.site_settings = dict(site)
        self.app_settings = {version: dict((apps or {}).get(version, {})) for version in ("v1", "v2")}
        self.apps: Dict[str, DemoApp] = {}
        self.sites: Dict[str, DemoSite] = {}
        self.daemons: Dict[str, subprocess.Popen] = {}
        self.pids: List[int] = []  # every nginx and daemon process started, restarts included
        self.load_stop = threading.Event()
        self.load_threads: List[threading.Thread] = []
        self.loads: Dict[str, LoadResult] = {}

    def start_sites(self) -> None:
        """Start the apps, then write and start every host's nginx. Raises OSError or NginxHarnessError."""
        ports = {"v1": free_port(), "v2": free_port()}
        for version, settings in self.app_settings.items():
            self.apps[version] = DemoApp(version, port=ports[version], **settings)
            self.apps[version].start()
        for host in self.hosts:
            site = DemoSite(self.root / host, self.nginx_bin, ports={"front": free_port(), **ports})
            site.write(**self.site_settings, fleet={**self.fleet, "host": host})
            self.sites[host] = site
            site.start_nginx()
            self.pids += [pid for pid in (site.nginx_pid(), *site.worker_pids()) if pid is not None]

    def start_daemons(self) -> None:
        """Start every host's daemon, one after the other. Raises CanaryError as :meth:`start_daemon`."""
        for host in self.hosts:
            self.start_daemon(host)

    def start_daemon(self, host: str) -> None:
        """Start ``host``'s daemon and wait until it answers. Raises CanaryError when it exits or stays silent."""
        site = self.sites[host]
        with open(self.log_path(host), "ab") as log:
            proc = subprocess.Popen(site.daemon_command(sys.executable), stdout=log, stderr=subprocess.STDOUT,
                                    env=daemon_env(self.nginx_bin), start_new_session=True)
        self.daemons[host] = proc
        self.pids.append(proc.pid)
        deadline = time.monotonic() + DAEMON_READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise CanaryError(f"{host}'s daemon exited with {proc.returncode}: {self.log_tail(host)}")
            try:
                control_socket.call(site.socket_path, "ping", timeout=5)
                return
            except CanaryError:
                if time.monotonic() > deadline:
                    raise CanaryError(f"{host}'s daemon did not answer within {DAEMON_READY_TIMEOUT:g} s: "
                                      f"{self.log_tail(host)}") from None
                time.sleep(0.1)

    def log_path(self, host: str) -> Path:
        return self.root / f"{host}-daemon.log"

    def log_tail(self, host: str, lines: int = 1) -> str:
        """The last ``lines`` lines ``host``'s daemons wrote, or "(no log)" / "(no output)"."""
        try:
            text = self.log_path(host).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) if text else "(no output)"

    def alive(self) -> List[str]:
        """The hosts whose daemon runs."""
        return [h for h, p in self.daemons.items() if p.poll() is None]

    def start_load(self, rate: float, duration: float, concurrency: int = 4) -> None:
        """``rate`` req/s through every host for at most ``duration`` s, in threads; results in ``loads``."""
        for host, site in self.sites.items():
            thread = threading.Thread(target=self._load, args=(host, site.url, rate, duration, concurrency),
                                      name=f"load-{host}", daemon=True)
            thread.start()
            self.load_threads.append(thread)

    def _load(self, host: str, url: str, rate: float, duration: float, concurrency: int) -> None:
        self.loads[host] = run_load(url, rate=rate, duration=duration, max_requests=int(rate * duration),
                                    concurrency=concurrency, timeout=5.0, stop_event=self.load_stop)

    def stop_load(self) -> None:
        """Stop the clients and wait for them (each returns within its socket timeout)."""
        self.load_stop.set()
        for thread in self.load_threads:
            thread.join(15)

    def stop(self) -> None:
        """Stop the load, then every daemon (SIGTERM, SIGKILL after 15 s), nginx and app started."""
        self.stop_load()
        for proc in self.daemons.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.daemons.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        for site in self.sites.values():
            site.stop_nginx(sig=signal.SIGTERM)
            site.cleanup()
        for app in self.apps.values():
            app.stop()
