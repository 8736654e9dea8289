"""A log that mostly fails to parse is said so, with a sample line; a few bad lines among good ones are not."""

from __future__ import annotations

import pytest

from nginx_canary.integrations.webhooks import public_event
from nginx_canary.logs.format import FormatSpec, compile_format
from nginx_canary.logs.health import MIN_UNPARSED, RECENT_LINES, UnparsedWatch, describe, find_sample, mostly_unparsed
from nginx_canary.logs.live import LogTraffic
from nginx_canary.nginx.conf import load_config
from tests.logs.test_live import FLOOD_FORMAT, NGINX_CONF, flood_line


@pytest.mark.parametrize("lines, unparsed, expected", [
    (0, 0, False),
    (3, 3, False),  # fewer than MIN_UNPARSED: a cut line or two at a rotation
    (MIN_UNPARSED, MIN_UNPARSED, True),
    (3000, 3000, True),
    (1000, 500, False),  # half is not more than half
    (1000, 501, True),
    (100_000, 40, False),
])
def test_the_rule(lines: int, unparsed: int, expected: bool) -> None:
    assert mostly_unparsed(lines, unparsed) is expected


def test_the_watch_judges_recent_reads_only() -> None:
    watch = UnparsedWatch()
    watch.add(50, 50)
    assert watch.mostly_unparsed()
    watch.add(RECENT_LINES, 0)  # the log was fixed: enough good lines push the bad read out
    assert watch.counts() == (RECENT_LINES, 0) and not watch.mostly_unparsed()
    watch.add(5, 5)
    assert not watch.mostly_unparsed()
    watch.reset()
    assert watch.counts() == (0, 0) and watch.sample is None


def test_the_watch_keeps_a_sample_and_gives_the_reason() -> None:
    fmt = compile_format(FormatSpec("flood", FLOOD_FORMAT, "default"))
    watch = UnparsedWatch()
    watch.read(3, 0, fmt, [flood_line(1), flood_line(2), flood_line(3)])
    assert watch.sample is None and watch.reason("flood", "f") is None
    watch.read(MIN_UNPARSED, MIN_UNPARSED, fmt, [b"junk 1\n"] * MIN_UNPARSED)
    watch.read(MIN_UNPARSED, MIN_UNPARSED, fmt, [b"junk 2\n"] * MIN_UNPARSED)
    assert watch.sample == b"junk 1\n"
    assert watch.reason("flood", "f") == describe(2 * MIN_UNPARSED, 3 + 2 * MIN_UNPARSED, "flood", "f", b"junk 1\n")


def test_the_reason_shows_one_line_printably() -> None:
    fmt = compile_format(FormatSpec("flood", FLOOD_FORMAT, "default"))
    sample = find_sample(fmt, [flood_line(1), b"GET /\x1b[31m\tx\n", flood_line(2)])
    assert sample == b"GET /\x1b[31m\tx\n"
    reason = describe(12, 20, "flood", "access log /x.log", sample)
    assert reason == ("12 of 20 lines of access log /x.log do not fit log format 'flood' "
                      "(e.g. 'GET /\\x1b[31m\\x09x'); check that the access_log writes this format")
    long = describe(12, 20, "flood", "f", b"y" * 1000)
    assert "'" + "y" * 160 + "...'" in long
    assert "none nginx writes" in describe(12, 20, "flood", "f", None)


@pytest.fixture
def traffic(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF)
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    with LogTraffic(load_config(str(conf), logs=False), "backend", ["127.0.0.1:8082"], str(log),
                    FormatSpec("flood", FLOOD_FORMAT, "default"), watch=False) as t:
        yield t, log


def write(log, data: bytes) -> None:
    with open(log, "ab") as fh:
        fh.write(data)


def test_a_cut_line_among_good_ones_is_no_trouble(traffic) -> None:
    t, log = traffic
    write(log, b"".join(flood_line(n) for n in range(100)) + flood_line(100)[:40] + b"\n")
    t.poll(1000.0)
    assert t.analyzer.unparsed == 1 and t.unparsed_reason() is None


def test_lines_in_another_format_are_reported_once_with_a_sample(traffic) -> None:
    t, log = traffic
    t.begin_step(999.0)
    write(log, b"".join(flood_line(n) for n in range(5)))
    write(log, b"".join(b'10.0.0.1 - - [x] "GET /%d HTTP/1.1" 200 5\n' % n for n in range(30)))
    t.poll(1000.0)
    reason = t.unparsed_reason()
    assert reason is not None and reason.startswith("30 of 35 lines of access log ")
    assert "e.g. '10.0.0.1 - - [x] \"GET /0 HTTP/1.1\" 200 5'" in reason
    assert t.unparsed_reason() is None  # counting starts again
    write(log, b"".join(b"junk %d\n" % n for n in range(MIN_UNPARSED)))
    t.poll(1001.0)
    assert t.unparsed_reason() is not None
    write(log, b"".join(b"junk %d\n" % n for n in range(MIN_UNPARSED)))
    t.poll(1002.0)
    t.begin_step(1002.0)  # a new step: judged on its own lines
    assert t.unparsed_reason() is None


def test_webhooks_announce_it_as_a_pause() -> None:
    assert public_event("log_unparsed", {"state": "paused"}) == "paused"
