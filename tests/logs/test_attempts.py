"""Per-attempt attribution, checked on made-up values and on a real nginx's own log lines."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
from hypothesis import given, settings, strategies as st

from nginx_canary.logs.attempts import split_attempts
from nginx_canary.logs.format import (
    CANARY_FORMAT,
    COMBINED,
    FormatSpec,
    compile_format,
    parse_log_format_args,
    upstream_fields,
)
from nginx_canary.logs.records import Attempt
from nginx_canary.nginx.lexer import statements
from nginx_canary.demo.nginx_harness import PrivateNginx, free_port

SNIPPET = Path(__file__).resolve().parents[2] / "conf.d" / "nginx-canary-log-format.conf"

CANARY = "10.0.0.12:8080"
STABLE = "10.0.0.11:8080"


def test_single_attempt() -> None:
    assert split_attempts(STABLE, "200", "0.012") == [Attempt(STABLE, 200, 0.012)]


def test_retry_counts_the_failure_against_the_first_server() -> None:
    attempts = split_attempts(f"{CANARY}, {STABLE}", "502, 200", "0.001, 0.010")
    assert attempts == [Attempt(CANARY, 502, 0.001), Attempt(STABLE, 200, 0.010)]


def test_internal_redirect() -> None:
    assert split_attempts("a:1 : b:2", "404 : 200", "0.002 : 0.004") == [
        Attempt("a:1", 404, 0.002), Attempt("b:2", 200, 0.004)]
    assert split_attempts("a:1, c:3 : b:2", "502, 504 : 200", "0.001, 1.000 : 0.004") == [
        Attempt("a:1", 502, 0.001), Attempt("c:3", 504, 1.0), Attempt("b:2", 200, 0.004)]


@pytest.mark.parametrize("addr", ["-", "", " "])
def test_answered_by_nginx_itself(addr: str) -> None:
    assert split_attempts(addr, "-", "-") == []
    assert split_attempts(addr, "200", "0.001", single_status=True, single_seconds=True) == []


def test_unix_socket_and_ipv6() -> None:
    assert split_attempts("unix:/run/app.sock", "200", "0.003") == [Attempt("unix:/run/app.sock", 200, 0.003)]
    assert split_attempts("[::1]:8080, unix:/run/app.sock", "502, 200", "-, 0.003") == [
        Attempt("[::1]:8080", 502, None), Attempt("unix:/run/app.sock", 200, 0.003)]


def test_upstream_name_when_no_server_was_live() -> None:
    # "no live upstreams": nginx logs the upstream's name and answers 502 itself
    assert split_attempts("backend", "502", "0.000") == [Attempt("backend", 502, 0.0)]


def test_json_escape_empty_strings() -> None:
    assert split_attempts("", "", "") == []
    assert split_attempts(STABLE, "", "") == [Attempt(STABLE, None, None)]


def test_missing_entries_are_none() -> None:
    assert split_attempts(f"{CANARY}, {STABLE}", "-, 200", "-, -") == [
        Attempt(CANARY, None, None), Attempt(STABLE, 200, None)]
    assert split_attempts(STABLE, None, None) == [Attempt(STABLE, None, None)]


@pytest.mark.parametrize("status", ["20", "2000", "OK", "２００", " 2 0", "200.0", "-200"])
def test_status_must_be_three_digits(status: str) -> None:
    assert split_attempts(STABLE, status, "0.1")[0].status is None


@pytest.mark.parametrize("seconds", ["-1", "nan", "inf", "1e3", "1_000", "０.１", ".5", "abc", "0x1"])
def test_seconds_must_be_a_plain_decimal(seconds: str) -> None:
    assert split_attempts(STABLE, "200", seconds)[0].seconds is None


def test_mismatched_lengths() -> None:
    # fewer statuses/times than addresses: the tail gets None
    assert split_attempts("a:1, b:2, c:3", "502", "0.1, 0.2") == [
        Attempt("a:1", 502, 0.1), Attempt("b:2", None, 0.2), Attempt("c:3", None, None)]
    # more than addresses: the extra entries belong to no address
    assert split_attempts("a:1", "502, 200, 200", "0.1 : 0.2") == [Attempt("a:1", 502, 0.1)]


def test_single_status_and_single_seconds() -> None:
    attempts = split_attempts(f"{CANARY}, {STABLE}", "200", "0.020", single_status=True, single_seconds=True)
    assert attempts == [Attempt(CANARY, 502, None), Attempt(STABLE, 200, 0.020)]
    assert split_attempts(f"{CANARY}, {STABLE}", "200", "-, 0.020", single_status=True, retried_status=504)[0] == (
        Attempt(CANARY, 504, None))
    assert split_attempts(STABLE, "404", "0.5", single_status=True, single_seconds=True) == [
        Attempt(STABLE, 404, 0.5)]
    # single_status with per-try times, and the other way round
    assert split_attempts("a:1, b:2", "200", "0.001, 0.002", single_status=True) == [
        Attempt("a:1", 502, 0.001), Attempt("b:2", 200, 0.002)]
    assert split_attempts("a:1, b:2", "502, 200", "0.9", single_seconds=True) == [
        Attempt("a:1", 502, None), Attempt("b:2", 200, 0.9)]


def test_single_status_does_not_guess_across_a_redirect() -> None:
    # X-Accel-Redirect follows a success, error_page a failure: unknowable, so None
    assert split_attempts("a:1, b:2 : c:3", "200", "1.0", single_status=True, single_seconds=True) == [
        Attempt("a:1", 502, None), Attempt("b:2", None, None), Attempt("c:3", 200, 1.0)]
    assert split_attempts("a:1", "-", "-", single_status=True, single_seconds=True) == [Attempt("a:1", None, None)]


@given(st.text(), st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()), st.booleans(), st.booleans())
@settings(max_examples=500)
def test_never_raises(addr: str, status: Optional[str], seconds: Optional[str], single_status: bool,
                      single_seconds: bool) -> None:
    attempts = split_attempts(addr, status, seconds, single_status=single_status, single_seconds=single_seconds)
    for attempt in attempts:
        assert attempt.address not in ("", "-")
        assert attempt.status is None or 0 <= attempt.status <= 999
        assert attempt.seconds is None or attempt.seconds >= 0


ADDRESSES = st.one_of(
    st.builds(lambda a, b, p: f"10.{a}.{b}.1:{p}", st.integers(0, 255), st.integers(0, 255), st.integers(1, 65535)),
    st.builds(lambda p: f"[::1]:{p}", st.integers(1, 65535)),
    st.sampled_from(["unix:/run/app.sock", "unix:/var/run/a b.sock", "backend", "app_v2"]),
)
TRIES = st.tuples(ADDRESSES, st.one_of(st.none(), st.integers(100, 599)), st.one_of(st.none(), st.integers(0, 60_000)))


@given(st.lists(st.lists(TRIES, min_size=1, max_size=4), min_size=1, max_size=3))
def test_well_formed_values_round_trip(groups: List[List[Tuple[str, Optional[int], Optional[int]]]]) -> None:
    def render(pick) -> str:  # type: ignore[no-untyped-def]
        return " : ".join(", ".join(pick(t) for t in group) for group in groups)

    addr = render(lambda t: t[0])
    status = render(lambda t: "-" if t[1] is None else str(t[1]))
    seconds = render(lambda t: "-" if t[2] is None else f"{t[2] // 1000}.{t[2] % 1000:03d}")
    expected = [Attempt(a, s, None if ms is None else ms / 1000) for group in groups for a, s, ms in group]
    assert split_attempts(addr, status, seconds) == expected


# --- against a real nginx -------------------------------------------------

JSON_FORMAT = (
    '{"addr":"$upstream_addr","status":"$upstream_status","time":"$upstream_response_time",'
    '"final":"$status","request":"$request","agent":"$http_user_agent"}'
)

NGINX_CONF = """\
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 128; }}
http {{
    include {snippet};
    log_format jsonish escape=json '{json_format}';
    upstream backend {{
        # the canary refuses connections; max_fails=0 keeps it in rotation
        server 127.0.0.1:{dead} max_fails=0;
        server 127.0.0.1:{good};
    }}
    server {{
        listen 127.0.0.1:{front};
        access_log logs/canary.log canary;
        access_log logs/json.log jsonish;
        access_log logs/combined.log combined;
        location / {{
            proxy_pass http://backend;
            proxy_next_upstream error;
        }}
        location = /local {{ return 204; }}
        location = /redirect {{
            proxy_pass http://127.0.0.1:{dead};
            error_page 502 = @fallback;
        }}
        location @fallback {{ proxy_pass http://127.0.0.1:{good}; }}
    }}
    server {{ listen 127.0.0.1:{good}; access_log off; return 200 "ok"; }}
}}
"""

AGENT = 'tester "quoted" \\ back\tslash caf\u00e9'


class RealNginx(PrivateNginx):
    """nginx in front of a refusing canary (``dead``) and a server of its own (``good``)."""

    @property
    def front(self) -> int:
        return self.ports["front"]

    @property
    def dead(self) -> int:
        return self.ports["dead"]

    @property
    def good(self) -> int:
        return self.ports["good"]

    def get(self, path: str, agent: str = "python-test") -> int:
        # http.client writes header values as latin-1: send the UTF-8 bytes of the agent
        request = urllib.request.Request(f"http://127.0.0.1:{self.front}{path}",
                                         headers={"User-Agent": agent.encode().decode("latin-1")})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                resp.read()
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    def log(self, name: str) -> List[bytes]:
        return (self.prefix / "logs" / name).read_bytes().splitlines(keepends=True)


@pytest.fixture
def real_nginx(nginx_bin: str, tmp_path: Path) -> Iterator[RealNginx]:
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    for d in (tmp_path, prefix, prefix / "logs"):
        d.chmod(0o755)
    front, dead, good = free_port(), free_port(), free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(
        snippet=SNIPPET, json_format=JSON_FORMAT, front=front, dead=dead, good=good))
    nginx = RealNginx(nginx_bin, prefix, {"front": front, "dead": dead, "good": good})
    try:
        nginx.start()
        yield nginx
    finally:
        nginx.stop()


@pytest.mark.nginx
def test_parser_reads_real_nginx_lines(real_nginx: RealNginx) -> None:
    statuses = [real_nginx.get("/", AGENT) for _ in range(50)]
    assert statuses == [200] * 50
    assert real_nginx.get("/local") == 204
    assert real_nginx.get("/redirect") == 200
    real_nginx.stop()  # flushes and closes the logs

    dead, good = f"127.0.0.1:{real_nginx.dead}", f"127.0.0.1:{real_nginx.good}"
    spec = [parse_log_format_args([t.value for t in s.args])
            for s in statements(SNIPPET.read_text()) if s.name.value == "log_format"][0]
    canary = compile_format(spec)
    assert canary.spec.pattern == CANARY_FORMAT and canary.strategy == "split"
    lines = real_nginx.log("canary.log")
    assert len(lines) == 52

    parsed = [canary.parse(line.rstrip(b"\n")) for line in lines]
    assert all(p is not None for p in parsed), [ln for ln, p in zip(lines, parsed) if p is None]
    fields = upstream_fields(canary)
    names = [fields.addr, fields.status, fields.latency, fields.final_status or "", fields.time or ""]
    rows, bad = canary.extract(lines, names)
    assert bad == 0 and len(rows) == len(lines)
    for p, row in zip(parsed, rows):
        assert p is not None
        assert [canary.decode(v) for v in row] == [p[n] for n in names]

    routed_to_dead = 0
    attempts: List[Attempt] = []
    local = redirect = 0
    for addr, status, latency, final, _ in rows:
        tries = split_attempts(canary.decode(addr), canary.decode(status), canary.decode(latency))
        if not tries:
            local += 1
            assert final == b"204" and addr == b"-"
            continue
        if b" : " in addr:
            redirect += 1
            assert tries == [Attempt(dead, 502, tries[0].seconds), Attempt(good, 200, tries[1].seconds)]
            continue
        routed_to_dead += addr.startswith(dead.encode())
        attempts.extend(tries)
        assert tries[-1].address == good and tries[-1].status == 200 and final == b"200"
        assert all(t.seconds is not None and t.seconds >= 0 for t in tries)
    assert (local, redirect) == (1, 1)
    # round robin over a refusing and a working server: both get first tries
    assert 0 < routed_to_dead < 50
    against_dead = [a for a in attempts if a.address == dead]
    assert len(against_dead) == routed_to_dead
    assert {a.status for a in against_dead} == {502}
    assert {a.status for a in attempts if a.address == good} == {200}
    assert len([a for a in attempts if a.address == good]) == 50

    # the same requests through the json format: raw UTF-8, \" and \\ and \t escapes
    jsonish = compile_format(FormatSpec("jsonish", JSON_FORMAT, "json"))
    assert jsonish.strategy == "regex"
    json_lines = real_nginx.log("json.log")
    rows, bad = jsonish.extract(json_lines, ["upstream_addr", "upstream_status", "status"])
    assert bad == 0 and len(rows) == 52
    by_json = [split_attempts(jsonish.decode(a), jsonish.decode(s), None) for a, s, _ in rows]
    assert [len(t) for t in by_json[:50] if t[0].address == dead] == [2] * routed_to_dead
    assert by_json[50] == [] and [t.address for t in by_json[51]] == [dead, good]
    assert json_lines[50].startswith(b'{"addr":"","status":"","time":""')  # /local: empty, not "-"
    first = jsonish.parse(json_lines[0].rstrip(b"\n"))
    assert first is not None and first["http_user_agent"] == AGENT and first["request"] == "GET / HTTP/1.1"

    # and through nginx's built-in combined format (escape=default \xHH)
    combined = compile_format(FormatSpec("combined", COMBINED))
    combined_lines = real_nginx.log("combined.log")
    parsed_combined = [combined.parse(line.rstrip(b"\n")) for line in combined_lines]
    assert len(parsed_combined) == 52 and all(parsed_combined)
    assert parsed_combined[0]["http_user_agent"] == AGENT  # type: ignore[index]
    assert b"\\x22quoted\\x22" in combined_lines[0] and b"caf\\xC3\\xA9" in combined_lines[0]
    assert combined.extract(combined_lines, ["status"]) == ([(b"200",)] * 50 + [(b"204",), (b"200",)], 0)
