"""The log_format compiler: syntax, escapes, strategies, robustness, field picking."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nginx_canary.errors import BadInputError, LogFormatError
from nginx_canary.logs.format import (
    CANARY_FORMAT,
    COMBINED,
    CompiledFormat,
    FormatSpec,
    compile_format,
    parse_log_format_args,
    upstream_fields,
)
from nginx_canary.nginx.lexer import statements

SNIPPET = Path(__file__).resolve().parents[2] / "conf.d" / "nginx-canary-log-format.conf"


def compiled(pattern: str, escape: str = "default", name: str = "t") -> CompiledFormat:
    return compile_format(FormatSpec(name, pattern, escape))


# --- how nginx writes values (the reference the parser is checked against) ---


def nginx_escape(value: bytes, escape: str) -> bytes:
    """A value as ngx_http_log_escape / ngx_escape_json would write it."""
    if escape == "none":
        return value
    out = bytearray()
    for b in value:
        if escape == "default":
            if b < 0x20 or b in (0x22, 0x5C) or b >= 0x7F:
                out += b"\\x%02X" % b
            else:
                out.append(b)
        else:
            short = {0x22: b'\\"', 0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t", 0x08: b"\\b", 0x0C: b"\\f"}
            if b in short:
                out += short[b]
            elif b < 0x20:
                out += b"\\u00%02X" % b
            else:
                out.append(b)
    return bytes(out)


# --- the shipped snippet ---


def test_snippet_defines_the_canary_format() -> None:
    text = SNIPPET.read_text()
    found = [s for s in statements(text, str(SNIPPET)) if s.name.value == "log_format"]
    assert len(found) == 1
    spec = parse_log_format_args([t.value for t in found[0].args])
    assert spec == FormatSpec("canary", CANARY_FORMAT, "default")
    assert "\t" not in text.split("log_format", 1)[1], "tabs are written as \\t in the snippet"
    fmt = compile_format(spec)
    assert fmt.strategy == "split"
    upstream_fields(fmt)  # has everything the analysis needs


@pytest.mark.nginx
def test_snippet_passes_nginx_t(nginx_bin: str, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"events {{}}\nhttp {{ include {SNIPPET}; access_log {tmp_path / 'access.log'} canary; }}\n"
    )
    done = subprocess.run(
        [nginx_bin, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


def test_canary_format_fields() -> None:
    fmt = compiled(CANARY_FORMAT)
    assert fmt.variables[:6] == ("msec", "upstream_addr", "status", "upstream_status", "request_time",
                                 "upstream_response_time")
    assert set(fmt.variables) >= {"remote_addr", "request_method", "host", "uri", "upstream_connect_time",
                                  "request_id"}


# --- log_format arguments and pattern syntax ---


def test_parse_log_format_args() -> None:
    assert parse_log_format_args(["main", "escape=json", "part1", "part2"]) == FormatSpec("main", "part1part2", "json")
    assert parse_log_format_args(["main", "$a ", "$b"]) == FormatSpec("main", "$a $b", "default")
    assert parse_log_format_args(["x", "escape=none", "$a"]).escape == "none"
    assert parse_log_format_args(["empty"]) == FormatSpec("empty", "", "default")


@pytest.mark.parametrize("args", [[], [""], ["main", "escape=html", "$a"], ["main", "escape=", "$a"]])
def test_parse_log_format_args_rejects(args: List[str]) -> None:
    with pytest.raises(LogFormatError) as err:
        parse_log_format_args(args)
    assert isinstance(err.value, BadInputError)
    assert "\n" not in str(err.value)


def test_variable_ending_one_string_does_not_run_into_the_next() -> None:
    # nginx compiles each quoted string on its own: '$status' 'x' is $status then "x"
    spec = parse_log_format_args(["m", "$status", "x ", "$host"])
    fmt = compile_format(spec)
    assert fmt.variables == ("status", "host")
    assert fmt.parse(b"200x example.com") == {"status": "200", "host": "example.com"}


def test_multi_string_combined_equals_builtin() -> None:
    spec = parse_log_format_args(
        ["main", "$remote_addr - $remote_user [$time_local] ", '"$request" $status $body_bytes_sent ',
         '"$http_referer" "$http_user_agent"']
    )
    assert spec.pattern == COMBINED


def test_braced_variables() -> None:
    fmt = compiled("${host}_${status}:$uri")
    assert fmt.variables == ("host", "status", "uri")
    assert fmt.parse(b"example.com_404:/x") == {"host": "example.com", "status": "404", "uri": "/x"}


@pytest.mark.parametrize(
    "pattern, line, expected",
    [
        ("$ $host", b"$ a.b", {"host": "a.b"}),
        ("$host $", b"a.b $", {"host": "a.b"}),
        ("cost: $$status", b"cost: $200", {"status": "200"}),
        ("${} $host", b"${} a", {"host": "a"}),
        ("${host $status", b"${host 200", {"status": "200"}),
        ("$-$status", b"$-200", {"status": "200"}),
    ],
)
def test_literal_dollar(pattern: str, line: bytes, expected: Dict[str, str]) -> None:
    fmt = compiled(pattern)
    assert fmt.parse(line) == expected


def test_duplicate_variable_first_occurrence_wins() -> None:
    fmt = compiled('$host "$status" $host')
    assert fmt.variables == ("host", "status")
    assert fmt.parse(b'first "200" second') == {"host": "first", "status": "200"}
    split = compiled("$host\t$status\t$host")
    assert split.strategy == "split"
    assert split.parse(b"first\t200\tsecond") == {"host": "first", "status": "200"}
    assert split.extract([b"first\t200\tsecond"], ["host"]) == ([(b"first",)], 0)


def test_bad_escape_in_spec() -> None:
    with pytest.raises(LogFormatError):
        compile_format(FormatSpec("x", "$a", "html"))


# --- strategies ---


@pytest.mark.parametrize(
    "pattern, escape, strategy",
    [
        (CANARY_FORMAT, "default", "split"),
        (CANARY_FORMAT, "json", "split"),
        (CANARY_FORMAT, "none", "regex"),  # a tab may sit inside a raw value
        (COMBINED, "default", "regex"),
        ("$host $uri", "default", "regex"),  # values may hold spaces
        ("$status $body_bytes_sent $msec", "default", "split"),  # these never do
        ("$status $body_bytes_sent $msec", "none", "split"),
        ('$host"$uri', "default", "split"),  # '"' is always escaped in default mode
        ('$host"$uri', "json", "regex"),  # ... but appears as \" in json mode
        ("[$host\t$uri]", "default", "split"),
        ("$host\t$uri,$status", "default", "regex"),  # two different separators
        ("$host", "default", "regex"),
        ("$host$uri", "default", "regex"),
        ("\t$host\t$uri", "default", "regex"),  # separator inside the frame
    ],
)
def test_strategy(pattern: str, escape: str, strategy: str) -> None:
    assert compiled(pattern, escape).strategy == strategy


# --- lines that do not fit ---

COMBINED_LINE = (
    b'192.0.2.7 - - [28/Nov/2024:03:20:00 +0000] "GET /a?b=c HTTP/1.1" 200 612 "-" "Mozilla/5.0 (X11; Linux)"'
)


def test_combined_parse() -> None:
    fmt = compiled(COMBINED, name="combined")
    assert fmt.parse(COMBINED_LINE) == {
        "remote_addr": "192.0.2.7",
        "remote_user": "-",
        "time_local": "28/Nov/2024:03:20:00 +0000",
        "request": "GET /a?b=c HTTP/1.1",
        "status": "200",
        "body_bytes_sent": "612",
        "http_referer": "-",
        "http_user_agent": "Mozilla/5.0 (X11; Linux)",
    }
    assert fmt.parse(COMBINED_LINE + b"\n") == fmt.parse(COMBINED_LINE)
    assert fmt.parse(COMBINED_LINE + b"\r\n") == fmt.parse(COMBINED_LINE)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        COMBINED_LINE[:-1],
        COMBINED_LINE + b" extra",
        COMBINED_LINE.replace(b" 200 ", b" OK "),
        COMBINED_LINE + b"\n\n",
        b"\x00\xff\xfe" * 50,
    ],
)
def test_combined_rejects(line: bytes) -> None:
    assert compiled(COMBINED).parse(line) is None


def test_extract_counts_lines_that_do_not_fit() -> None:
    fmt = compiled(COMBINED)
    lines = [COMBINED_LINE, b"garbage", COMBINED_LINE + b"\n", b"", COMBINED_LINE.replace(b"200", b"502")]
    rows, bad = fmt.extract(lines, ["status", "remote_addr"])
    assert rows == [(b"200", b"192.0.2.7"), (b"200", b"192.0.2.7"), (b"502", b"192.0.2.7")]
    assert bad == 2
    assert fmt.extract(lines, ["status"]) == ([(b"200",), (b"200",), (b"502",)], 2)
    assert fmt.extract(lines, []) == ([(), (), ()], 2)
    assert fmt.extract([], ["status"]) == ([], 0)


def canary_line(addr: bytes = b"10.0.0.11:8080", status: bytes = b"200", request_id: bytes = b"ab12") -> bytes:
    return b"\t".join([b"1732764000.123", addr, status, status, b"0.010", b"0.009", b"192.0.2.7", b"GET",
                       b"example.com", b"/x", b"0.001", request_id, b"backend"])


def test_canary_extract() -> None:
    fmt = compiled(CANARY_FORMAT)
    good = canary_line()
    lines = [good + b"\n", good, good + b"\r\n", good + b"\textra", good.replace(b"\t", b" ", 1), b"", b"\t" * 12]
    rows, bad = fmt.extract(lines, ["upstream_addr", "status"])
    assert rows == [(b"10.0.0.11:8080", b"200")] * 3 + [(b"", b"")]
    assert bad == 3
    # the last field collects the line ending unless it is stripped
    rows, bad = fmt.extract(lines, ["proxy_host", "msec"])
    assert rows[:3] == [(b"backend", b"1732764000.123")] * 3
    assert fmt.extract(lines[:3], ["request_id"]) == ([(b"ab12",)] * 3, 0)
    assert fmt.extract(tuple(lines[:1]), ["status"]) == ([(b"200",)], 0)


def test_extract_rejects_unknown_names() -> None:
    with pytest.raises(LogFormatError, match=r"\$nope"):
        compiled(CANARY_FORMAT).extract([canary_line()], ["status", "nope"])


# --- robustness: garbage never crashes and never hangs ---

ADVERSARIAL = [
    b"\x00\xff" * 50_000,
    b" " * 100_000,
    b"\t" * 100_000,
    b"- " * 50_000,
    b'" ' * 50_000,
    b" [" * 50_000,
    b"1.2.3.4 - " + b" [" * 50_000 + b"]",
    b'1.2.3.4 - - [x] "' + b'" ' * 50_000,
    b"a" * 100_000,
    bytes(range(256)) * 400,
]

FORMATS = [
    (COMBINED, "default"),
    (COMBINED, "none"),
    (COMBINED, "json"),
    (CANARY_FORMAT, "default"),
    (CANARY_FORMAT, "none"),
    ("$a $b $c $d $e $f", "none"),
    ("$a$b$c$d", "none"),
    ('$a - $b [$c] "$d" $e', "none"),
    ('{"a":"$a","b":"$b","c":"$c"}', "json"),
]


@pytest.mark.parametrize("pattern, escape", FORMATS)
def test_junk_lines_finish_fast(pattern: str, escape: str) -> None:
    fmt = compiled(pattern, escape)
    started = time.monotonic()
    for junk in ADVERSARIAL:
        fmt.parse(junk)
        fmt.extract([junk, junk + b"\n"], list(fmt.variables))
    megabyte = b"\x00\xff\"[] -\t\\" * 110_000
    rows, bad = fmt.extract([megabyte] * 2, list(fmt.variables))
    assert len(rows) + bad == 2  # (escape=none formats of spaces do fit it)
    # generous: a backtracking blow-up takes hours, a linear scan milliseconds
    assert time.monotonic() - started < 10


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_binary_garbage_never_crashes(junk: bytes) -> None:
    for pattern, escape in FORMATS:
        fmt = compiled(pattern, escape)
        parsed = fmt.parse(junk)
        rows, bad = fmt.extract([junk], list(fmt.variables))
        assert bad == (0 if rows else 1)
        assert (parsed is None) == (not rows)


# --- property: lines rendered the way nginx writes them parse back ---

GENERIC_VARIABLES = ["a", "b", "http_x_trace", "arg_q", "cookie_id", "request", "host"]
KNOWN_VALUES = {
    "status": ["200", "502", "000"],
    "msec": ["1732764000.123", "0.000"],
    # the $upstream_* variables are matched by their structure: entries joined by ", " or " : "
    "upstream_addr": ["10.0.0.12:8080", "10.0.0.12:8080, 10.0.0.11:8080", "unix:/run/app.sock : [::1]:81", "-", "backend"],
    "upstream_status": ["200", "502, 200", "404 : 200", "-"],
    "upstream_response_time": ["0.012", "0.012, 0.034", "1.000 : 0.002", "-"],
    "request_time": ["0.004", "12.000"],
    "time_local": ["28/Nov/2024:03:20:00 +0000"],
}
LITERALS = [" ", "\t", '"', '" "', " [", "] ", ", ", " - ", "|", ":", '"\t"', "=", "\x01"]
VALUE_CHARS = st.sampled_from(list("aZ09 -_/.:,[]|=\"'\\\t\x01\x7féü中😀") + ["\r", "\n"])


def shows_raw(char: str, byte: int, escape: str) -> bool:
    """Whether ``byte`` can appear in the escaped form of ``char`` other than after a JSON backslash."""
    escaped = nginx_escape(char.encode(), escape)
    if escape == "json" and byte == ord('"') and char == '"':
        return False
    return byte in escaped


@st.composite
def rendered_lines(draw: st.DrawFn) -> Tuple[str, str, List[bytes], List[Dict[str, str]], List[Tuple[bytes, ...]]]:
    escape = draw(st.sampled_from(["default", "json", "none"]))
    pool = GENERIC_VARIABLES + list(KNOWN_VALUES)
    names = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=6, unique=True))
    def after(name: str, literals: List[str]) -> str:
        # a fixed-alphabet variable needs a value that lacks the literal's first character
        known = KNOWN_VALUES.get(name)
        usable = [lit for lit in literals if known is None or any(lit[:1] not in v for v in known)]
        if name.startswith("upstream_"):
            # ", " is these lists' own separator: "$upstream_addr, $upstream_status" can be written as
            # "10.0.0.12:8080, 502, 200" by two different pairs of values; no parser can tell them apart.
            usable = [lit for lit in usable if not lit.startswith(",")]
        return draw(st.sampled_from(usable))

    prefix = draw(st.sampled_from(["", "[", '"', "x="]))
    between = [after(name, LITERALS) for name in names[:-1]]
    suffix = after(names[-1], ["", '"', "]", " end", "\t"])
    follows: List[Optional[str]] = [*between, suffix or None]
    pattern = prefix + "".join(f"${n}" + (between[i] if i < len(between) else "") for i, n in enumerate(names)) + suffix
    lines, expected, raws = [], [], []
    for _ in range(draw(st.integers(1, 4))):
        values: Dict[str, str] = {}
        raw: List[bytes] = []
        line = prefix.encode()
        for i, name in enumerate(names):
            stop = follows[i]
            if name in KNOWN_VALUES:
                choices = [v for v in KNOWN_VALUES[name] if not stop or stop[0] not in v]
                value = draw(st.sampled_from(choices))
                written = value.encode()  # nginx writes these without escaping
            else:
                chars = VALUE_CHARS.filter(
                    lambda c: not (escape == "none" and c in "\r\n")
                    and not (stop is not None and shows_raw(c, stop.encode()[0], escape))
                )
                value = draw(st.text(chars, max_size=8))
                written = nginx_escape(value.encode(), escape)
            values[name] = value
            raw.append(written)
            line += written + (stop.encode() if stop is not None else b"")
        lines.append(line)
        expected.append(values)
        raws.append(tuple(raw))
    return pattern, escape, lines, expected, raws


@given(rendered_lines())
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_rendered_lines_parse_back(case: Tuple[str, str, List[bytes], List[Dict[str, str]], List[Tuple[bytes, ...]]]) -> None:
    pattern, escape, lines, expected, raws = case
    fmt = compiled(pattern, escape)
    for line, values in zip(lines, expected):
        assert fmt.parse(line) == values
    names = list(fmt.variables)
    endings = [b"", b"\n", b"\r\n"]
    batch = [line + endings[i % 3] for i, line in enumerate(lines)]
    framed = not pattern.startswith("$") or not pattern[-1].isalnum()
    if framed:  # a junk line cannot fit (a bare "$a" under escape=none fits anything)
        batch.append(b"\x00 not a line \x00")
    assert fmt.extract(batch, names) == (raws, int(framed))
    assert fmt.extract(batch, names[::-1]) == ([r[::-1] for r in raws], int(framed))
    for name, column in zip(names, zip(*raws)):
        assert [fmt.decode(v) for v in column] == [values[name] for values in expected]


# --- the fields the analysis needs ---


def test_upstream_fields_of_canary() -> None:
    fields = upstream_fields(compiled(CANARY_FORMAT))
    assert fields.addr == "upstream_addr"
    assert fields.status == "upstream_status"
    assert fields.latency == "upstream_response_time"
    assert fields.time == "msec"
    assert fields.final_status == "status"
    assert fields.request_time == "request_time"


def test_upstream_fields_fallbacks() -> None:
    fields = upstream_fields(compiled('$upstream_addr [$time_local] $status $request_time $time_iso8601'))
    assert (fields.status, fields.latency, fields.time, fields.final_status, fields.request_time) == (
        "status", "request_time", "time_iso8601", "status", "request_time")
    bare = upstream_fields(compiled("$upstream_addr $upstream_status $upstream_response_time"))
    assert (bare.time, bare.final_status, bare.request_time) == (None, None, None)


def test_upstream_fields_names_everything_missing() -> None:
    with pytest.raises(LogFormatError) as err:
        upstream_fields(compiled(COMBINED, name="combined"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("log format 'combined' lacks $upstream_addr and a latency")
    assert "$upstream_response_time or $request_time" in message
    assert "status" not in message.split(";")[0].replace("$request_time", "")
    assert message.endswith("use the 'canary' log_format from conf.d/nginx-canary-log-format.conf")

    with pytest.raises(LogFormatError) as err:
        upstream_fields(compiled("$host", name="tiny"))
    assert str(err.value).startswith(
        "log format 'tiny' lacks $upstream_addr, a status ($upstream_status or $status) and a latency "
        "($upstream_response_time or $request_time); use the 'canary' log_format")
