"""Hostile input: fuzzed log formats and lines, fuzzed YAML, and config injection through every way in.

Fuzzing (hypothesis), each example under a hang guard (SIGALRM after
:data:`HANG_SECONDS`: a hang fails the test, it does not time it):

* **log parser**: random ``log_format`` patterns (variables, separators,
  quotes, brackets, escapes, junk) in every escape mode go through
  ``compile_format`` (only ``LogFormatError`` may come out) and, when they
  carry what the analysis needs, through the :class:`Analyzer` on the C
  accelerator and on pure Python, fed lines rendered in that format plus
  binary junk: no exception, the same figures from both, every line counted;
* **YAML loader**: a valid daemon config with hostile text (every injection
  character, look-alike unicode, over-long values, YAML tags, anchors and
  aliases) put at any value or key: ``parse_settings`` raises only
  ``SettingsError``, and whatever it accepts holds no byte that could end,
  open or comment anything in nginx's syntax in a field that is ever compared
  with config words.

Injection: every CLI argument and YAML value that can reach an nginx config
file (``set-weight`` / ``validate`` UPSTREAM, PERCENT and ``--canary``; ``start
--steps`` through the CLI and straight over the control socket, its rollout
name; the YAML's rollout name, ``upstream``, ``canary``, ``steps`` and
``log_format``) is tried with each hostile value against a real nginx and the
real daemon. Every attempt must be refused with exit code 2 (bad input) while
the config files stay byte-identical, nginx is not reloaded and no rollout
starts. The number of attempts is printed (docs/RELIABILITY.md has it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from nginx_canary.cli.app import main as cli_main
from nginx_canary.errors import ExitCode, LogFormatError, SettingsError
from nginx_canary.logs.analyze import AddressBook, Analyzer
from nginx_canary.logs.counting import accelerator_available
from nginx_canary.logs.forgery import check_format
from nginx_canary.logs.format import FormatSpec, compile_format, upstream_fields
from nginx_canary.logs.window import WindowedStats
from nginx_canary.config.settings import parse_settings
from tests.reliability.conftest import history, run_cli, saved_state, try_call

HANG_SECONDS = 20


class Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(seconds: float = HANG_SECONDS) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds:g} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- the log parser -------------------------------------------------------------------------

VARIABLES = ["msec", "upstream_addr", "status", "upstream_status", "request_time", "upstream_response_time",
             "remote_addr", "request", "http_user_agent", "time_local", "time_iso8601", "request_id", "uri",
             "http_x_junk", "arg_q", "body_bytes_sent"]
LITERALS = ["\t", " ", " - ", '"', "[", "]", "|", ",", ", ", " : ", "\\", "=", ":", "{", "}", "$", "${", "é", "\x00",
            "\n", "''", "-"]
ADDRS = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80, 10.0.0.2:80", "10.0.0.2:80 : 10.0.0.1:80", "-", "unix:/s"]
VALUES: Dict[str, List[str]] = {
    "msec": ["1732764000.123", "-"], "status": ["200", "502", "-"], "upstream_status": ["200", "502, 200", "-"],
    "request_time": ["0.004", "12.000"], "upstream_response_time": ["0.004", "0.001, 0.003", "-"],
    "upstream_addr": ADDRS, "time_local": ["28/Nov/2024:03:20:00 +0000"], "time_iso8601": ["2024-11-28T03:20:00+00:00"],
    "request_id": ["ab12", "-"], "body_bytes_sent": ["0", "612"],
}
FREE_TEXT = ["GET / HTTP/1.1", "-", 'x"y', "a\\b", "\t", "é", "\x00", "{}", "1.2.3.4", "a b c", ""]
BOOK = AddressBook({"10.0.0.1:80": "app", "10.0.0.2:80": "app", "app": "app"},
                   {"10.0.0.1:80": "stable", "10.0.0.2:80": "canary"})


@st.composite
def log_formats(draw: st.DrawFn) -> Tuple[List[Any], str]:
    parts = draw(st.lists(st.one_of(st.sampled_from(VARIABLES).map(lambda v: ("var", v)),
                                    st.sampled_from(LITERALS).map(lambda t: ("lit", t)),
                                    st.text(max_size=4).map(lambda t: ("lit", t))), min_size=0, max_size=12))
    if draw(st.booleans()):
        # Usually with what the analysis needs, so that the analyzer gets to run.
        parts = [("var", "upstream_addr"), ("lit", "\t"), ("var", "upstream_status"), ("lit", "\t"),
                 ("var", "upstream_response_time"), ("lit", draw(st.sampled_from(["\t", " ", "|"])))] + parts
    return parts, draw(st.sampled_from(["default", "json", "none"]))


def render(parts: List[Any], draw: Any) -> bytes:
    out = []
    for kind, value in parts:
        if kind == "lit":
            out.append(value)
        else:
            out.append(draw(st.sampled_from(VALUES.get(value, FREE_TEXT))))
    # A raw newline ends a line in the file whatever the format says: the line is what comes before it.
    return "".join(out).encode("utf-8", "surrogateescape").replace(b"\n", b"")


def pattern_of(parts: List[Any]) -> str:
    text = ""
    for kind, value in parts:
        if kind == "lit":
            text += value
        else:
            text += "${" + value + "}"
    return text


def run_analyzer(compiled: Any, lines: List[bytes], accelerated: bool) -> Dict[str, Any]:
    # Formats a client could forge are refused for users' logs; the parser must still be sound on them.
    analyzer = Analyzer(compiled, BOOK, WindowedStats(horizon_seconds=30, clock=lambda: 1000.0),
                        accelerated=accelerated, refuse_forgeable=False)
    half = len(lines) // 2
    analyzer.feed(lines[:half], at=999.5)
    analyzer.feed_block(b"".join(line + b"\n" for line in lines[half:]))
    analyzer.count_unparsed(1)
    report = analyzer.report()
    assert analyzer.lines == len(lines) + 1 and analyzer.unparsed <= analyzer.lines
    return report


@given(log_formats(), st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_log_formats_and_lines_through_the_analyzer(fmt, data):
    parts, escape = fmt
    with no_hang():
        try:
            compiled = compile_format(FormatSpec("fuzz", pattern_of(parts), escape))
        except LogFormatError:
            return
        lines = [render(parts, data.draw) for _ in range(data.draw(st.integers(0, 30)))]
        lines += [junk.replace(b"\n", b"") for junk in data.draw(st.lists(st.binary(max_size=200), max_size=10))]
        lines += [b"\t" * data.draw(st.integers(0, 40)), b"\xff\t\"[ " * data.draw(st.sampled_from([1, 100, 20_000]))]
        try:
            pure = run_analyzer(compiled, lines, accelerated=False)
        except LogFormatError:
            return  # the format lacks what per-upstream analysis needs: refused, documented
        try:
            check_format(compiled, upstream_fields(compiled))
        except LogFormatError as exc:
            assert "\n" not in str(exc) and "$" in str(exc)  # one line naming the variable
        try:
            fast = run_analyzer(compiled, lines, accelerated=True)
        except RuntimeError:
            # Documented: the C counter serves split-strategy formats and those with a walk (and must be built:
            # CI builds it).
            assert accelerator_available() and compiled.strategy != "split" and \
                compiled.walk_layout(()) is None or not accelerator_available()
            return
        assert fast == pure


# --- the YAML loader --------------------------------------------------------------------------

VALID = {
    "nginx": {"conf": "/etc/nginx/nginx.conf", "binary": "nginx", "prefix": None},
    "state_dir": "/var/lib/nginx-canary",
    "control_socket": "/run/nginx-canary/control.sock",
    "control_group": "nginx-canary",
    "metrics_listen": "127.0.0.1:9145",
    "rollouts": {"app": {
        "upstream": "backend", "canary": ["10.0.0.12:8080"], "access_log": "/var/log/nginx/access.log",
        "log_format": "canary", "steps": [10, 25, 50, 100], "step_interval": "60s", "on_success": "keep",
        "analysis": {"interval": "1s", "window": "30s", "min_requests": 20, "max_error_rate": 0.05},
    }},
}
#: What an attacker would put in a value that reaches nginx's config: each character that ends, opens, quotes,
#: comments or expands something, whitespace, and look-alikes of them.
HOSTILE = [";", " ;", "#", "{", "}", "\n", "\r\n", '"', "'", "$", "`", "\\", "\t", " ", "\x00", "\x7f",
           " weight=100", "; server 10.6.6.6:80;", "} server { listen 6666; } upstream x {", "$host", "${x}",
           "\u037e", "\uff1b", "\uff03", "\uff5b", "\u200b", "\u202e", "\u2028", "\u00a0", "е", "ｂ", "１",
           "x" * 300, "x" * 5000]
WORD_FIELDS = ("upstream", "canary", "log_format")
FORBIDDEN = re.compile(r"""[\s;{}#"'`$\\\x00-\x1f\x7f]|[^\x00-\x7f]""")


def paths(tree: Any, prefix: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    out = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.append(prefix + (key,))
            out.extend(paths(value, prefix + (key,)))
    elif isinstance(tree, list):
        for n, value in enumerate(tree):
            out.append(prefix + (n,))
            out.extend(paths(value, prefix + (n,)))
    return out


HOSTILE_TEXT = st.one_of(
    st.sampled_from(HOSTILE),
    st.tuples(st.sampled_from(["backend", "10.0.0.12:8080", "canary", "10", "app", "/etc/nginx"]),
              st.sampled_from(HOSTILE)).map("".join),
    st.lists(st.sampled_from(HOSTILE[:-2] + ["a", "1", ".", ":"]), max_size=8).map("".join),
)


def assert_clean(parsed: Any) -> None:
    """A config that was accepted: what is compared with nginx's words is plain ASCII words only."""
    for name, rollout in parsed.rollouts.items():
        assert not FORBIDDEN.search(name), name
        for value in (rollout.upstream, *rollout.canary, rollout.log_format or "x"):
            assert value and not FORBIDDEN.search(value) and len(value) <= 256, value
        for step in rollout.steps:
            assert 0 < step <= 100


@given(st.sampled_from(paths(VALID)), HOSTILE_TEXT, st.sampled_from(["value", "key", "append"]),
       st.sampled_from(["plain", "quoted", "tagged", "alias"]))
@settings(max_examples=400, deadline=None)
def test_fuzz_yaml_hostile_values(path, hostile, where, style):
    tree = json.loads(json.dumps(VALID))
    owner = tree
    for key in path[:-1]:
        owner = owner[key]
    last = path[-1]
    if where == "key" and isinstance(owner, dict):
        owner[hostile] = owner.pop(last)
    elif where == "append" and isinstance(owner[last], (str, int)):
        owner[last] = f"{owner[last]}{hostile}"
    else:
        owner[last] = hostile
    text = yaml.safe_dump(tree, allow_unicode=True)
    if style == "tagged":
        text = text.replace(": ", ": !!python/object/apply:os.system ", 1)
    elif style == "alias":
        text = "x: &x " + json.dumps(hostile) + "\n" + text.replace("backend", "*x", 1)
    elif style == "quoted":
        text = text.replace("backend", json.dumps("backend" + hostile), 1)
    with no_hang():
        try:
            parsed = parse_settings(text, "/etc/nginx-canary/config.yaml")
        except SettingsError as exc:
            assert "\n" not in str(exc)
            return
    assert_clean(parsed)


def test_yaml_bombs_and_deep_nesting_are_refused():
    laughs = ("rollouts:\n  app:\n    upstream: backend\n    canary: &a [x, x, x, x, x, x, x, x, x]\n"
              "    steps: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "    analysis: &c {window: [*b, *b, *b, *b, *b, *b, *b, *b, *b]}\n")
    for text in (laughs, "[" * 100_000, "{a: " * 3000 + "}" * 3000, "state_dir: /" + "a" * 900_000,
                 "rollouts: !!python/object/new:os.system [id]\n", "\t" * 1000, "\ufeff" * 10):
        with no_hang():
            with pytest.raises(SettingsError):
                parse_settings(text, "c.yaml")


# --- config injection: every way in ------------------------------------------------------------


def hostile_values(base: str) -> List[str]:
    """The base value with each hostile piece appended, and a few whole replacements."""
    values = [base + piece for piece in HOSTILE] + [piece + base for piece in (";", "#", "{", " ", "\n")]
    values += ["", base + "\u0301"]
    # Look-alikes spelling the base value itself (Cyrillic а/е/о, fullwidth digits, a zero-width joiner).
    values += [base.translate(str.maketrans("aeo0123456789", "аео０１２３４５６７８９")), base + "\u200d"]
    return list(dict.fromkeys(v for v in values if v != base))


PERCENTS = ["10;", "10 ", " 10", "10\n", "10#", "10 weight=5", "10;server 10.6.6.6:80", "１０", "10\u066b5", "1e1", "0x10",
            "+10", "-0", "100.01", "10.005", "10.5.5", "nan", "inf", "1" * 300, "10\x00", "10$", "{10}", "", "٣٠"]


def with_steps(yaml_text: str, steps: str) -> str:
    return re.sub(r"steps: \[.*\]", lambda m: f"steps: {steps}", yaml_text)


class Attempts:
    """Counts attempts; each must be refused with exit 2 while nothing changes."""

    def __init__(self, h: Any) -> None:
        self.h = h
        self.count: Dict[str, int] = {}
        self.before = h.site.config_files()
        self.master = h.site.nginx_pid()
        self.workers = self._workers()

    def _workers(self) -> List[int]:
        import psutil
        return sorted(p.pid for p in psutil.Process(self.master).children())

    def refused(self, kind: str, code: int, detail: str) -> None:
        assert code == ExitCode.BAD_INPUT, f"{kind}: {detail!r} -> exit {code}"
        self.count[kind] = self.count.get(kind, 0) + 1

    def assert_nothing_changed(self) -> None:
        assert self.h.site.config_files() == self.before
        assert self.h.site.nginx_pid() == self.master and self._workers() == self.workers, "nginx was reloaded"
        assert not (self.h.site.state_dir / "journal.json").exists()

    @property
    def total(self) -> int:
        return sum(self.count.values())


def cli(args: Sequence[str]) -> Tuple[int, str]:
    """The real CLI entry point, in this process (a subprocess per attempt would take minutes): exit code, stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli_main(list(args))
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue()
    return 0, err.getvalue()


def test_config_injection_is_refused_before_any_file_changes(rel_harness, capsys):
    h = rel_harness()
    site = h.site
    attempts = Attempts(h)
    nginx = ["--nginx-conf", str(site.conf), "--nginx-prefix", str(site.prefix), "--nginx-bin", site.nginx_bin,
             "--state-dir", str(site.state_dir), "--socket", site.socket_path]
    # The real thing works: a valid dry run is accepted (exit 0) and still changes nothing.
    assert cli([*nginx, "set-weight", "backend", "10", "--canary", site.v2, "--dry-run"])[0] == 0

    # set-weight, set-weight --dry-run and validate: UPSTREAM, PERCENT and each --canary.
    good = {"upstream": "backend", "percent": "10", "canary": site.v2}
    for position in ("upstream", "percent", "canary"):
        values = PERCENTS if position == "percent" else hostile_values(good[position])
        for value in values:
            args = dict(good, **{position: value})
            for command in (["set-weight"], ["set-weight", "--dry-run"], ["validate"]):
                code, err = cli([*nginx, command[0], *command[1:], args["upstream"], args["percent"],
                                 "--canary", args["canary"]])
                attempts.refused(f"{command[0]} {position}", code, f"{value!r}: {err}")
            # A second canary that is hostile, after a valid one.
            if position == "canary":
                code, err = cli([*nginx, "set-weight", "backend", "10", "--canary", site.v2, "--canary", value])
                attempts.refused("set-weight second canary", code, f"{value!r}: {err}")
    attempts.assert_nothing_changed()

    # start through the CLI (--steps, the name) and straight over the socket (steps, name, step_interval).
    for value in PERCENTS:
        if value.strip() == value:
            # (The CLI strips blanks around each item of the list: " 10" is sent as "10", so it starts a rollout.)
            code, err = cli([*nginx, "start", "app", "--steps", f"{value},100"])
            attempts.refused("start --steps", code, f"{value!r}: {err}")
        _, error = try_call(h, "start", name="app", steps=[value, "100"])
        attempts.refused("socket start steps", error.exit_code if error else 0, f"{value!r}: {error}")
    for value in hostile_values("app"):
        code, err = cli([*nginx, "start", value])
        attempts.refused("start NAME", code, f"{value!r}: {err}")
        _, error = try_call(h, "start", name=value)
        attempts.refused("socket start name", error.exit_code if error else 0, f"{value!r}: {error}")
    for value in (["10"], 10, [10, 100], {"a": 1}, "10,100", [None], ["10", "100", "10; x"]):
        _, error = try_call(h, "start", name="app", steps=value)
        attempts.refused("socket start steps (types)", error.exit_code if error else 0, f"{value!r}: {error}")
    for value in ("1s; x", "1s", -1, 0, float("inf"), float("nan"), [1], True, {"s": 1}):
        _, error = try_call(h, "start", name="app", step_interval=value)
        attempts.refused("socket start step_interval", error.exit_code if error else 0, f"{value!r}: {error}")
    assert h.status()["state"] == "idle"
    assert not (site.state_dir / "rollouts" / "app.json").exists() or saved_state(site)["state"] == "idle"
    assert history(site) == []
    attempts.assert_nothing_changed()

    # The YAML: rollout name, upstream, canary, steps, log_format; each refused by the loader.
    base = site.daemon_config.read_text()
    for key, good_value in (("upstream", "backend"), ("canary", site.v2), ("log_format", "canary"), ("name", "app")):
        for value in hostile_values(good_value):
            if key == "name":
                text = base.replace("\n  app:\n", f"\n  {json.dumps(value)}:\n")
            elif key == "canary":
                text = base.replace(f'canary: ["{site.v2}"]', f"canary: [{json.dumps(value)}]")
            elif key == "upstream":
                text = base.replace("upstream: backend", f"upstream: {json.dumps(value)}")
            else:
                text = base.replace("    steps:", f"    log_format: {json.dumps(value)}\n    steps:")
            assert text != base
            with no_hang():
                try:
                    parse_settings(text, str(site.daemon_config))
                    code = 0
                except SettingsError as exc:
                    code = exc.exit_code
            attempts.refused(f"yaml {key}", code, value)
    for value in PERCENTS:
        text = with_steps(base, f"[{json.dumps(value)}, 100]")
        try:
            parse_settings(text, str(site.daemon_config))
            code = 0
        except SettingsError as exc:
            code = exc.exit_code
        attempts.refused("yaml steps", code, value)
        if value.strip() != value:
            continue  # unquoted, blanks around an item are YAML's own syntax
        text = with_steps(base, f"[{value}, 100]")
        try:
            parse_settings(text, str(site.daemon_config))
            code = 0
        except SettingsError as exc:
            code = exc.exit_code
        except Exception as exc:  # pragma: no cover - would be a bug: reported by the assertion below
            code = -1
            value = f"{value!r}: {exc!r}"
        attempts.refused("yaml steps (unquoted)", code, value)

    # And for real: the daemon refuses to start on such a file (exit 2, one line), nothing changed.
    h.signal_daemon(signal.SIGTERM)
    hostile_yaml = {"upstream": base.replace("upstream: backend", 'upstream: "backend; server 10.6.6.6:80"'),
                    "canary": base.replace(f'canary: ["{site.v2}"]', f'canary: ["{site.v2} weight=100"]'),
                    "steps": with_steps(base, '["10;", 100]')}
    for key, text in hostile_yaml.items():
        site.daemon_config.write_text(text)
        result = run_cli(["--config", str(site.daemon_config), "daemon"], h.env)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        attempts.refused(f"daemon start, yaml {key}", result.returncode, result.stderr)
    site.daemon_config.write_text(base)
    attempts.assert_nothing_changed()
    assert not os.path.exists(site.socket_path)

    with capsys.disabled():
        print(f"\nconfig injection: {attempts.total} attempts, {attempts.total} refused with exit 2, "
              f"config files byte-identical, nginx not reloaded")
        for kind, n in sorted(attempts.count.items()):
            print(f"  {kind}: {n}")


def test_a_huge_number_over_the_socket_is_bad_input_not_an_internal_error(rel_harness):
    """JSON has integers of any size: ``step_interval: 1e400`` written as digits must be refused as bad input."""
    h = rel_harness()
    before = h.site.config_files()
    _, error = try_call(h, "start", name="app", step_interval=10**400)
    assert h.site.config_files() == before and h.status()["state"] == "idle"
    assert error is not None and error.exit_code == ExitCode.BAD_INPUT, f"{error} (exit {error and error.exit_code})"
    assert "internal error" not in str(error)
