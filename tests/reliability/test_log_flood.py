"""A flood of ~11 KB access-log lines (~7,000 req/s, ~77 MB/s) must not hold back a rollback (issue #14, item 7).

Real nginx (2 workers), the real daemon, a canary answering 500 to
everything (nginx itself answers for both backends, ``return 500`` for the
canary), 150 req/s of ordinary load through the front server. A client on
loopback floods a second server of the same nginx with ~11 KB request
lines (pipelined on keep-alive connections, ``return 204``): nginx logs
each in the ``canary`` format, long ``$uri`` included, into the access log
the daemon reads. Those lines have no upstream, so they count as lines only,
exactly what an attacker's flood is.

Two runs of the same rollout (steps 10, 100) on the same daemon: without the
flood, then with it (started 3 s before the rollout, bounded in rate and
duration). Both must roll back; the flooded one within a generous bound of
the quiet one, and the daemon must be at most 1 s of writing behind the log
as the flood ends (``status``'s ``access_log.backlog_bytes``; nothing asks the
daemon anything during the flood, since a command wakes its loop for an
extra read).
Before the fix the reader took at most 16 MiB per 250 ms turn (64 MiB/s): at
~77 MB/s it fell behind by ~10 MB every second, and the restore's thread
competed with the log parsing for the GIL.

The figures are printed for docs/RELIABILITY.md.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Dict, List, Tuple

from nginx_canary.demo.nginx_harness import free_port
from tests.reliability.conftest import WAIT, history, wait_for

FLOOD_RATE = 7000          # requests per second, at most
URI_BYTES = 10_900         # makes each logged line ~11 KB: ~77 MB/s at FLOOD_RATE
FLOOD_SECONDS = 15.0
FLOOD_LEAD = 3.0           # seconds of flood before the rollout starts
CONNECTIONS = 4
BATCH = 35                 # requests per write: CONNECTIONS * BATCH * 50 batches/s = FLOOD_RATE
MAX_REQUESTS = int(FLOOD_RATE * FLOOD_SECONDS * 1.1)
MAX_BEHIND_SECONDS = 1.0   # of writing, at the flood's measured rate

FLOOD_CONF = """\
# The flood's target: answered by nginx itself, logged in the canary format like everything else.
large_client_header_buffers 4 16k;
server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{ return 204; }}
}}
"""


class Flood:
    """CONNECTIONS threads sending pipelined batches of long GETs at FLOOD_RATE for at most FLOOD_SECONDS."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.request = b"GET /flood/" + b"a" * URI_BYTES + b" HTTP/1.1\r\nHost: flood\r\n\r\n"
        self.sent = 0
        self.answered = 0
        self.errors: List[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.started = self.ended = 0.0
        self.threads = [threading.Thread(target=self._run, args=(i,), name=f"flood-{i}", daemon=True)
                        for i in range(CONNECTIONS)]

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self.threads), "a flood thread did not stop"
        self.ended = time.monotonic()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def _run(self, index: int) -> None:
        every = CONNECTIONS * BATCH / FLOOD_RATE
        batch = self.request * BATCH
        sock = None
        reconnects = 0
        k = 0
        try:
            while not self.stop.is_set():
                due = self.started + (k + index / CONNECTIONS) * every
                if due - self.started >= FLOOD_SECONDS:
                    return
                with self.lock:
                    if self.sent + BATCH > MAX_REQUESTS:
                        return
                    self.sent += BATCH
                self.stop.wait(max(0.0, due - time.monotonic()))
                k += 1
                try:
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                    sock.sendall(batch)
                    self._read_answers(sock, BATCH)
                except OSError:
                    # A reload's old workers close their keep-alive connections: connect again (a few times).
                    if sock is not None:
                        sock.close()
                    sock = None
                    reconnects += 1
                    if reconnects > 20:
                        raise
        except OSError as exc:
            with self.lock:
                self.errors.append(f"connection {index}: {exc}")
        finally:
            if sock is not None:
                sock.close()

    def _read_answers(self, sock: socket.socket, count: int) -> None:
        seen, tail = 0, b""
        while seen < count:
            data = sock.recv(65536)
            if not data:
                raise OSError("nginx closed the connection")
            seen += (tail + data).count(b"\r\n\r\n")
            tail = data[-3:]
        with self.lock:
            self.answered += count


def run_times(records: List[Dict[str, Any]]) -> Dict[str, float]:
    """Seconds from the canary's first step to the rollback decision and to the restore, from one run's history."""
    step = next(r["time"] for r in records if r["event"] == "step")
    decision = next(r["time"] for r in records if r["event"] == "rollback")
    restored = next(r["time"] for r in records if r["event"] == "restored")
    return {"decided": decision - step, "restored": restored - step, "restore": restored - decision}


def last_run(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    starts = [i for i, r in enumerate(records) if r["event"] == "start"]
    return records[starts[-1]:]


def rollout_and_rollback(h: Any) -> Tuple[Dict[str, Any], Dict[str, float]]:
    h.start_rollout()
    final = h.wait_state("rolled_back", "promoted", "aborted", "failed", timeout=WAIT)
    wait_for(lambda: any(r["event"] == "restored" for r in last_run(history(h.site))), "the restored record", h=h)
    return final, run_times(last_run(history(h.site)))


def test_a_log_flood_neither_leaves_the_reader_behind_nor_delays_the_rollback(rel_harness, capsys):
    h = rel_harness(steps=(10, 100), step_interval="1h", backends="nginx", workers=2,
                    analysis={"window": "5s"}, daemon=False)
    site = h.site
    flood_port = free_port()
    site.stop_nginx()
    text = site.conf.read_text()
    assert 'return 200 "v2\\n";' in text
    site.conf.write_text(text.replace('return 200 "v2\\n";', "return 500;"))
    (site.prefix / "conf.d" / "flood.conf").write_text(FLOOD_CONF.format(port=flood_port))
    site.start_nginx()
    h.originals = site.config_files()
    h.start_daemon()
    h.load(rate=150, duration=60, max_requests=9000)

    # Run 1: no flood.
    quiet_final, quiet = rollout_and_rollback(h)
    assert quiet_final["state"] == "rolled_back", quiet_final["message"]
    size_before = site.access_log.stat().st_size

    # Run 2: the same rollout while ~77 MB/s of log lines pour in. Nothing asks the daemon anything meanwhile
    # (a command wakes its loop for an extra turn, and so an extra read): the history file says what happened.
    flood = Flood(flood_port)
    flood.start()
    try:
        time.sleep(FLOOD_LEAD)
        h.start_rollout()
        while flood.running:
            time.sleep(0.1)
    finally:
        flood.finish()
    # How far behind the daemon is as the flood ends (its answer comes after one more read of at most 16 MiB).
    at_end = h.call("status", name="app")["rollouts"][0]["access_log"]
    assert not flood.errors, flood.errors
    flood_final = h.wait_state("rolled_back", "promoted", "aborted", "failed", timeout=WAIT)
    wait_for(lambda: any(r["event"] == "restored" for r in last_run(history(h.site))), "the restored record", h=h)
    flooded = run_times(last_run(history(h.site)))
    seconds = flood.ended - flood.started
    written = site.access_log.stat().st_size - size_before
    rate = written / seconds
    behind = at_end["backlog_bytes"]

    with capsys.disabled():
        print(f"\nlog flood: {flood.answered} requests of {len(flood.request)} B in {seconds:.1f} s "
              f"({flood.answered / seconds:.0f} req/s), access log +{written / 2**20:.0f} MiB ({rate / 1e6:.1f} MB/s); "
              f"flood errors: {flood.errors or 'none'}")
        print(f"  reader: {behind / 2**20:.1f} MiB unread as the flood ended = {behind / rate:.2f} s of writing; "
              f"skipped {at_end['skipped_bytes'] / 2**20:.1f} MiB in {at_end['skips']} skip(s)")
        for label, times in (("quiet", quiet), ("flood", flooded)):
            print(f"  {label}: first step -> rollback decision {times['decided'] * 1e3:.0f} ms, -> restored "
                  f"{times['restored'] * 1e3:.0f} ms (restore {times['restore'] * 1e3:.0f} ms)")

    assert rate >= 30e6, f"the flood reached only {rate / 1e6:.1f} MB/s: the test says nothing at that rate"
    assert flood_final["state"] == "rolled_back", flood_final["message"]
    assert site.config_files() == h.originals
    # The reader kept up: at most 1 s of writing behind at the end of the flood.
    assert behind <= MAX_BEHIND_SECONDS * rate, at_end
    # A generous bound, as elsewhere in this suite: the flood costs at most a few hundred ms, not seconds.
    assert flooded["restored"] <= quiet["restored"] + 2.0, (quiet, flooded)
    assert flooded["restore"] <= 2.0, flooded
