"""The daemon speaks sd_notify to a real datagram socket: READY after recovery, STATUS, WATCHDOG, STOPPING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from nginx_canary.demo.site import DemoSite


def test_daemon_notifies_ready_status_watchdog_and_stopping(nginx_bin: str, tmp_path: Path):
    site = DemoSite(tmp_path, nginx_bin)
    site.write()
    site.start_nginx()
    notify_dir = tempfile.mkdtemp(prefix="nc-notify-")
    notify_path = os.path.join(notify_dir, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1000000",
               PATH="/usr/sbin:" + os.environ.get("PATH", ""))
    env.pop("WATCHDOG_PID", None)
    daemon = subprocess.Popen(site.daemon_command(sys.executable), env=env, stderr=subprocess.PIPE, text=True)
    try:
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(listener.recv(65536).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=app: idle" in ready
        # The socket answers by the time READY=1 is sent: recovery is done.
        assert os.path.exists(site.socket_path)
        watchdogs = 0
        while watchdogs < 2:
            if listener.recv(65536).decode() == "WATCHDOG=1":
                watchdogs += 1
        daemon.send_signal(signal.SIGTERM)
        while listener.recv(65536).decode() != "STOPPING=1":
            pass
        assert daemon.wait(timeout=20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        listener.close()
        os.unlink(notify_path)
        os.rmdir(notify_dir)
        site.stop_nginx()
        site.cleanup()
    assert "Traceback" not in daemon.stderr.read()
