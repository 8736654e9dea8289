"""`nginx-canary demo` end to end: the three rollouts end as promised, nothing is left behind, Ctrl-C is clean."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from nginx_canary.demo.run import BAD_ERROR_RATE, LOAD_RATE, MAX_DEMO_SECONDS, RUN_TIMEOUT, Demo, format_summary


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_demo_promotes_then_rolls_back_twice_and_cleans_up(nginx_bin, tmp_path):
    out = io.StringIO()
    demo = Demo(out, nginx_bin=nginx_bin, report_dir=str(tmp_path))
    report = demo.run()
    text = out.getvalue()
    assert [r.state for r in report.runs] == ["promoted", "rolled_back", "rolled_back"], text
    assert report.ok
    failing, slow = report.runs[1], report.runs[2]
    for bad in (failing, slow):
        assert bad.restored_after is not None and bad.first_failed_check is not None
        assert 0 < bad.first_failed_check <= bad.restored_after < RUN_TIMEOUT
    assert "5xx" in failing.message
    # The slow canary answered 200 and was rolled back on its latency alone.
    assert "latency" in slow.message and "error_rate" not in slow.message, slow.message
    assert report.seconds < MAX_DEMO_SECONDS
    load = report.load
    assert load is not None and load.responses > 1000 and load.stragglers == 0
    assert load.rate > 0.9 * LOAD_RATE  # the load kept up with the slow canary
    # Errors clients saw came from v2 only, and only while it had traffic.
    assert set(load.versions_5xx) <= {"v2"} and load.socket_errors == 0
    assert load.status_5xx <= failing.seconds * LOAD_RATE * BAD_ERROR_RATE
    summary = format_summary(report)
    assert "time to rollback" in summary and "errors clients saw" in summary
    assert summary.count("why: rolled back") == 2 and slow.message in summary
    # Each run left its HTML report (outside the removed temp directory).
    for run, word in zip(report.runs, ("promoted", "rolled back", "rolled back")):
        assert run.report_path is not None and Path(run.report_path).parent == tmp_path
        page = Path(run.report_path).read_text()
        assert page.startswith("<!DOCTYPE html>") and "<svg" in page and word in page
        assert run.report_path in summary
    assert not Path(report.directory).exists()
    assert demo.daemon is not None and not alive(demo.daemon.pid)
    assert demo.nginx_pid is not None and not alive(demo.nginx_pid)


def test_ctrl_c_stops_everything_and_removes_the_files():
    env = dict(os.environ, PATH="/usr/sbin:" + os.environ.get("PATH", ""), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "nginx_canary", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("run 1:"):
                break
        text = "".join(lines)
        directory = re.search(r"from (\S+)", text).group(1)
        daemon_pid = int(re.search(r"daemon  pid (\d+)", text).group(1))
        assert Path(directory).exists() and alive(daemon_pid)
        nginx_pid = int((Path(directory) / "nginx" / "logs" / "nginx.pid").read_text())
        time.sleep(1.5)  # in the middle of the first rollout
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not Path(directory).exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (alive(daemon_pid) or alive(nginx_pid)):
        time.sleep(0.1)
    assert not alive(daemon_pid) and not alive(nginx_pid)
