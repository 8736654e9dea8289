"""A bounded load generator for loopback URLs: status classes, versions and latency as the client sees them.

``run_load`` starts ``concurrency`` worker threads, each with one persistent
HTTP/1.1 connection (``http.client``). Requests follow a fixed schedule
(request ``i`` is due ``i / rate`` seconds after the start; ``rate=0`` sends as
fast as the workers can), and every run ends at the first of: ``max_requests``
requests sent, ``duration`` seconds elapsed, or ``stop_event`` set. When all
workers are busy the schedule falls behind and they catch up without pausing,
so the achieved rate is capped by ``concurrency / latency``.

A request that fails on a reused keep-alive connection before any answer
arrives (the server closed the idle connection) is retried once on a new one;
every other failure counts as a socket error, by exception type. The version of
an answer is its ``X-Version`` header or, failing that, the body of a short 2xx
answer (so ``return 200 "v1"`` backends count too).

Only loopback URLs are accepted: this is for demos and tests, not for loading
other people's hosts.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import math
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

MAX_CONCURRENCY = 256
MAX_BODY = 1024 * 1024  # a longer answer is read up to here, then its connection dropped
MAX_VERSION_KEYS = 32  # distinct versions counted; the rest go to OTHER_VERSION
MAX_BODY_VERSION = 64  # a 2xx body up to this long (stripped) names the version when there is no header
UNKNOWN_VERSION = "(unknown)"
OTHER_VERSION = "(other)"
_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _is_loopback_host(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if host.lower().rstrip(".") != "localhost":
            return False
        # A name is only as loopback as what it resolves to.
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return False
        return bool(infos) and all(_is_loopback_host(str(info[4][0])) for info in infos)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def parse_loopback_url(url: str) -> Tuple[str, int, str]:
    """``(host, port, request target)`` of an ``http://`` URL on 127.0.0.0/8, ::1 or localhost.

    Raises ValueError for another scheme, a missing or non-loopback host, or a bad port.
    """
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, not {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    if not _is_loopback_host(host):
        raise ValueError(f"refusing non-loopback host {host!r}: the load generator only targets "
                         "127.0.0.0/8, ::1 or localhost")
    try:
        port = parts.port or 80
    except ValueError as exc:  # urlsplit validates the port lazily
        raise ValueError(f"bad port in {url!r}: {exc}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, target


@dataclass
class LoadResult:
    """What one run saw. Latencies (seconds, sorted) cover every answer, whatever its status."""

    url: str
    requests: int = 0
    responses: int = 0
    status_2xx: int = 0
    status_3xx: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    status_other: int = 0
    socket_errors: int = 0
    error_kinds: Dict[str, int] = field(default_factory=dict)
    statuses: Dict[int, int] = field(default_factory=dict)
    versions: Dict[str, int] = field(default_factory=dict)
    versions_5xx: Dict[str, int] = field(default_factory=dict)
    retries: int = 0
    connections: int = 0
    elapsed: float = 0.0
    stopped_by: str = ""
    stragglers: int = 0
    latencies: List[float] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float:
        """Answers per second over the whole run."""
        return self.responses / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, q: float) -> Optional[float]:
        """Latency at quantile ``q`` (0..1, nearest rank), or None without answers. Raises ValueError for q out of range."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be between 0 and 1, not {q!r}")
        if not self.latencies:
            return None
        return self.latencies[max(0, math.ceil(q * len(self.latencies)) - 1)]

    def share(self, version: str) -> float:
        """Share of answers that came from ``version`` (0.0 without answers)."""
        return self.versions.get(version, 0) / self.responses if self.responses else 0.0

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: every counter plus p50/p90/p99/max latency in seconds instead of the raw list."""
        out = asdict(self)
        del out["latencies"]
        out["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        out["rate"] = round(self.rate, 1)
        out["latency"] = {name: self.percentile(q) for name, q in
                          (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))}
        return out

    def summary(self) -> str:
        def counts(d: Mapping[str, int]) -> str:
            if not d:
                return "-"
            return "  ".join(f"{k} {v} ({100.0 * v / max(1, self.responses):.1f}%)" for k, v in sorted(d.items()))

        def ms(q: float) -> str:
            value = self.percentile(q)
            return "-" if value is None else f"{value * 1000:.1f}"

        lines = [
            f"{self.url}: {self.requests} requests, {self.responses} answers in {self.elapsed:.2f}s "
            f"({self.rate:.1f} req/s), stopped by {self.stopped_by}",
            f"  status: 2xx {self.status_2xx}  3xx {self.status_3xx}  4xx {self.status_4xx}  "
            f"5xx {self.status_5xx}  other {self.status_other}  socket errors {self.socket_errors}"
            + (f" ({', '.join(f'{k} {v}' for k, v in sorted(self.error_kinds.items()))})" if self.error_kinds else ""),
            f"  versions: {counts(self.versions)}",
            f"  5xx by version: {counts(self.versions_5xx)}",
            f"  latency ms: p50 {ms(0.5)}  p90 {ms(0.9)}  p99 {ms(0.99)}  max {ms(1.0)}",
            f"  connections {self.connections}, keep-alive retries {self.retries}"
            + (f", {self.stragglers} workers still busy at the deadline" if self.stragglers else ""),
        ]
        return "\n".join(lines)


class _Schedule:
    """Hands out request slots until the count, the time or the stop event says no."""

    def __init__(self, rate: float, duration: float, max_requests: int, stop_event: threading.Event) -> None:
        self._lock = threading.Lock()
        self._rate = rate
        self._max = max_requests
        self._stop = stop_event
        self.start = time.monotonic()
        self.end = self.start + duration
        self._issued = 0
        self.reason = ""

    def take(self) -> Optional[float]:
        """The monotonic time the next request is due, or None when the run is over."""
        with self._lock:
            if not self.reason:
                now = time.monotonic()
                due = self.start + self._issued / self._rate if self._rate else now
                if self._stop.is_set():
                    self.reason = "stop_event"
                elif self._issued >= self._max:
                    self.reason = "max_requests"
                elif now >= self.end or due >= self.end:
                    self.reason = "duration"
                else:
                    self._issued += 1
                    return due
            return None

    def halt(self, reason: str) -> None:
        with self._lock:
            self.reason = self.reason or reason


class _Worker:
    """One thread, one keep-alive connection, its own tally (merged after the run, so no locks)."""

    def __init__(self, host: str, port: int, target: str, headers: Mapping[str, str], timeout: float,
                 schedule: _Schedule, stop_event: threading.Event) -> None:
        self.host, self.port, self.target = host, port, target
        self.headers = dict(headers)
        self.timeout = timeout
        self.schedule = schedule
        self.stop_event = stop_event
        self.conn: Optional[http.client.HTTPConnection] = None
        self.result = LoadResult("")
        self.done = False

    def run(self) -> None:
        try:
            while True:
                due = self.schedule.take()
                if due is None:
                    break
                delay = due - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    self.schedule.halt("stop_event")
                    break
                self._one()
        finally:
            self._close()
            self.done = True

    def _one(self) -> None:
        r = self.result
        r.requests += 1
        started = time.perf_counter()
        try:
            status, version = self._exchange()
        except (OSError, http.client.HTTPException) as exc:
            self._close()
            r.socket_errors += 1
            kind = type(exc).__name__
            r.error_kinds[kind] = r.error_kinds.get(kind, 0) + 1
            return
        r.latencies.append(time.perf_counter() - started)
        r.responses += 1
        r.statuses[status] = r.statuses.get(status, 0) + 1
        klass = status // 100
        if klass == 2:
            r.status_2xx += 1
        elif klass == 3:
            r.status_3xx += 1
        elif klass == 4:
            r.status_4xx += 1
        elif klass == 5:
            r.status_5xx += 1
        else:
            r.status_other += 1
        _bump(r.versions, version)
        if klass == 5:
            _bump(r.versions_5xx, version)

    def _exchange(self) -> Tuple[int, str]:
        retried = False
        while True:
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.result.connections += 1
            try:
                self.conn.request("GET", self.target, headers=self.headers)
                resp = self.conn.getresponse()
                body = resp.read(MAX_BODY + 1)
            except _RETRYABLE:
                self._close()
                if reused and not retried:  # the server dropped an idle keep-alive connection
                    retried = True
                    self.result.retries += 1
                    continue
                raise
            if len(body) > MAX_BODY or resp.will_close or not resp.isclosed():
                self._close()
            return resp.status, _version_of(resp, body)

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _version_of(resp: http.client.HTTPResponse, body: bytes) -> str:
    header = resp.getheader("X-Version")
    if header:
        return header.strip()[:MAX_BODY_VERSION]
    if 200 <= resp.status < 300:
        text = body.strip()
        if 0 < len(text) <= MAX_BODY_VERSION:
            return text.decode("utf-8", "replace")
    return UNKNOWN_VERSION


def _bump(counts: Dict[str, int], key: str) -> None:
    if key not in counts and len(counts) >= MAX_VERSION_KEYS:
        key = OTHER_VERSION
    counts[key] = counts.get(key, 0) + 1


def _merge(into: LoadResult, part: LoadResult) -> None:
    for name in ("requests", "responses", "status_2xx", "status_3xx", "status_4xx", "status_5xx",
                 "status_other", "socket_errors", "retries", "connections"):
        setattr(into, name, getattr(into, name) + getattr(part, name))
    for mine, theirs in ((into.error_kinds, part.error_kinds), (into.statuses, part.statuses)):
        for key, n in theirs.items():
            mine[key] = mine.get(key, 0) + n
    for mine, theirs in ((into.versions, part.versions), (into.versions_5xx, part.versions_5xx)):
        for key, n in theirs.items():
            if key not in mine and len(mine) >= MAX_VERSION_KEYS:
                key = OTHER_VERSION
            mine[key] = mine.get(key, 0) + n
    into.latencies.extend(part.latencies)


def _check_number(name: str, value: float, low: float, inclusive_low: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or (value == low and not inclusive_low):
        raise ValueError(f"{name} must be a finite number {'>=' if inclusive_low else '>'} {low:g}, not {value!r}")


def run_load(url: str, rate: float = 0.0, duration: float = 10.0, max_requests: int = 10_000,
             concurrency: int = 4, timeout: float = 5.0, stop_event: Optional[threading.Event] = None,
             headers: Optional[Mapping[str, str]] = None) -> LoadResult:
    """Send GET ``url`` at ``rate`` req/s (0 = flat out) until ``max_requests``, ``duration`` or ``stop_event``.

    ``timeout`` bounds each socket operation. The call returns at the latest
    ``duration + 2 * timeout + 5`` seconds after it starts; workers still busy
    then are abandoned (daemon threads) and counted in ``stragglers``, their
    tallies left out. Raises ValueError for a non-loopback URL or a bad argument.
    """
    host, port, target = parse_loopback_url(url)
    _check_number("rate", rate, 0.0, True)
    _check_number("duration", duration, 0.0, False)
    _check_number("timeout", timeout, 0.0, False)
    if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1:
        raise ValueError(f"max_requests must be an integer >= 1, not {max_requests!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be an integer from 1 to {MAX_CONCURRENCY}, not {concurrency!r}")
    stop = stop_event if stop_event is not None else threading.Event()
    schedule = _Schedule(rate, duration, max_requests, stop)
    workers = [_Worker(host, port, target, headers or {}, timeout, schedule, stop)
               for _ in range(min(concurrency, max_requests))]
    threads = [threading.Thread(target=w.run, name=f"load-{i}", daemon=True) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    deadline = schedule.start + duration + 2 * timeout + 5.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    schedule.halt("deadline")  # stops stragglers from taking new slots
    result = LoadResult(url, elapsed=time.monotonic() - schedule.start, stopped_by=schedule.reason)
    for worker in workers:
        if worker.done:
            _merge(result, worker.result)
        else:
            result.stragglers += 1
    result.latencies.sort()
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """Run one load and print its summary; 0 when it ran, 2 for bad arguments. SIGINT/SIGTERM stop early."""
    p = argparse.ArgumentParser(prog="python -m nginx_canary.demo.load",
                                description="Bounded HTTP load against a loopback URL.")
    p.add_argument("url", help="http:// URL on 127.0.0.0/8, ::1 or localhost")
    p.add_argument("--rate", type=float, default=0.0, help="requests per second; 0 = as fast as possible")
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default: %(default)s)")
    p.add_argument("--max-requests", type=int, default=100_000, help="request cap (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=4, help="worker connections (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=5.0, help="per socket operation, seconds")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="extra request header")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    headers: Dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            p.error(f"--header needs NAME:VALUE, not {item!r}")
        headers[name.strip()] = value.strip()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        result = run_load(args.url, args.rate, args.duration, args.max_requests, args.concurrency,
                          args.timeout, stop_event=stop, headers=headers)
    except ValueError as exc:
        p.error(str(exc))
    print(json.dumps(result.to_dict(), indent=2, sort_keys=True) if args.json else result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
