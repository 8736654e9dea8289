"""`nginx-canary analyze --follow` on a log whose lines mostly do not fit the format: one line and exit 2.

A followed log of misfits must not read as "no traffic" (the rule a rollout
applies, nginx_canary/logs/health.py); good lines with a few bad ones among
them are followed as before. The CLI runs as a process on a file this test
appends to; no nginx is needed (the format is given with --log-format).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from nginx_canary.errors import ExitCode
from nginx_canary.logs.health import MIN_UNPARSED

FORMAT = "$remote_addr $status $upstream_addr $request_time $upstream_response_time"
CONF = "events {}\nhttp { upstream app { server 127.0.0.1:8081; } }\n"


def good_line(n: int) -> bytes:
    return f"10.0.0.{n % 250} 200 127.0.0.1:8081 0.005 0.004\n".encode()


@pytest.fixture
def follow(tmp_path: Path):
    (tmp_path / "nginx.conf").write_text(CONF)
    log = tmp_path / "access.log"
    log.write_bytes(b"junk from before the follow began\n" * 100)  # the follow starts at the end
    proc = subprocess.Popen(
        [sys.executable, "-m", "nginx_canary", "--nginx-conf", str(tmp_path / "nginx.conf"),
         "--state-dir", str(tmp_path / "state"), "analyze", str(log), "--follow", "--log-format", FORMAT,
         "--interval", "0.2", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline())["lines"] == 0  # following, from the end
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def append(log: Path, data: bytes) -> None:
    with open(log, "ab") as fh:
        fh.write(data)


def test_a_followed_log_of_misfits_is_one_line_and_exit_2(follow):
    proc, log = follow
    deadline = time.monotonic() + 20
    n = 0
    while proc.poll() is None and time.monotonic() < deadline:
        append(log, b"".join(b"GET /%d this is not the format\n" % (n + i) for i in range(3)))
        n += 3
        time.sleep(0.05)
    assert proc.wait(timeout=5) == ExitCode.BAD_INPUT
    err = proc.stderr.read().strip().splitlines()
    assert len(err) == 1, err
    assert f"lines of {log} do not fit log format '--log-format' (e.g. 'GET /" in err[0]
    unparsed, _, lines = err[0].split(" lines of ")[0].split()[-3:]
    assert int(unparsed) == int(lines) >= MIN_UNPARSED


def test_good_lines_with_a_few_misfits_are_followed(follow):
    proc, log = follow
    append(log, b"".join(good_line(n) for n in range(50)) + b"cut at a rotat\n" * (MIN_UNPARSED - 1))
    snapshots: List[dict] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        snapshots.append(json.loads(proc.stdout.readline()))
        if snapshots[-1]["lines"] == 50 + MIN_UNPARSED - 1:
            break
    # More bad lines than MIN_UNPARSED in all, but never most of the recent ones.
    append(log, b"".join(good_line(n) for n in range(20)) + b"junk\n" * 5)
    while time.monotonic() < deadline:
        snapshots.append(json.loads(proc.stdout.readline()))
        if snapshots[-1]["lines"] == 50 + MIN_UNPARSED - 1 + 25:
            break
    assert (snapshots[-1]["lines"], snapshots[-1]["unparsed"]) == (84, MIN_UNPARSED - 1 + 5)
    assert proc.poll() is None  # still following
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0, proc.stderr.read()
