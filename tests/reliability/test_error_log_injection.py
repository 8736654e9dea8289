"""Clients who write ``[emerg]`` / ``[alert]`` into nginx's error log cannot make reloads count as failed.

nginx copies the request line, ``Host`` and ``Referer`` of a client into its
``[error]`` lines. The attack of issue #14: ~600 req/s of ``POST /[emerg]``
with a 2 MB ``Content-Length`` (nginx answers 413 and logs "client intended
to send too large body ... request: "POST /[emerg] HTTP/1.1", host:
"[alert]"), with a ``Referer`` carrying a terminal escape sequence. Before
the fix every reload under this flood was judged failed: ``set-weight``
exited 1 and restored, and a rollout's rollback reload failed, leaving the
canary at 10 % in state ``failed``.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import List

from tests.reliability.conftest import Steps, history
from tests.cli.test_app import run

ESCAPE = "\x1b]0;owned\x07\x1b[2J"
REQUEST = ("POST /[emerg] HTTP/1.1\r\nHost: [alert]\r\nReferer: [emerg] {escape}\r\n"
           "Content-Length: 2097152\r\nConnection: close\r\n\r\n").format(escape=ESCAPE).encode("latin-1")


class ErrorLogFlood:
    """Threads sending the attack's requests to ``port`` at about ``rate`` per second, bounded in count and time."""

    def __init__(self, port: int, rate: float = 600, duration: float = 30.0, max_requests: int = 20_000,
                 threads: int = 4) -> None:
        self.port, self.stop_event = port, threading.Event()
        self.sent: List[int] = [0] * threads
        self.answers_413: List[int] = [0] * threads
        self.started = time.monotonic()
        self._deadline = self.started + duration
        self._per_thread = max_requests // threads
        self._gap = threads / rate
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, index: int) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set() and self.sent[index] < self._per_thread and time.monotonic() < self._deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
                    sock.sendall(REQUEST)
                    self.sent[index] += 1
                    if sock.recv(64).startswith(b"HTTP/1.1 413"):
                        self.answers_413[index] += 1
            except OSError:
                pass
            next_at += self._gap
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()

    def stop(self) -> int:
        self.stop_event.set()
        for t in self.threads:
            t.join(10)
        print(f"flood: {sum(self.answers_413)} answered 413 of {sum(self.sent)} sent "
              f"in {time.monotonic() - self.started:.1f} s")
        return sum(self.answers_413)


def injected_lines(error_log: Path, since: int) -> int:
    """Lines written since ``since`` that hold the attack's level words in client text."""
    data = error_log.read_bytes()[since:]
    return sum(1 for ln in data.split(b"\n") if b"[error]" in ln and b"[emerg]" in ln and b"[alert]" in ln)


def wait_for_flood(flood: ErrorLogFlood, error_log: Path, since: int) -> None:
    deadline = time.monotonic() + 10
    while injected_lines(error_log, since) < 50:
        assert time.monotonic() < deadline, "the flood wrote nothing to the error log"
        time.sleep(0.05)


def test_set_weight_under_the_flood_reloads_and_says_so(nginx):
    error_log = nginx.prefix / "logs" / "error.log"
    since = error_log.stat().st_size
    flood = ErrorLogFlood(nginx.ports["front"])
    try:
        wait_for_flood(flood, error_log, since)
        for percent in (10, 25, 50, 0):
            before = error_log.stat().st_size
            result = run(nginx, "set-weight", "backend", str(percent), "--canary", nginx.v2)
            landed = injected_lines(error_log, before)
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines()[-1].startswith(f"reloaded: canary {percent} % of upstream backend")
            assert landed > 0, "no attack line was written while set-weight ran: the test proved nothing"
    finally:
        answered = flood.stop()
    assert answered > 100 and injected_lines(error_log, since) > 100, answered
    # The escape sequence really is in the log (the attacker's bytes), and nothing of it reached the terminal.
    assert ESCAPE.encode("latin-1") in error_log.read_bytes()[since:]


def test_a_rollback_under_the_flood_restores_the_files(rel_harness):
    h = rel_harness(steps=(10, 50, 100), step_interval="5s", v2={"error_rate": 1.0})
    steps = Steps(h.site, (10, 50, 100))
    since = h.site.error_log.stat().st_size
    flood = ErrorLogFlood(h.site.ports["front"])
    try:
        wait_for_flood(flood, h.site.error_log, since)
        load = h.load(rate=150, duration=30)
        h.start_rollout()
        final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
        load.finish()
    finally:
        answered = flood.stop()
    assert final["state"] == "rolled_back", final["message"]
    records = [r for r in history(h.site) if r["event"] != "check"]
    assert [r["event"] for r in records] == ["start", "step", "rollback", "restored"], records
    print(f"canary given traffic -> restored: {records[3]['time'] - records[1]['time']:.2f} s")
    assert steps.whole() == "snapshot" and h.site.config_files() == h.originals
    assert h.site.nginx_t().returncode == 0
    assert h.probe(50).versions == {"v1": 50}
    assert answered > 100 and injected_lines(h.site.error_log, since) > 100
    # Every reload of the run (the step change and the rollback) happened under the flood.
    status = h.cli("status", "app")
    assert status.returncode == 0 and "\x1b" not in status.stdout, status.stdout
    listed = h.cli("history", "app")
    assert listed.returncode == 0 and "\x1b" not in listed.stdout
