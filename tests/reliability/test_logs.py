"""Log chaos under the real daemon: rotation every 100 ms under load, the log deleted, huge lines, binary junk.

The daemon follows nginx's access log from its start (the log is empty then)
while the demo load runs through nginx. Meanwhile the test:

1. rotates the log every 100 ms (``mv`` + USR1, what logrotate does) for 3 s;
2. deletes it (a hard link under another name keeps its bytes for the count;
   the path is gone, as for the tailer), lets nginx write into the deleted
   file for a while, then USR1 makes nginx create a new one;
3. appends a 1 MiB line with its newline, a 16 MiB "line" that never gets one
   (the next line nginx writes is glued to it), and 300 lines of binary junk.

Then the load stops and the daemon's own figures (``metrics_listen``) must equal
what the files on disk hold, exactly: parsed lines = the complete lines nginx
wrote that stand on their own, unparsed = the junk lines (over-long ones
included), canary and stable attempts per group = those in the nginx lines;
and the load generator's answers = nginx's lines plus the ones glued to junk.
The daemon's RSS must stay within a few MiB of its level before the junk. The rollout goes on, or
pauses because most of the lines it just read do not fit the format (the junk burst), saying so.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Dict, List

import psutil

from nginx_canary.demo.nginx_harness import free_port
from nginx_canary.logs.format import CANARY_FORMAT
from tests.reliability.conftest import metrics, wait_for

FIELDS = CANARY_FORMAT.count("\t") + 1  # the fields of a line of the shipped format
MAX_LINE = 65536  # the tailer's max_line_bytes: longer lines are dropped and counted unparsed
ROTATE_EVERY = 0.1
ROTATE_FOR = 3.0
HUGE = 16 << 20


def append(path: Path, data: bytes) -> None:
    """One O_APPEND write, like nginx's own."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def truth(logs: Path, site) -> Dict[str, int]:
    """What nginx wrote, from every file under logs/ (rotated, deleted-but-linked, current)."""
    groups = {site.v1: "stable", site.v1b: "stable", site.v2: "canary"}
    out = {"nginx": 0, "junk": 0, "glued": 0, "canary": 0, "stable": 0, "files": 0}
    for path in sorted(logs.iterdir()):
        if not (path.name.startswith("access.log") or path.name.startswith(".deleted")):
            continue
        out["files"] += 1
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the last newline: not a line (yet)
        if len(tail) > MAX_LINE:
            out["junk"] += 1  # the tailer drops it once it passes the limit
        for line in lines:
            fields = line.split(b"\t")
            if len(line) <= MAX_LINE and len(fields) == FIELDS and re.fullmatch(rb"[0-9]+\.[0-9]{3}", fields[0]):
                out["nginx"] += 1
                for addr in fields[1].split(b", "):
                    group = groups.get(addr.decode())
                    if group:
                        out[group] += 1
            else:
                out["junk"] += 1
                glued = line.rsplit(b"J", 1)[-1].split(b"\t")
                if len(line) > MAX_LINE and len(glued) == FIELDS:
                    out["glued"] += 1
    return out


def daemon_figures(url: str) -> Dict[str, int]:
    found = metrics(url)
    out = {"parsed": 0, "unparsed": 0, "canary": 0, "stable": 0}
    for key, value in found.items():
        if key.startswith("nginx_canary_log_lines_total{"):
            out["parsed" if 'result="parsed"' in key else "unparsed"] += int(value)
        elif key.startswith("nginx_canary_upstream_requests_total{"):
            out["canary" if 'group="canary"' in key else "stable"] += int(value)
    return out


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: List[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.samples.append(self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            self._stop.wait(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return max(self.samples)


def test_rotation_deletion_huge_lines_and_junk_under_load(rel_harness, capsys):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    h = rel_harness(steps=(10, 50, 100), extra_yaml=[f"metrics_listen: 127.0.0.1:{port}"], workers=2)
    site = h.site
    logs = site.access_log.parent
    assert site.access_log.stat().st_size == 0  # the daemon follows from here: every line counts
    # Give the canary a share, so that both groups appear in the log.
    h.start_rollout(steps=["50", "100"], step_interval=3600.0)
    load = h.load(rate=400, duration=60, max_requests=40_000, concurrency=8)
    time.sleep(0.5)

    # 1. Rotation every 100 ms.
    rotations = 0
    end = time.monotonic() + ROTATE_FOR
    while time.monotonic() < end:
        rotations += 1
        os.rename(site.access_log, logs / f"access.log.{rotations}")
        site.reopen_logs()
        time.sleep(ROTATE_EVERY)

    # 2. Deleted, written to while deleted, then reopened.
    time.sleep(0.3)
    os.link(site.access_log, logs / ".deleted-1")
    os.unlink(site.access_log)
    time.sleep(0.5)
    site.reopen_logs()
    wait_for(lambda: site.access_log.exists() and site.access_log.stat().st_size > 0, "nginx to recreate the log")

    # 3. Junk: a 1 MiB line, a 16 MiB line without newline, binary garbage.
    rss = RssSampler(h.daemon.pid)
    time.sleep(0.3)
    baseline = max(rss.samples)
    append(site.access_log, b"X" * (1 << 20) + b"\n")
    append(site.access_log, b"J" * HUGE)
    time.sleep(0.3)  # nginx's next lines are glued to it until one ends it
    rng = random.Random(7)
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b"") + b"\n"
            for _ in range(300)]
    for line in junk:
        append(site.access_log, line)
    time.sleep(1.0)
    seen = load.finish()
    assert seen.status_5xx == 0 and seen.socket_errors == 0, seen.summary()

    # The daemon catches up; its figures equal what the files hold.
    expected = truth(logs, site)
    expected_figures = {"parsed": expected["nginx"], "unparsed": expected["junk"],
                        "canary": expected["canary"], "stable": expected["stable"]}
    deadline = time.monotonic() + 20
    while True:
        got = daemon_figures(url)
        if got["parsed"] + got["unparsed"] >= expected["nginx"] + expected["junk"]:
            break
        assert time.monotonic() < deadline, f"the daemon did not read every line: expected {expected_figures}, got {got}"
        time.sleep(0.25)
    time.sleep(1.5)  # metrics refresh every second: a later look must not find more
    got = daemon_figures(url)
    peak = rss.stop()
    with capsys.disabled():
        print(f"\nlog chaos: {rotations} rotations at {ROTATE_EVERY * 1000:.0f} ms, {expected['files']} files; "
              f"nginx lines {expected['nginx']}, junk {expected['junk']} (glued {expected['glued']}); "
              f"daemon parsed {got['parsed']}, unparsed {got['unparsed']}, canary {got['canary']} / "
              f"{expected['canary']}, stable {got['stable']} / {expected['stable']}; load answers {seen.responses}; "
              f"daemon RSS {baseline / 2**20:.1f} MiB -> peak {peak / 2**20:.1f} MiB")
    assert seen.responses == expected["nginx"] + expected["glued"]
    assert got == expected_figures
    assert peak - baseline < 8 << 20, (baseline, peak)
    assert h.daemon.poll() is None
    st = h.status()
    # 300 junk lines in a row are most of the lines the daemon had just read: a rollout pauses on a log that
    # mostly fails to parse (issue #16), with the reason; otherwise it goes on.
    if st["state"] == "paused":
        assert "do not fit log format 'canary'" in st["message"], st["message"]
    else:
        assert st["state"] == "progressing", st["message"]
