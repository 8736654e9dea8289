"""Live canary/stable figures from a real nginx's access log."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

from nginx_canary.logs.sources import named_format
from nginx_canary.nginx.conf import load_config
from nginx_canary.logs.live import LogTraffic
from tests.rollout.test_applier import applier_for

SNIPPET = Path(__file__).resolve().parents[2] / "conf.d" / "nginx-canary-log-format.conf"


def test_groups_count_what_nginx_served(nginx_stopped):
    (nginx_stopped.prefix / "conf.d" / "00-canary-log.conf").write_text(
        f"include {SNIPPET};\naccess_log logs/canary.log canary;\n")
    nginx_stopped.start()
    nginx = nginx_stopped
    applier_for(nginx).apply(Fraction(25))
    config = load_config(str(nginx.conf))
    log = nginx.prefix / "logs" / "canary.log"
    with LogTraffic(config, "backend", [nginx.v2], str(log), named_format(config, "canary"), watch=False) as traffic:
        served = nginx.count_versions(200)
        seen, deadline = 0, time.monotonic() + 10
        # 400 lines: the backends are servers of the same nginx, and log too (with no upstream).
        while seen < 400 and time.monotonic() < deadline:
            seen += traffic.poll(1000.0)
            time.sleep(0.02)
        canary, stable = traffic.groups(30.0, 1000.0)
    assert (canary.requests, stable.requests) == (served.get("v2", 0), served.get("v1", 0))
    assert canary.requests + stable.requests == 200
    assert canary.errors_5xx == stable.errors_5xx == 0
    assert canary.latency.count == canary.requests



def read_all(traffic: LogTraffic, requests: int) -> None:
    """Poll (at the wall clock, as the daemon does) until the lines of ``requests`` more requests are read.

    Two lines per request: the backends are servers of the same nginx, and log too (with no upstream).
    """
    lines, seen, deadline = 2 * requests, 0, time.monotonic() + 10
    while seen < lines and time.monotonic() < deadline:
        seen += traffic.poll(time.time())
        time.sleep(0.01)
    assert seen == lines


def test_evidence_counts_the_requests_that_ended_after_begin_step_as_soon_as_they_are_read(nginx_stopped):
    (nginx_stopped.prefix / "conf.d" / "00-canary-log.conf").write_text(
        f"include {SNIPPET};\naccess_log logs/canary.log canary;\n")
    nginx_stopped.start()
    nginx = nginx_stopped
    applier_for(nginx).apply(Fraction(50))
    config = load_config(str(nginx.conf))
    log = nginx.prefix / "logs" / "canary.log"
    with LogTraffic(config, "backend", [nginx.v2], str(log), named_format(config, "canary"), watch=False) as traffic:
        assert traffic.evidence(time.time())[0].requests == 0  # no step yet
        nginx.count_versions(20)
        read_all(traffic, 20)
        # This burst is logged but not read when the step begins: its $msec, not the read time, leaves it out.
        nginx.count_versions(20)
        traffic.begin_step(time.time())
        time.sleep(0.01)  # $msec has milliseconds: the next requests end in a later one
        second = nginx.count_versions(30)
        read_all(traffic, 50)
        canary, stable = traffic.evidence(time.time())
        assert (canary.requests, stable.requests) == (second.get("v2", 0), second.get("v1", 0))
        assert canary.requests > 0 and stable.requests > 0 and canary.errors_5xx == stable.errors_5xx == 0
        assert canary.latency.count == canary.requests
        # Read in a later poll, wholly after the mark; then a step whose requests are all still to come.
        third = nginx.count_versions(10)
        read_all(traffic, 10)
        canary, stable = traffic.evidence(time.time())
        assert canary.requests + stable.requests == 40 and canary.requests == second.get("v2", 0) + third.get("v2", 0)
        nginx.count_versions(10)
        traffic.begin_step(time.time())
        read_all(traffic, 10)
        assert [s.requests for s in traffic.evidence(time.time())] == [0, 0]
        # The window goes by the read time, as before: every request read.
        canary, stable = traffic.groups(30.0, time.time())
        assert canary.requests + stable.requests == 90


NGINX_CONF = """\
events {}
http {
    upstream backend { server 127.0.0.1:8081; server 127.0.0.1:8082; }
    server { listen 127.0.0.1:8080; location / { proxy_pass http://backend; } }
}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


#: The canary format as of this test (the shipped one may gain fields; this test is about reading, not the format).
FLOOD_FORMAT = ("$msec\t$upstream_addr\t$status\t$upstream_status\t$request_time\t$upstream_response_time\t"
                "$remote_addr\t$request_method\t$host\t$uri\t$upstream_connect_time\t$request_id")


def flood_line(n: int) -> bytes:
    return (f"{1000 + n / 1000:.3f}\t127.0.0.1:808{1 + n % 2}\t200\t200\t0.001\t0.001\t127.0.0.1\tGET\tlocalhost\t/"
            + "u" * 200 + f"\t0.000\t{n:032x}\n").encode()


def test_a_reader_behind_for_longer_than_max_behind_skips_to_the_end_and_says_so(tmp_path, caplog):
    from nginx_canary.logs.format import FormatSpec

    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF)
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    clock = Clock()
    with LogTraffic(load_config(str(conf), logs=False), "backend", ["127.0.0.1:8082"], str(log),
                    FormatSpec("flood", FLOOD_FORMAT, "default"), watch=False, read_per_poll=4096, max_behind=1.0,
                    clock=clock) as traffic:
        with open(log, "ab") as fh:
            fh.write(b"".join(flood_line(n) for n in range(1000)))
        size = log.stat().st_size
        read = traffic.poll(1000.0)
        assert read > 0 and traffic.behind and traffic.skips == 0
        clock.now += 0.9
        read += traffic.poll(1000.0)
        assert traffic.behind and traffic.skips == 0  # behind for 0.9 s: reading on
        clock.now += 0.2
        read += traffic.poll(1000.0)
        assert traffic.skips == 1 and not traffic.behind
        assert traffic.reading() == {"backlog_bytes": 0, "skipped_bytes": traffic.skipped_bytes, "skips": 1}
        assert traffic.skipped_bytes + traffic.tailer.bytes_read == size
        assert traffic.analyzer.lines == read and traffic.analyzer.unparsed == 0
        assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
            f"access log {log}: skipped {traffic.skipped_bytes / 2**20:.1f} MiB of it: the reader fell behind (still "
            "1 s after it started reading back to back); figures go on from its end"]
        # Caught up: the next lines are read, and a reader that keeps up never skips.
        with open(log, "ab") as fh:
            fh.write(flood_line(1))
        clock.now += 5
        assert traffic.poll(1001.0) == 1 and not traffic.behind and traffic.skips == 1


FORCING_CONF = """\
events {}
http {
    upstream backend { server 127.0.0.1:8081; server 127.0.0.1:8082; }
    upstream backend_canary { server 127.0.0.1:8082; }
    upstream other { server 127.0.0.1:9000; }
    server { listen 127.0.0.1:8080; location / { proxy_pass http://backend; } }
}
"""


def test_a_format_that_cannot_tell_forced_requests_is_warned_about(tmp_path, caplog):
    from nginx_canary.logs.format import CANARY_FORMAT, FormatSpec

    conf = tmp_path / "nginx.conf"
    conf.write_text(FORCING_CONF)
    log = tmp_path / "access.log"
    log.write_text("")
    config = load_config(str(conf), logs=False)
    with caplog.at_level("WARNING", logger="nginx_canary"):
        with LogTraffic(config, "backend", ["127.0.0.1:8082"], str(log), FormatSpec("old", FLOOD_FORMAT, "default"),
                        watch=False):
            pass
    warned = [r.getMessage() for r in caplog.records if "$proxy_host" in r.getMessage()]
    assert warned == ["upstream backend: upstream backend_canary also reaches canary 127.0.0.1:8082, and the log "
                      "format has no $proxy_host: requests forced through it count as canary traffic (log "
                      "$proxy_host, as the shipped canary format does)"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="nginx_canary"):
        with LogTraffic(config, "backend", ["127.0.0.1:8082"], str(log), FormatSpec("canary", CANARY_FORMAT, "default"),
                        watch=False):
            pass
    assert not [r for r in caplog.records if "$proxy_host" in r.getMessage()]
