#!/usr/bin/env python3
"""Log flood (issue #14, item 7): can the daemon's log reader keep up with ~10 KB lines at ~77 MB/s?

A writer process appends access-log lines in the shipped ``canary`` format,
each about ``--line-bytes`` long (a long ``$uri``, as a client sending long
request lines makes nginx write), at ``--mb-per-s`` for ``--seconds``, in
bursts every 10 ms with one ``O_APPEND`` write per line (as nginx does).
The reader is what the daemon runs, in this process's main thread: a
:class:`nginx_canary.logs.live.LogTraffic` on the file (its tailer and
analyzer), polled as the daemon's loop polls it (``poll(now)``, then again at
once while it is ``behind``, else a sleep until ``POLL_EVERY`` after the
start of the turn).

Printed once a second and at the end: the reader's lag (bytes written but
not yet read, and how many seconds of writing that is), what it skipped, the
lines it counted, the reader's CPU seconds. Nothing is asserted.

Usage: ``python3 bench/bench_log_flood.py [--mb-per-s 77] [--line-bytes 10240] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from nginx_canary.daemon.service import POLL_EVERY  # noqa: E402
from nginx_canary.logs.format import CANARY_FORMAT, FormatSpec  # noqa: E402
from nginx_canary.nginx.conf import load_config  # noqa: E402
from nginx_canary.logs.live import MAX_BEHIND, LogTraffic  # noqa: E402

STABLE, CANARY = "127.0.0.1:8081", "127.0.0.1:8082"
NGINX_CONF = f"""\
events {{}}
http {{
    upstream backend {{ server {STABLE}; server {CANARY}; }}
    server {{ listen 127.0.0.1:8080; location / {{ proxy_pass http://backend; }} }}
}}
"""
BURST_EVERY = 0.01


def line(n: int, size: int, at: float) -> bytes:
    """One line of the shipped format, ``size`` bytes long thanks to its ``$uri`` (every 10th to the canary)."""
    addr = CANARY if n % 10 == 0 else STABLE
    values = {"msec": f"{at:.3f}", "upstream_addr": addr, "status": "200", "upstream_status": "200",
              "request_time": "0.001", "upstream_response_time": "0.001", "remote_addr": "127.0.0.1",
              "request_method": "GET", "host": "localhost", "upstream_connect_time": "0.000",
              "request_id": f"{n:032x}", "proxy_host": "backend", "uri": "/{URI}"}
    names = [v.lstrip("$") for v in CANARY_FORMAT.split("\t")]
    text = "\t".join(values.get(name, "-") for name in names) + "\n"
    return text.replace("{URI}", "a" * max(0, size - len(text) + len("{URI}"))).encode()


def writer(path: str, rate: float, size: int, seconds: float, ready: Any, done: Any) -> None:
    """Append lines at ``rate`` bytes/s for ``seconds``; put (lines, bytes, elapsed) into ``done``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    template = line(0, size, time.time())
    ready.wait()
    start = time.monotonic()
    written = lines = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(rate * min(elapsed + BURST_EVERY, seconds))
        while written < due:
            data = template if lines % 10 else line(lines, size, time.time())
            os.write(fd, data)
            written += len(data)
            lines += 1
        time.sleep(max(0.0, start + elapsed + BURST_EVERY - time.monotonic()))
    os.close(fd)
    done.put((lines, written, time.monotonic() - start))


def run(args: argparse.Namespace, baseline: bool = False) -> Dict[str, Any]:
    """One flood; ``baseline`` reads as the daemon did before issue #14 (one bite per turn, never skipping)."""
    with tempfile.TemporaryDirectory(prefix="nc-flood-") as tmp:
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as fh:
            fh.write(NGINX_CONF)
        log_path = os.path.join(tmp, "access.log")
        open(log_path, "wb").close()
        config = load_config(conf, logs=False)
        traffic = LogTraffic(config, "backend", [CANARY], log_path, FormatSpec("canary", CANARY_FORMAT, "default"),
                             watch_writes=False, max_behind=1e9 if baseline else MAX_BEHIND)
        rate = args.mb_per_s * 1e6
        ctx = multiprocessing.get_context("fork")
        ready, done = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=writer, args=(log_path, rate, args.line_bytes, args.seconds, ready, done))
        proc.start()
        cpu0 = time.process_time()
        start = time.monotonic()
        ready.set()
        worst = 0
        next_print = start + 1.0
        result: Any = None
        try:
            while True:
                turn = time.monotonic()
                traffic.poll(time.time())
                size = os.stat(log_path).st_size
                lag = size - traffic.tailer.position
                worst = max(worst, lag)
                if turn >= next_print:
                    next_print += 1.0
                    print(f"  t={turn - start:5.1f} s  lag {lag / 2**20:7.1f} MiB ({lag / rate:5.2f} s of writing)"
                          f"  skipped {traffic.skipped_bytes / 2**20:7.1f} MiB  lines {traffic.analyzer.lines}",
                          flush=True)
                if result is None and not done.empty():
                    result = done.get()
                if result is not None and lag == 0:
                    break
                if time.monotonic() - start > args.seconds + 60:
                    print("  gave up: the reader is still behind 60 s after the writer stopped")
                    break
                if baseline or not traffic.behind:  # the daemon's loop now reads again at once while behind
                    time.sleep(max(0.0, turn + POLL_EVERY - time.monotonic()))
        finally:
            proc.join(30)
            traffic.close()
        caught_up = time.monotonic() - start
        cpu = time.process_time() - cpu0
        lines, written, took = result if result is not None else (0, os.path.getsize(log_path), args.seconds)
        return {"written_mib": written / 2**20, "lines": lines, "rate_mb_s": written / took / 1e6,
                "worst_lag_mib": worst / 2**20, "worst_lag_s": worst / max(written / took, 1.0), "caught_up_s": caught_up - took,
                "skipped_mib": traffic.skipped_bytes / 2**20, "skips": traffic.skips,
                "counted": traffic.analyzer.lines, "cpu_s": cpu, "writer_s": took}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb-per-s", type=float, default=77.0)
    p.add_argument("--line-bytes", type=int, default=10240)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    print(f"log flood: {args.line_bytes} B lines at {args.mb_per_s:g} MB/s for {args.seconds:g} s; "
          f"reader polled every {POLL_EVERY * 1e3:.0f} ms as in the daemon")
    for label, baseline in (("baseline: one 16 MiB bite per 250 ms turn (before issue #14)", True),
                            ("now: back-to-back bites while behind, skip after 1 s", False)):
        print(label)
        report(run(args, baseline))


def report(r: Dict[str, Any]) -> None:
    print(f"written {r['written_mib']:.0f} MiB, {r['lines']} lines at {r['rate_mb_s']:.1f} MB/s over "
          f"{r['writer_s']:.1f} s")
    print(f"reader: worst lag {r['worst_lag_mib']:.1f} MiB = {r['worst_lag_s']:.2f} s of writing; caught up "
          f"{r['caught_up_s']:.2f} s after the writer stopped; skipped {r['skipped_mib']:.1f} MiB in {r['skips']} "
          f"skip(s); counted {r['counted']} lines; reader CPU {r['cpu_s']:.1f} s "
          f"({r['cpu_s'] / max(r['writer_s'], 1e-9) * 100:.0f} % of one core while writing)")


if __name__ == "__main__":
    main()
