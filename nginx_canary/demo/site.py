"""A private nginx site for demos, tests and benchmarks: a temp prefix, free loopback ports, two app versions.

Layout under ``root``::

    nginx/nginx.conf            http {}: the canary log_format, access log, front server
    nginx/conf.d/upstream.conf  upstream backend { v1; v2 down; }  (the file rollouts edit)
    nginx/logs/access.log       written in the ``canary`` format
    state/                      the daemon's state_dir
    daemon.yaml                 the daemon's config (rollout ``app``)

The control socket lives in a short directory of its own under ``/tmp``
(``sun_path`` holds 107 bytes; test directories are often longer).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nginx_canary.demo.nginx_harness import PrivateNginx, free_port
from nginx_canary.logs.format import CANARY_FORMAT

NGINX_CONF = """\
worker_processes {workers};
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 1024; }}
http {{
    log_format canary escape=default '{log_format}';
    access_log logs/access.log canary;
    include conf.d/*.conf;
    server {{
        listen 127.0.0.1:{front};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""

UPSTREAM_CONF = """\
# v1 is stable; v2 is the canary, staged down until a rollout gives it traffic
upstream backend {{
    server 127.0.0.1:{v1};
    server 127.0.0.1:{v2} down;
    keepalive 32;
}}
"""


def _yaml_list(values: Sequence[object]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def make_prefix(root: Path) -> Path:
    """Make nginx's prefix ``root/nginx`` with ``logs/`` and ``conf.d/`` (if not there yet); return it.

    nginx's workers run as nobody and write the logs: ``root``, the prefix and ``logs/`` get mode 0755.
    Raises OSError.
    """
    prefix = root / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "conf.d").mkdir(exist_ok=True)
    for directory in (root, prefix, prefix / "logs"):
        directory.chmod(0o755)
    return prefix


class SiteFiles:
    """Where a private site's nginx files lie under its ``root``, as :func:`make_prefix` lays them out (a mixin)."""

    root: Path

    @property
    def prefix(self) -> Path:
        return self.root / "nginx"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"


class TwoVersions:
    """A site's two app versions, ``ports["v1"]`` (stable) and ``ports["v2"]`` (canary) on loopback,
    and ``conf.d/upstream.conf``, the upstream file that names them (a mixin for a class with
    ``prefix`` and ``ports``)."""

    prefix: Path
    ports: Dict[str, int]

    @property
    def upstream_conf(self) -> Path:
        return self.prefix / "conf.d" / "upstream.conf"

    @property
    def v1(self) -> str:
        return f"127.0.0.1:{self.ports['v1']}"

    @property
    def v2(self) -> str:
        return f"127.0.0.1:{self.ports['v2']}"


@dataclass
class DemoSite(SiteFiles, TwoVersions):
    """Files and ports of one private site; :meth:`write` creates them, :meth:`start_nginx` runs nginx."""

    root: Path
    nginx_bin: str
    workers: int = 1
    ports: Dict[str, int] = field(default_factory=dict)
    socket_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = {"front": free_port(), "v1": free_port(), "v2": free_port()}
        self.nginx = PrivateNginx(self.nginx_bin, self.prefix, self.ports, worker_processes=self.workers)

    @property
    def started(self) -> bool:
        """True from :meth:`start_nginx` until nginx is stopped (or a test that killed it says so)."""
        return self.nginx.started

    @started.setter
    def started(self, value: bool) -> None:
        self.nginx.started = value

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def daemon_config(self) -> Path:
        return self.root / "daemon.yaml"

    @property
    def socket_path(self) -> str:
        if self.socket_dir is None:
            self.socket_dir = tempfile.mkdtemp(prefix="nc-")
        return os.path.join(self.socket_dir, "ctl", "control.sock")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['front']}/"

    def write(self, *, steps: Sequence[object] = (10, 25, 50, 100), step_interval: str = "5s",
              analysis: Optional[Dict[str, object]] = None, on_success: str = "keep",
              fleet: Optional[Dict[str, object]] = None) -> None:
        """Write the nginx files and the daemon config (under :func:`make_prefix`'s directories)."""
        make_prefix(self.root)
        log_format = CANARY_FORMAT.replace("\t", "\\t")
        self.conf.write_text(NGINX_CONF.format(workers=self.workers, log_format=log_format, **self.ports))
        self.upstream_conf.write_text(UPSTREAM_CONF.format(**self.ports))
        self.write_daemon_config(steps=steps, step_interval=step_interval, analysis=analysis, on_success=on_success,
                                 fleet=fleet)

    def write_daemon_config(self, *, steps: Sequence[object] = (10, 25, 50, 100), step_interval: str = "5s",
                            analysis: Optional[Dict[str, object]] = None, on_success: str = "keep",
                            fleet: Optional[Dict[str, object]] = None) -> None:
        """``fleet``: the ``fleet`` section's keys and values (YAML scalars or lists), none for a lone host."""
        checks: Dict[str, object] = {"interval": "250ms", "min_requests": 20, "failure_threshold": 2}
        checks.update(analysis or {})
        lines = [
            "nginx:",
            f"  conf: {self.conf}",
            f"  binary: {self.nginx_bin}",
            f"  prefix: {self.prefix}",
            f"state_dir: {self.state_dir}",
            f"control_socket: {self.socket_path}",
            "rollouts:",
            "  app:",
            "    upstream: backend",
            f"    canary: [\"{self.v2}\"]",
            f"    steps: {_yaml_list(steps)}",
            f"    step_interval: {step_interval}",
            f"    on_success: {on_success}",
            "    analysis:",
        ] + [f"      {key}: {value}" for key, value in checks.items()]
        if fleet:
            lines.append("fleet:")
            lines += [f"  {key}: {_yaml_list(value) if isinstance(value, (list, tuple)) else value}"
                      for key, value in fleet.items()]
        self.daemon_config.write_text("\n".join(lines) + "\n")

    def start_nginx(self, timeout: float = 10.0) -> None:
        """Start nginx and wait until it accepts connections and all its workers run. Raises NginxHarnessError."""
        self.nginx.start(timeout)

    def worker_pids(self) -> List[int]:
        """PIDs of the running master's live workers (none if nginx is not running)."""
        return self.nginx.worker_pids()

    def nginx_pid(self) -> Optional[int]:
        return self.nginx.master_pid()

    def stop_nginx(self, timeout: float = 10.0, sig: signal.Signals = signal.SIGQUIT) -> List[int]:
        """Stop nginx (``sig``, graceful by default), then SIGKILL what is left after ``timeout``; the killed PIDs."""
        return self.nginx.stop(timeout, sig)

    def config_files(self) -> Dict[str, bytes]:
        """The bytes of every nginx config file, by path relative to the prefix."""
        files = {}
        for path in sorted([self.conf, *(self.prefix / "conf.d").glob("*")]):
            files[str(path.relative_to(self.prefix))] = path.read_bytes()
        return files

    def daemon_command(self, python: str, extra: Sequence[str] = ()) -> List[str]:
        """The command line that runs the daemon of this site with ``python``."""
        return [python, "-m", "nginx_canary", "--config", str(self.daemon_config), *extra, "daemon"]

    def cleanup(self) -> None:
        """Remove the socket directory (the rest lives under ``root``, which the caller owns)."""
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
