"""Value syntax on its own: durations as the CLI reads them, and URL problems that keep secrets out of messages.

Each rule is also tested through the YAML in tests/config/test_settings.py.
"""

from __future__ import annotations

import pytest

from nginx_canary.config.syntax import is_host, parse_duration, seconds, url_problem
from nginx_canary.errors import BadInputError


@pytest.mark.parametrize("text, expected", [
    ("250ms", 0.25), ("1.5s", 1.5), ("10s", 10.0), ("5m", 300.0), ("1h", 3600.0), ("7", 7.0), ("720h", 2_592_000.0),
])
def test_good_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("10 seconds", "expected a duration like 250ms, 10s or 5m, got '10 seconds'"),
    ("1h30m", "expected a duration"),
    ("1e3s", "expected a duration"),
    ("0s", "must be greater than 0, got '0s'"),
    ("0.5ms", "durations have millisecond resolution, got '0.5ms'"),
    ("721h", "must be at most 720h (30 days), got '721h'"),
])
def test_bad_duration(text, fragment):
    with pytest.raises(BadInputError) as refused:
        parse_duration(text)
    assert fragment in refused.value.message


def test_seconds_are_shown_shortest():
    assert (seconds(60.0), seconds(2.5)) == ("60s", "2.5s")


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1", True), ("[::1]", True), ("localhost", True), ("a-b.example", True),
    ("[zz]", False), ("999.1.1.1", False), ("1.2.3", False), ("-a.example", False), ("a_b.example", False),
])
def test_is_host(host, ok):
    assert is_host(host) is ok


@pytest.mark.parametrize("url", ["http://a.example/hooks/T0KEN x", "http://u:T0KEN@a.example:99999/x",
                                 "http://a_b.example/T0KEN?k=T0KEN", "http://a.example/T0KEN\u00e9", "http:///T0KEN"])
def test_a_refused_url_is_not_quoted_whole(url):
    # Its path, query or password may be a secret; the error names the key and line instead.
    problem = url_problem(url)
    assert problem is not None and "T0KEN" not in problem, problem
