"""A real nginx whose access log records a request counter, for the tailer tests."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest

from nginx_canary.demo.nginx_harness import free_port
from tests.conftest import NginxInstance

COUNTING_CONF = """\
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 256; }}
http {{
    log_format counter '$pid $request_uri $status';
    access_log logs/access.log counter;
    keepalive_requests 1000000;
    server {{
        # reuseport: the kernel spreads connections over both workers, so both write the log
        listen 127.0.0.1:{front} reuseport;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


class CountingNginx(NginxInstance):
    """nginx logging ``<worker pid> /?n=<number> <status>`` per request."""

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    def reopen(self, *, via_cli: bool = False) -> None:
        """What logrotate's postrotate does: ``nginx -s reopen``, or USR1 to the master straight away."""
        if via_cli:
            result = self.run("-s", "reopen", timeout=10)
            assert result.returncode == 0, result.stderr
        else:
            os.kill(self.master().pid, signal.SIGUSR1)

    def serious_errors(self) -> List[str]:
        """error.log lines at alert/emerg/crit level (a failed reopen shows up here)."""
        text = (self.prefix / "logs" / "error.log").read_text(errors="replace")
        return [line for line in text.splitlines() if any(f"[{lvl}]" in line for lvl in ("emerg", "alert", "crit"))]


@pytest.fixture
def counting_nginx(nginx_bin: str) -> Iterator[CountingNginx]:
    """A running CountingNginx.

    The prefix is a fresh directory in the system temp dir, not under
    pytest's tmp_path: pytest's base directory is 0700, and workers (nobody)
    that cannot reach the log fail to reopen it after USR1 and keep writing
    to the renamed file.
    """
    prefix = Path(tempfile.mkdtemp(prefix="nginx-canary-tail-"))
    try:
        (prefix / "logs").mkdir()
        for d in (prefix, prefix / "logs"):
            d.chmod(0o755)
        port = free_port()
        (prefix / "nginx.conf").write_text(COUNTING_CONF.format(front=port))
        inst = CountingNginx(nginx_bin, prefix, {"front": port}, prefix / "state")
        inst.start()
        try:
            yield inst
        finally:
            inst.stop()
    finally:
        shutil.rmtree(prefix, ignore_errors=True)

