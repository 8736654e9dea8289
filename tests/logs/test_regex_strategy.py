"""The "regex" strategy: first-fit full-line patterns, with a bounded backtracking retry."""

from __future__ import annotations

from nginx_canary.logs.format import COMBINED
from nginx_canary.logs.regex_strategy import RegexStrategy
from nginx_canary.logs.syntax import pattern_segments
from tests.logs.test_format import COMBINED_LINE, compiled


def test_regex_strategy_extracts_by_name_and_counts_misfits() -> None:
    strategy = RegexStrategy(pattern_segments('$host "$request" $status'), "default")
    lines = [b'a "GET / HTTP/1.1" 200\n', b"junk", b'b "x" 404\r\n']
    assert strategy.extract(lines, ["status", "host"]) == ([(b"200", b"a"), (b"404", b"b")], 1)
    assert strategy.extract(lines, []) == ([(), ()], 1)


def test_ambiguous_value_falls_back_to_backtracking() -> None:
    fmt = compiled(COMBINED)
    # a user name holding the text that follows it (" [") defeats first-fit
    line = COMBINED_LINE.replace(b"- - [", b"- bob [x] [", 1)
    assert fmt.parse(line)["remote_user"] == "bob [x]"  # type: ignore[index]
    # escape=none leaves quotes inside values
    raw = compiled('"$request" $status "$http_user_agent"', "none")
    assert raw.parse(b'"GET /a" b HTTP/1.1" 200 "x"') == {
        "request": 'GET /a" b HTTP/1.1', "status": "200", "http_user_agent": "x"}


def test_retries_in_a_space_separated_format_split_at_the_right_place() -> None:
    """'502, 200' followed by a space must not be cut after '502,' (found by bench/bench_analyze.py)."""
    fmt = compiled(COMBINED + ' "$upstream_addr" $upstream_status $upstream_response_time')
    base = b'1.2.3.4 - - [28/Nov/2024:03:20:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8.5.0" '
    got = fmt.parse(base + b'"10.0.0.12:8080, 10.0.0.11:8080" 502, 200 0.012, 0.034')
    assert (got["upstream_status"], got["upstream_response_time"]) == ("502, 200", "0.012, 0.034")
    got = fmt.parse(base + b'"a:1 : b:2" 404 : 200 0.001 : 0.002')
    assert (got["upstream_status"], got["upstream_response_time"]) == ("404 : 200", "0.001 : 0.002")
    assert fmt.parse(base + b'"-" - -')["upstream_status"] == "-"
    rows, bad = fmt.extract([base + b'"x:1, y:2" 502, 200 0.012, 0.034'], ["upstream_status", "upstream_response_time"])
    assert (rows, bad) == ([(b"502, 200", b"0.012, 0.034")], 0)
