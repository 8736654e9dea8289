"""The `rollouts` section: each rollout's defaults, upstream and canary, steps, names, and analysis's old window."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from fractions import Fraction

import pytest

from nginx_canary.config.model import AnalysisSettings, GateSettings, RolloutSettings
from tests.config.cases import MINIMAL, assert_refused, parse, setting


def test_rollout_defaults():
    rollout = parse(MINIMAL).rollouts["app"]
    assert rollout == RolloutSettings(
        name="app", upstream="backend", canary=("10.0.0.12:8080",), access_log=None, log_format=None,
        steps=(Fraction(10), Fraction(25), Fraction(50), Fraction(100)), step_interval=60.0, on_success="keep",
        analysis=AnalysisSettings(interval=1.0, window=None, min_requests=20, max_error_rate=0.05,
                                  error_rate_tolerance=0.0, max_error_rate_increase=0.02, max_p99_latency=1.0,
                                  max_p99_latency_ratio=2.0, max_p50_latency_ratio=1.1, risk=0.01,
                                  promotion_risk=0.05, max_step_wait=None, failure_threshold=1, http_checks=()),
        webhooks=(), gates=GateSettings(pre_rollout=None, confirm_step=None, confirm_promotion=None),
    )
    assert all(isinstance(step, Fraction) for step in rollout.steps)


def test_empty_analysis_section_means_its_defaults():
    assert parse(MINIMAL + "    analysis:\n").rollouts["app"].analysis == AnalysisSettings()


def test_rollouts_keep_file_order_and_their_names():
    text = "rollouts:\n" + "".join(f"  {name}: {{upstream: u{i}, canary: [a]}}\n"
                                   for i, name in enumerate(["zeta", "alpha", "mid"]))
    parsed = parse(text)
    assert list(parsed.rollouts) == ["zeta", "alpha", "mid"]
    assert [rollout.name for rollout in parsed.rollouts.values()] == ["zeta", "alpha", "mid"]


@pytest.mark.parametrize("upstream, canary, expected_upstream, expected_canary", [
    ("backend", '["10.0.0.12:8080"]', "backend", ("10.0.0.12:8080",)),
    ("app-v2.internal", "[10.0.0.12:8080, 'unix:/run/app.sock', '[::1]:80']", "app-v2.internal",
     ("10.0.0.12:8080", "unix:/run/app.sock", "[::1]:80")),
    ("1.10", "[8080]", "1.10", ("8080",)),  # as written, not YAML's float 1.1
    ("'yes'", "[a, b]", "yes", ("a", "b")),
])
def test_good_upstream_and_canary(upstream, canary, expected_upstream, expected_canary):
    rollout = parse(f"rollouts:\n  app:\n    upstream: {upstream}\n    canary: {canary}\n").rollouts["app"]
    assert (rollout.upstream, rollout.canary) == (expected_upstream, expected_canary)


STEP_LINE = 5


@pytest.mark.parametrize("steps, index, fragment", [
    ("[0, 100]", 0, "must be greater than 0: a step of 0 % sends the canary nothing"),
    ("[10, 10, 100]", 1, "steps must increase, but 10 follows 10"),
    ("[50, 25, 100]", 1, "steps must increase, but 25 follows 50"),
    ("[12.5, 12.50, 100]", 1, "steps must increase, but 12.50 follows 12.5"),
    ("[100, 100.00]", 1, "steps must increase"),
    ("[10, 50]", 1, "the last step must be 100 (a rollout ends with all traffic on the canary), got 50"),
    ("[99.99]", 0, "the last step must be 100"),
    ("[101]", 0, "expected a percent from 0 to 100 with at most two decimals, like 12.5, got the number 101"),
    ("[100.01]", 0, "got the number 100.01"),
    ("[12.345, 100]", 0, "got the number 12.345"),
    ("[-10, 100]", 0, "got the number -10"),
    ("['10', 100]", 0, "got '10' (numbers are written without quotes)"),
    ("[true, 100]", 0, "got the boolean true"),
    ("[10%, 100]", 0, "got '10%'"),
    ("[1e2]", 0, "got '1e2'"),
    ("[[10], 100]", 0, "got a list"),
    ("[null, 100]", 0, "got null"),
])
def test_bad_steps(steps, index, fragment):
    assert_refused(setting("rollout", "steps", steps), STEP_LINE, f"rollouts.app.steps[{index}]", fragment)


def test_window_is_accepted_but_unused():
    """The judge counts every request since the step began: window still loads (old configs), limits nothing."""
    analysis = MINIMAL + "    analysis:\n"
    # Shorter than interval was refused while checks read only the window; now it is just kept.
    old = parse(analysis + "      interval: 2s\n      window: 1s\n").rollouts["app"].analysis
    assert (old.interval, old.window) == (2.0, 1.0)
    assert parse(analysis + "      interval: 1m\n").rollouts["app"].analysis.window is None
    # Apart from window itself, a config that sets it is judged exactly like one that does not.
    without = parse(analysis + "      interval: 2s\n").rollouts["app"].analysis
    assert old == replace(without, window=1.0)
    # Its spelling is still checked, so a typo does not pass unnoticed.
    assert_refused(analysis + "      window: 30 s\n", 6, "rollouts.app.analysis.window", "expected a duration")


# --- upstream and canary ----------------------------------------------------------------


def rollout_with(upstream: str, canary: str) -> str:
    return f"rollouts:\n  app:\n    upstream: {upstream}\n    canary: {canary}\n"


@pytest.mark.parametrize("upstream, canary, line, key, fragment", [
    ("null", "[a]", 3, "rollouts.app.upstream", "expected upstream name like 'backend', got null"),
    ("''", "[a]", 3, "rollouts.app.upstream", "upstream name must not be empty"),
    ("[backend]", "[a]", 3, "rollouts.app.upstream", "got a list"),
    ("{a: b}", "[a]", 3, "rollouts.app.upstream", "got a mapping"),
    ("backend", "[]", 4, "rollouts.app.canary",
     "expected a list of server addresses like ['10.0.0.12:8080'], got an empty list"),
    ("backend", "10.0.0.12:8080", 4, "rollouts.app.canary", "got '10.0.0.12:8080'"),
    ("backend", "null", 4, "rollouts.app.canary", "got null"),
    ("backend", "[a, b, a]", 4, "rollouts.app.canary[2]", "duplicate server address 'a' (also rollouts.app.canary[0])"),
    ("backend", "[[x]]", 4, "rollouts.app.canary[0]", "expected server address like '10.0.0.12:8080', got a list"),
    ("backend", "[null]", 4, "rollouts.app.canary[0]", "got null"),
    ("backend", "['']", 4, "rollouts.app.canary[0]", "server address must not be empty"),
])
def test_bad_upstream_and_canary(upstream, canary, line, key, fragment):
    assert_refused(rollout_with(upstream, canary), line, key, fragment)


INJECTIONS = [
    "backend; include /etc/passwd",
    "a\nb",
    "a\r\nb",
    "x{",
    "}",
    "$x",
    "${x}",
    "b\u0430ckend",  # Cyrillic а
    "backend\u200b",  # zero-width space
    "a\u00a0b",  # non-breaking space
    "a\u2028b",  # line separator
    "x" * 300,
    "a b",
    "a\tb",
    "a#b",
    "a'b",
    'a"b',
    "a`b",
    "a\\b",
    "a\x00b",
    "a\x1bb",
    "a\x7fb",
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field, line, key", [
    ("upstream", 3, "rollouts.app.upstream"),
    ("canary", 4, "rollouts.app.canary[1]"),
    ("log_format", 5, "rollouts.app.log_format"),
])
def test_injection_is_refused(field, line, key, value):
    quoted = json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    upstream = quoted if field == "upstream" else "backend"
    canary = f"[ok, {quoted}]" if field == "canary" else "[ok]"
    text = rollout_with(upstream, canary)
    if field == "log_format":
        text += f"    log_format: {quoted}\n"
    error = assert_refused(text, line, key, "")
    assert re.search(r"(forbidden character|non-ASCII|longer than 256)", str(error)), str(error)


@pytest.mark.parametrize("value", ["backend; include /etc/passwd", "a b", "$x", "x{"])
def test_injection_in_plain_style_is_refused(value):
    assert_refused(rollout_with(value, "[a]"), 3, "rollouts.app.upstream", "forbidden character")


def test_two_rollouts_cannot_steer_one_upstream():
    text = MINIMAL + "  web:\n    upstream: backend\n    canary: [b]\n"
    assert_refused(text, 6, "rollouts.web.upstream",
                   "upstream 'backend' is already steered by rollout 'app' (line 3); one upstream, one rollout")


# --- rollout names ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["app", "a", "App_1.v-2", "9lives", "x" * 64, "null", "1"])
def test_good_rollout_name(name):
    assert list(parse(f"rollouts:\n  {name}: {{upstream: b, canary: [a]}}\n").rollouts) == [name]


@pytest.mark.parametrize("name", [
    "-app", ".x", "_x", "a b", "x" * 65, "b\u0430ckend", "a/b", "a:b", "", "a\nb", "../etc", "a;b", "$x",
])
def test_bad_rollout_name(name):
    assert_refused(f"rollouts:\n  {json.dumps(name)}: {{upstream: b, canary: [a]}}\n", 2, "rollouts",
                   "must be 1 to 64 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit")


@pytest.mark.parametrize("body, fragment", [
    ("{canary: [a]}", "missing required key 'upstream'"),
    ("{upstream: b}", "missing required key 'canary'"),
    ("", "missing required key 'upstream'"),
    ("backend", "expected a mapping of rollout settings, got 'backend'"),
    ("[b]", "expected a mapping of rollout settings, got a list"),
])
def test_bad_rollout_body(body, fragment):
    assert_refused(f"# rollouts\nrollouts:\n  app: {body}\n", 3, "rollouts.app", fragment)


def test_missing_key_in_block_mapping_points_at_the_rollout_name():
    assert_refused("rollouts:\n  app:\n    canary: [a]\n    steps: [100]\n", 2, "rollouts.app",
                   "missing required key 'upstream'")
