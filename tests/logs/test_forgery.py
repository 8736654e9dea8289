"""The forgery check of log formats: refused formats are fooled by a client, passed formats are not.

Every verdict is checked against the parser itself: for a format and a
client-controlled variable, the test builds the values a client would send to
forge each field the analysis reads (every cut of the format's text after the
variable, with forged values in it), escapes them as nginx would, and parses
the lines. A format :func:`check_format` passes must never give a forged value;
the formats the issue reports (a space-separated format with
``$http_user_agent`` before the upstream fields, an ``escape=none`` JSON one)
must be refused with one line naming the variable.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nginx_canary.errors import LogFormatError
from nginx_canary.logs.format import (
    CANARY_FORMAT,
    COMBINED,
    CompiledFormat,
    FormatSpec,
    compile_format,
    upstream_fields,
)
from nginx_canary.logs.forgery import check_format, client_bytes, find_forgeries
from tests.logs.test_format import nginx_escape

REAL: Dict[str, str] = {
    "msec": "1732764000.123", "upstream_addr": "10.0.0.1:80", "status": "200", "upstream_status": "200",
    "request_time": "0.004", "upstream_response_time": "0.004", "remote_addr": "192.0.2.1",
    "request": "GET / HTTP/1.1", "request_method": "GET", "host": "example.com", "uri": "/",
    "time_local": "28/Nov/2024:03:20:00 +0000", "time_iso8601": "2024-11-28T03:20:00+00:00", "request_id": "ab12",
    "body_bytes_sent": "612", "upstream_connect_time": "0.001", "proxy_host": "backend", "remote_user": "-",
}
FORGED: Dict[str, str] = {
    "msec": "1.5", "upstream_addr": "10.0.0.2:80", "status": "599", "upstream_status": "599",
    "request_time": "7.777", "upstream_response_time": "7.777", "proxy_host": "forged",
    "time_local": "01/Jan/2001:00:00:00 +0000", "time_iso8601": "2001-01-01T00:00:00+00:00",
}
CLIENT_VARS = ["http_user_agent", "http_referer", "request_uri", "uri", "args", "host", "request_method",
               "remote_user", "cookie_session", "request"]
FIELDS = ["msec", "upstream_addr", "status", "upstream_status", "request_time", "upstream_response_time",
          "proxy_host", "time_local"]
OTHER = ["remote_addr", "request_id", "body_bytes_sent", "upstream_connect_time"]
SEPARATORS = [" ", "\t", "|", " - ", '" "', '","', ";", ", "]


def compiled(pattern: str, escape: str = "default") -> CompiledFormat:
    return compile_format(FormatSpec("t", pattern, escape))


def render(compiled_format: CompiledFormat, values: Dict[str, bytes]) -> bytes:
    return b"".join(s if isinstance(s, bytes) else values[s] for s in compiled_format.segments)


def attacks(fmt: CompiledFormat, variable: str) -> List[bytes]:
    """What a client sets ``variable`` to, trying to forge a field: every cut of the text after it, forged."""
    segments = fmt.segments
    k = segments.index(variable)
    out = []
    for cut in range(k + 1, len(segments) + 1):
        text = b"q"
        for seg in segments[k + 1:cut]:
            text += seg if isinstance(seg, bytes) else FORGED.get(seg, REAL.get(seg, "x")).encode()
        out.append(text)
    return out


def fooled(fmt: CompiledFormat, variable: str) -> Optional[Tuple[bytes, str]]:
    """A client value of ``variable`` that makes the parser read a forged field, and that field; else None."""
    escape = fmt.spec.escape
    allowed = client_bytes(variable)
    assert allowed is not None
    targets = upstream_fields(fmt).read()
    for attack in attacks(fmt, variable):
        if not set(attack) <= allowed:
            continue  # nginx refuses the request (400) or cannot carry the byte
        values = {v: nginx_escape(REAL.get(v, "x").encode(), escape) for v in fmt.variables}
        values[variable] = nginx_escape(attack, escape)
        for line in render(fmt, values).split(b"\n"):
            parsed = fmt.parse(line)
            if parsed is None:
                continue
            for target in targets:
                if target in FORGED and parsed[target] == FORGED[target]:
                    return attack, target
    return None


# --- the issue's formats, and the usual ones ---


ISSUE_SPACES = "$remote_addr $http_user_agent $upstream_addr $upstream_status $upstream_response_time"
ISSUE_JSON = ('{"time":"$msec","ua":"$http_user_agent","upstream":"$upstream_addr","status":"$upstream_status",'
              '"rt":"$upstream_response_time","referer":"$http_referer"}')


@pytest.mark.parametrize("pattern, escape, variable", [
    (ISSUE_SPACES, "default", "http_user_agent"),
    (ISSUE_JSON, "none", "http_user_agent"),
    ("$uri $upstream_addr $upstream_status $upstream_response_time", "default", "uri"),
    ("$http_x|$upstream_addr|$upstream_status|$request_time|$http_y", "default", "http_x"),
])
def test_the_issues_formats_are_fooled_and_refused(pattern: str, escape: str, variable: str) -> None:
    fmt = compiled(pattern, escape)
    assert fooled(fmt, variable) is not None  # the attack works on the parser: a real finding
    with pytest.raises(LogFormatError) as err:
        check_format(fmt, upstream_fields(fmt))
    message = str(err.value)
    assert "\n" not in message and f"${variable}" in message and "'canary' log_format" in message


def test_escape_none_with_a_decoded_uri_writes_whole_lines() -> None:
    fmt = compiled("$upstream_addr $upstream_status $upstream_response_time $uri", "none")
    with pytest.raises(LogFormatError, match=r"whole log lines: \$uri can hold a newline.*escape=default or escape=json"):
        check_format(fmt, upstream_fields(fmt))


@pytest.mark.parametrize("pattern, escape", [
    (CANARY_FORMAT, "default"),
    (COMBINED + " $upstream_addr $upstream_status $upstream_response_time", "default"),
    (COMBINED + " $upstream_addr $upstream_status $upstream_response_time", "json"),
    (ISSUE_JSON, "json"),
    ("$upstream_addr $upstream_status $upstream_response_time $request_time $http_user_agent", "none"),
    ("$request_method $upstream_addr $upstream_status $upstream_response_time", "default"),
    ('"$http_user_agent" $upstream_addr $upstream_status $upstream_response_time', "default"),
    # only the address itself could take the real text after it: never a forged figure
    ("$http_x|$upstream_addr|$upstream_status|$request_time|$request_id", "default"),
])
def test_safe_formats_pass_and_are_not_fooled(pattern: str, escape: str) -> None:
    fmt = compiled(pattern, escape)
    assert check_format(fmt, upstream_fields(fmt)) == []
    for variable in fmt.variables:
        if client_bytes(variable) is not None:
            assert fooled(fmt, variable) is None, variable


def test_a_variable_it_does_not_know_gets_a_warning_not_a_refusal() -> None:
    fmt = compiled("$my_map $upstream_addr $upstream_status $upstream_response_time")
    warnings = check_format(fmt, upstream_fields(fmt))
    assert len(warnings) == 1 and "$my_map" in warnings[0] and "if a client can set $my_map" in warnings[0]
    assert "\n" not in warnings[0]


@st.composite
def formats(draw: st.DrawFn) -> Tuple[str, str]:
    names = draw(st.lists(st.sampled_from(FIELDS + CLIENT_VARS + OTHER), min_size=2, max_size=7, unique=True))
    if "upstream_addr" not in names:
        names.insert(draw(st.integers(0, len(names))), "upstream_addr")
    if "upstream_status" not in names and "status" not in names:
        names.append("upstream_status")
    if "upstream_response_time" not in names and "request_time" not in names:
        names.append("request_time")
    pattern = draw(st.sampled_from(["", "[", '"', "{"]))
    for i, name in enumerate(names):
        quote = draw(st.sampled_from(["", "", '"']))
        pattern += f"{quote}${{{name}}}{quote}"
        if i + 1 < len(names):
            pattern += draw(st.sampled_from(SEPARATORS))
    pattern += draw(st.sampled_from(["", "]", '"', "}"]))
    return pattern, draw(st.sampled_from(["default", "json", "none"]))


@given(formats())
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_format_that_passes_is_not_fooled(fmt_escape: Tuple[str, str]) -> None:
    pattern, escape = fmt_escape
    fmt = compiled(pattern, escape)
    try:
        check_format(fmt, upstream_fields(fmt))
    except LogFormatError as exc:
        assert "\n" not in str(exc)
        assert any(f.client and f"${f.variable}" in str(exc) for f in find_forgeries(fmt, upstream_fields(fmt)))
        return
    for variable in fmt.variables:
        if client_bytes(variable) is not None:
            assert fooled(fmt, variable) is None, (pattern, escape, variable)
