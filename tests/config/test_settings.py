"""The daemon's YAML config: defaults, every rule with a good and a bad case, one-line errors, fuzz."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nginx_canary.errors import BadInputError, ExitCode, SettingsError
from nginx_canary.config.model import (
    WEBHOOK_EVENTS,
    AnalysisSettings,
    DaemonSettings,
    GateSettings,
    HttpCheckSettings,
    NginxSettings,
    RolloutSettings,
    WebhookSettings,
)
from nginx_canary.config.settings import (
    CONFIG_ENV, DEFAULT_CONFIG_PATH, MAX_CONFIG_BYTES, config_path, load_settings, parse_settings)
from nginx_canary.config.syntax import MAX_URL_LENGTH, url_problem

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "conf.d" / "nginx-canary.example.yaml"
REFERENCE = ROOT / "docs" / "CONFIG.md"
SOURCE = "cfg.yaml"

MINIMAL = """\
rollouts:
  app:
    upstream: backend
    canary: ["10.0.0.12:8080"]
"""

HOOK = "https://hooks.example.com/canary"
# Each level: the text with one `{key}: {value}` line, that line's number,
# and the key path prefix errors carry. In a list entry that needs a `url`,
# `{url}` is a url line after it (empty when the key tried is `url` itself).
LEVELS: Dict[str, Tuple[str, int, str]] = {
    "top": ("{key}: {value}\n", 1, ""),
    "nginx": ("nginx:\n  {key}: {value}\n", 2, "nginx."),
    "rollout": (MINIMAL + "    {key}: {value}\n", 5, "rollouts.app."),
    "analysis": (MINIMAL + "    analysis:\n      {key}: {value}\n", 6, "rollouts.app.analysis."),
    "webhook": (MINIMAL + "    webhooks:\n      - {key}: {value}\n{url}", 6, "rollouts.app.webhooks[0]."),
    "gates": (MINIMAL + "    gates:\n      {key}: {value}\n", 6, "rollouts.app.gates."),
    "http_check": (MINIMAL + "    analysis:\n      http_checks:\n        - {key}: {value}\n{url}", 7,
                   "rollouts.app.analysis.http_checks[0]."),
}
URL_LINES = {"webhook": f"        url: {HOOK}\n", "http_check": "          url: http://127.0.0.1:8082/health\n"}


def parse(text: str) -> DaemonSettings:
    return parse_settings(text, SOURCE)


def refused(text: str, source: str = SOURCE) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        parse_settings(text, source)
    error = info.value
    assert "\n" not in str(error)
    assert isinstance(error, BadInputError) and error.exit_code == ExitCode.BAD_INPUT
    return error


def assert_refused(text: str, line: int, key: Optional[str], fragment: str) -> SettingsError:
    error = refused(text)
    where = f"{SOURCE}:{line}: {key}: " if key else f"{SOURCE}:{line}: "
    assert str(error).startswith(where), str(error)
    assert fragment in str(error), str(error)
    assert (error.file, error.line, error.key) == (SOURCE, line, key)
    return error


def setting(level: str, key: str, value: str) -> str:
    url = "" if key == "url" else URL_LINES.get(level, "")
    return LEVELS[level][0].format(key=key, value=value, url=url)


def read_back(parsed: DaemonSettings, level: str, key: str) -> Any:
    owner: Any = {
        "top": parsed,
        "nginx": parsed.nginx,
        "rollout": parsed.rollouts.get("app"),
        "analysis": parsed.rollouts["app"].analysis if "app" in parsed.rollouts else None,
        "webhook": parsed.rollouts["app"].webhooks[0] if level == "webhook" else None,
        "gates": parsed.rollouts["app"].gates if level == "gates" else None,
        "http_check": parsed.rollouts["app"].analysis.http_checks[0] if level == "http_check" else None,
    }[level]
    return getattr(owner, key)


# --- defaults ----------------------------------------------------------------


def test_empty_mapping_means_every_default():
    assert parse("{}") == DaemonSettings()
    assert parse("{}") == DaemonSettings(
        nginx=NginxSettings(conf="/etc/nginx/nginx.conf", binary="nginx", prefix=None),
        state_dir="/var/lib/nginx-canary",
        control_socket="/run/nginx-canary/control.sock",
        control_group=None,
        metrics_listen=None,
        rollouts={},
    )


def test_rollout_defaults():
    rollout = parse(MINIMAL).rollouts["app"]
    assert rollout == RolloutSettings(
        name="app", upstream="backend", canary=("10.0.0.12:8080",), access_log=None, log_format=None,
        steps=(Fraction(10), Fraction(25), Fraction(50), Fraction(100)), step_interval=60.0, on_success="keep",
        analysis=AnalysisSettings(interval=1.0, window=30.0, min_requests=20, max_error_rate=0.05,
                                  max_error_rate_increase=0.02, max_p99_latency=1.0, max_p99_latency_ratio=2.0,
                                  failure_threshold=2, http_checks=()),
        webhooks=(), gates=GateSettings(pre_rollout=None, confirm_step=None, confirm_promotion=None),
    )
    assert all(isinstance(step, Fraction) for step in rollout.steps)


def test_webhook_and_http_check_defaults():
    assert WebhookSettings(url=HOOK) == WebhookSettings(
        url=HOOK, events=("started", "step", "paused", "resumed", "promoted", "rolled_back", "aborted", "check_failed"),
        format="json", timeout=5.0, retries=3)
    assert HttpCheckSettings(url=HOOK) == HttpCheckSettings(url=HOOK, timeout=2.0)
    rollout = parse(MINIMAL + f"    webhooks:\n      - url: {HOOK}\n    analysis:\n      http_checks:\n"
                              f"        - url: {HOOK}\n").rollouts["app"]
    assert rollout.webhooks == (WebhookSettings(url=HOOK),)
    assert rollout.analysis.http_checks == (HttpCheckSettings(url=HOOK),)


@pytest.mark.parametrize("text", ["nginx:\n", "nginx: {}\n", "rollouts:\n", "rollouts: {}\n"])
def test_empty_sections_mean_their_defaults(text):
    assert parse(text) == DaemonSettings()


@pytest.mark.parametrize("lines", ["    webhooks:\n", "    webhooks: []\n", "    gates:\n", "    gates: {}\n",
                                   "    analysis:\n      http_checks:\n", "    analysis:\n      http_checks: []\n"])
def test_empty_webhooks_gates_and_http_checks_mean_none(lines):
    assert parse(MINIMAL + lines) == parse(MINIMAL)


def test_empty_analysis_section_means_its_defaults():
    assert parse(MINIMAL + "    analysis:\n").rollouts["app"].analysis == AnalysisSettings()


def test_settings_are_frozen():
    parsed = parse(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.state_dir = "/tmp"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.rollouts["app"].analysis.window = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.rollouts["other"] = parsed.rollouts["app"]  # type: ignore[index]


def test_rollouts_keep_file_order_and_their_names():
    text = "rollouts:\n" + "".join(f"  {name}: {{upstream: u{i}, canary: [a]}}\n"
                                   for i, name in enumerate(["zeta", "alpha", "mid"]))
    parsed = parse(text)
    assert list(parsed.rollouts) == ["zeta", "alpha", "mid"]
    assert [rollout.name for rollout in parsed.rollouts.values()] == ["zeta", "alpha", "mid"]


# --- every value rule: good ------------------------------------------------------

GOOD = [
    # durations: units, bare seconds, quoted, the bounds
    ("analysis", "interval", "250ms", 0.25),
    ("analysis", "interval", "1s", 1.0),
    ("analysis", "interval", "1.5s", 1.5),
    ("analysis", "interval", "0.001", 0.001),
    ("analysis", "interval", "1ms", 0.001),
    ("analysis", "window", "5m", 300.0),
    ("analysis", "window", "1h", 3600.0),
    ("analysis", "window", "45", 45.0),
    ("analysis", "window", "'30s'", 30.0),
    ("analysis", "window", '"2"', 2.0),
    ("analysis", "window", "720h", 720 * 3600.0),
    ("analysis", "max_p99_latency", "300ms", 0.3),
    ("analysis", "max_p99_latency", "2", 2.0),
    ("rollout", "step_interval", "90s", 90.0),
    ("rollout", "step_interval", "1.5m", 90.0),
    # counts
    ("analysis", "min_requests", "1", 1),
    ("analysis", "min_requests", "500", 500),
    ("analysis", "failure_threshold", "1", 1),
    ("analysis", "failure_threshold", "5", 5),
    # shares of 1
    ("analysis", "max_error_rate", "0", 0.0),
    ("analysis", "max_error_rate", "1", 1.0),
    ("analysis", "max_error_rate", "0.5", 0.5),
    ("analysis", "max_error_rate_increase", "0.001", 0.001),
    ("analysis", "max_error_rate_increase", "1.0", 1.0),
    # ratio
    ("analysis", "max_p99_latency_ratio", "1", 1.0),
    ("analysis", "max_p99_latency_ratio", "1.5", 1.5),
    ("analysis", "max_p99_latency_ratio", "10", 10.0),
    # steps
    ("rollout", "steps", "[100]", (Fraction(100),)),
    ("rollout", "steps", "[0.5, 12.5, 33.33, 100]", (Fraction(1, 2), Fraction(25, 2), Fraction(3333, 100), Fraction(100))),
    ("rollout", "steps", "[1, 100.00]", (Fraction(1), Fraction(100))),
    ("rollout", "steps", "[0.01, 99.99, 100]", (Fraction(1, 100), Fraction(9999, 100), Fraction(100))),
    # on_success
    ("rollout", "on_success", "keep", "keep"),
    ("rollout", "on_success", "restore", "restore"),
    ("rollout", "on_success", "'restore'", "restore"),
    # names and paths, taken as written
    ("rollout", "access_log", "/var/log/nginx/access.log", "/var/log/nginx/access.log"),
    ("rollout", "access_log", "'/var/log/nginx/a b.log'", "/var/log/nginx/a b.log"),
    ("rollout", "access_log", "null", None),
    ("rollout", "access_log", "", None),
    ("rollout", "log_format", "canary", "canary"),
    ("rollout", "log_format", "combined", "combined"),
    ("rollout", "log_format", "~", None),
    ("nginx", "conf", "/tmp/nc/nginx.conf", "/tmp/nc/nginx.conf"),
    ("nginx", "binary", "nginx", "nginx"),
    ("nginx", "binary", "nginx-debug", "nginx-debug"),
    ("nginx", "binary", "/usr/sbin/nginx", "/usr/sbin/nginx"),
    ("nginx", "prefix", "/tmp/nc", "/tmp/nc"),
    ("nginx", "prefix", "null", None),
    ("top", "state_dir", "/tmp/state", "/tmp/state"),
    ("top", "control_socket", "/tmp/nc.sock", "/tmp/nc.sock"),
    ("top", "control_socket", "/" + "s" * 106, "/" + "s" * 106),
    ("top", "control_group", "null", None),
    ("top", "control_group", "nginx-canary", "nginx-canary"),
    ("top", "control_group", "1000", "1000"),
    ("top", "metrics_listen", "null", None),
    ("top", "metrics_listen", "127.0.0.1:9145", "127.0.0.1:9145"),
    ("top", "metrics_listen", "'[::1]:9145'", "[::1]:9145"),
    ("top", "metrics_listen", "localhost:9145", "localhost:9145"),
    ("top", "metrics_listen", "metrics.example.internal:65535", "metrics.example.internal:65535"),
    ("top", "metrics_listen", "0.0.0.0:1", "0.0.0.0:1"),
    ("top", "allow_insecure_permissions", "true", True),
    ("top", "allow_insecure_permissions", "false", False),
    # webhooks, gates and HTTP checks as a whole
    ("rollout", "webhooks", "[]", ()),
    ("rollout", "webhooks", "", ()),
    ("rollout", "webhooks", f"[{HOOK}]", (WebhookSettings(url=HOOK),)),
    ("rollout", "webhooks", f"[{{url: {HOOK}, format: slack}}, 'http://127.0.0.1:9/x']",
     (WebhookSettings(url=HOOK, format="slack"), WebhookSettings(url="http://127.0.0.1:9/x"))),
    ("rollout", "gates", "{}", GateSettings()),
    ("rollout", "gates", "null", GateSettings()),
    ("rollout", "gates", f"{{confirm_step: {HOOK}}}", GateSettings(confirm_step=HOOK)),
    ("analysis", "http_checks", "[]", ()),
    ("analysis", "http_checks", "~", ()),
    ("analysis", "http_checks", "[http://127.0.0.1:8082/health]",
     (HttpCheckSettings(url="http://127.0.0.1:8082/health"),)),
    ("analysis", "http_checks", "[{url: 'http://[::1]:8082/', timeout: 1s}, http://a.example/]",
     (HttpCheckSettings(url="http://[::1]:8082/", timeout=1.0), HttpCheckSettings(url="http://a.example/"))),
    # one webhook
    ("webhook", "url", HOOK, HOOK),
    ("webhook", "url", "'http://user:secret@127.0.0.1:8080/hook?token=a%20b#frag'",
     "http://user:secret@127.0.0.1:8080/hook?token=a%20b#frag"),
    ("webhook", "url", "HTTPS://Hooks.Example.com", "HTTPS://Hooks.Example.com"),
    ("webhook", "events", "[rolled_back]", ("rolled_back",)),
    ("webhook", "events", "[check_failed, started]", ("check_failed", "started")),
    ("webhook", "events", "[" + ", ".join(WEBHOOK_EVENTS) + "]", WEBHOOK_EVENTS),
    ("webhook", "format", "json", "json"),
    ("webhook", "format", "slack", "slack"),
    ("webhook", "format", "'slack'", "slack"),
    ("webhook", "timeout", "250ms", 0.25),
    ("webhook", "timeout", "60s", 60.0),
    ("webhook", "timeout", "1m", 60.0),
    ("webhook", "retries", "0", 0),
    ("webhook", "retries", "3", 3),
    ("webhook", "retries", "10", 10),
    # gates
    ("gates", "pre_rollout", HOOK, HOOK),
    ("gates", "pre_rollout", "null", None),
    ("gates", "confirm_step", "http://127.0.0.1:9000/confirm-step", "http://127.0.0.1:9000/confirm-step"),
    ("gates", "confirm_step", "", None),
    ("gates", "confirm_promotion", "'https://ci.example.com/gate?rollout=app&stage=promote'",
     "https://ci.example.com/gate?rollout=app&stage=promote"),
    ("gates", "confirm_promotion", "~", None),
    # one HTTP check
    ("http_check", "url", "http://127.0.0.1:8082/health", "http://127.0.0.1:8082/health"),
    ("http_check", "url", "https://canary.internal:8443", "https://canary.internal:8443"),
    ("http_check", "timeout", "500ms", 0.5),
    ("http_check", "timeout", "10", 10.0),
]


@pytest.mark.parametrize("level, key, value, expected", GOOD)
def test_good_value(level, key, value, expected):
    assert read_back(parse(setting(level, key, value)), level, key) == expected


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


def test_block_style_lists():
    text = MINIMAL.replace('canary: ["10.0.0.12:8080"]', "canary:\n      - 10.0.0.12:8080\n      - 10.0.0.13:8080")
    text += "    steps:\n      - 50\n      - 100\n"
    rollout = parse(text).rollouts["app"]
    assert rollout.canary == ("10.0.0.12:8080", "10.0.0.13:8080")
    assert rollout.steps == (50, 100)


# --- every value rule: bad --------------------------------------------------------

DURATION = "expected a duration like 250ms, 10s or 5m, got "
BAD = [
    # durations: spelling
    ("analysis", "interval", "10 seconds", DURATION + "'10 seconds'"),
    ("analysis", "interval", "10 s", DURATION + "'10 s'"),
    ("analysis", "interval", "1e3s", DURATION + "'1e3s'"),
    ("analysis", "interval", "5min", DURATION + "'5min'"),
    ("analysis", "interval", "1h30m", DURATION + "'1h30m'"),
    ("analysis", "interval", "10S", DURATION + "'10S'"),
    ("analysis", "interval", "1d", DURATION + "'1d'"),
    ("analysis", "interval", ".5s", DURATION + "'.5s'"),
    ("analysis", "interval", "05s", DURATION + "'05s'"),
    ("analysis", "interval", "1:30", DURATION + "the number 1:30"),
    ("analysis", "interval", "true", DURATION + "the boolean true"),
    ("analysis", "interval", "null", DURATION + "null"),
    ("analysis", "interval", "", DURATION + "nothing"),
    ("analysis", "interval", "[1s]", DURATION + "a list"),
    ("analysis", "interval", "{a: 1}", DURATION + "a mapping"),
    ("rollout", "step_interval", "soon", DURATION + "'soon'"),
    # durations: range
    ("analysis", "interval", "0", "must be greater than 0, got '0'"),
    ("analysis", "interval", "0s", "must be greater than 0"),
    ("analysis", "interval", "-1s", "must be greater than 0, got '-1s'"),
    ("analysis", "window", "-5", "must be greater than 0"),
    ("analysis", "window", "0ms", "must be greater than 0"),
    ("analysis", "max_p99_latency", "0s", "must be greater than 0"),
    ("rollout", "step_interval", "0", "must be greater than 0"),
    ("analysis", "interval", "0.5ms", "durations have millisecond resolution, got '0.5ms'"),
    ("analysis", "interval", "1.0001s", "millisecond resolution"),
    ("analysis", "window", "721h", "must be at most 720h (30 days), got '721h'"),
    # counts
    ("analysis", "min_requests", "0", "must be at least 1, got 0"),
    ("analysis", "min_requests", "-3", "must be at least 1, got -3"),
    ("analysis", "min_requests", "2.5", "expected a whole number like 20, got the number 2.5"),
    ("analysis", "min_requests", "'20'", "got '20' (numbers are written without quotes)"),
    ("analysis", "min_requests", "true", "got the boolean true"),
    ("analysis", "min_requests", "1e3", "got '1e3'"),
    ("analysis", "failure_threshold", "0", "must be at least 1"),
    ("analysis", "failure_threshold", "1.0", "expected a whole number like 20, got the number 1.0"),
    ("analysis", "failure_threshold", "null", "got null"),
    ("analysis", "failure_threshold", "[2]", "got a list"),
    # shares
    ("analysis", "max_error_rate", "1.01", "must be from 0 to 1 (0.05 = 5 %), got 1.01"),
    ("analysis", "max_error_rate", "-0.1", "must be from 0 to 1"),
    ("analysis", "max_error_rate", "1.000000000000001", "must be from 0 to 1"),
    ("analysis", "max_error_rate", "5%", "expected a share from 0 to 1 like 0.05, got '5%'"),
    ("analysis", "max_error_rate", "'0.05'", "got '0.05' (numbers are written without quotes)"),
    ("analysis", "max_error_rate", "true", "got the boolean true"),
    ("analysis", "max_error_rate", "no", "got the boolean no"),
    ("analysis", "max_error_rate", ".05", "got the number .05"),
    ("analysis", "max_error_rate", "5e-2", "got '5e-2'"),
    ("analysis", "max_error_rate", "010", "got the number 010"),  # YAML 1.1 octal
    ("analysis", "max_error_rate", ".nan", "got the number .nan"),
    ("analysis", "max_error_rate_increase", "2", "must be from 0 to 1"),
    ("analysis", "max_error_rate_increase", "null", "got null"),
    # ratio
    ("analysis", "max_p99_latency_ratio", "0.99", "must be at least 1 (canary p99 divided by stable p99), got 0.99"),
    ("analysis", "max_p99_latency_ratio", "0", "must be at least 1"),
    ("analysis", "max_p99_latency_ratio", "-1", "must be at least 1"),
    ("analysis", "max_p99_latency_ratio", "yes", "expected a ratio like 2.0, got the boolean yes"),
    ("analysis", "max_p99_latency_ratio", ".inf", "got the number .inf"),
    # steps, as a whole
    ("rollout", "steps", "[]", "expected a list of percents like [10, 25, 50, 100], got an empty list"),
    ("rollout", "steps", "50", "expected a list of percents like [10, 25, 50, 100], got the number 50"),
    ("rollout", "steps", "null", "got null"),
    ("rollout", "steps", "{a: 1}", "got a mapping"),
    # on_success
    ("rollout", "on_success", "Keep", "expected keep or restore, got 'Keep'"),
    ("rollout", "on_success", "rollback", "expected keep or restore, got 'rollback'"),
    ("rollout", "on_success", "true", "expected keep or restore, got the boolean true"),
    ("rollout", "on_success", "null", "got null"),
    ("rollout", "on_success", "[keep]", "got a list"),
    # canary, as a whole
    ("rollout", "access_log", "logs/access.log", "expected an absolute path, got 'logs/access.log'"),
    ("rollout", "access_log", "syslog:server=unix:/dev/log", "expected an absolute path"),
    ("rollout", "access_log", "''", "expected an absolute path, got ''"),
    ("rollout", "access_log", '"/var/log/a\\nb.log"', "contains the unprintable character '\\n'"),
    ("rollout", "access_log", '"/var/log/a\\0b.log"', "contains the unprintable character '\\x00'"),
    ("rollout", "access_log", '"/var/log/a\\u2028b.log"', "contains the unprintable character '\\u2028'"),
    ("rollout", "access_log", "/" + "p" * 5000, "path is 5001 bytes long, more than the 4095 allowed here"),
    ("rollout", "access_log", "[/a]", "expected an absolute path, got a list"),
    ("rollout", "log_format", "[canary]", "got a list"),
    ("rollout", "log_format", "'a b'", "log format name 'a b' contains the forbidden character ' '"),
    # nginx
    ("nginx", "conf", "nginx.conf", "expected an absolute path, got 'nginx.conf'"),
    ("nginx", "conf", "null", "expected an absolute path, got null"),
    ("nginx", "prefix", "relative/prefix", "expected an absolute path"),
    ("nginx", "binary", "./nginx", "expected a command name like 'nginx' (looked up in PATH) or an absolute path"),
    ("nginx", "binary", "'nginx -g daemon'", "got 'nginx -g daemon'"),
    ("nginx", "binary", "-nginx", "got '-nginx'"),
    ("nginx", "binary", "''", "got ''"),
    ("nginx", "binary", "null", "got null"),
    # top level
    ("top", "state_dir", "var/lib/nginx-canary", "expected an absolute path"),
    ("top", "state_dir", "~", "got null"),
    ("top", "control_socket", "control.sock", "expected an absolute path"),
    ("top", "control_socket", "/" + "s" * 107, "path is 108 bytes long, more than the 107 allowed here"),
    ("top", "control_group", "'a b'", "expected a group name or numeric id like 'nginx-canary', got 'a b'"),
    ("top", "control_group", "'a:b'", "got 'a:b'"),
    ("top", "control_group", "-wheel", "got '-wheel'"),
    ("top", "control_group", "g" * 33, "expected a group name"),
    ("top", "control_group", "[wheel]", "got a list"),
    ("top", "metrics_listen", "9145", "expected host:port like '127.0.0.1:9145', '[::1]:9145' or 'localhost:9145' "
                                      "(port 1 to 65535), got '9145'"),
    ("top", "metrics_listen", "127.0.0.1", "got '127.0.0.1'"),
    ("top", "metrics_listen", "127.0.0.1:0", "got '127.0.0.1:0'"),
    ("top", "metrics_listen", "127.0.0.1:65536", "got '127.0.0.1:65536'"),
    ("top", "metrics_listen", "127.0.0.1:09145", "got '127.0.0.1:09145'"),
    ("top", "metrics_listen", "999.1.1.1:80", "got '999.1.1.1:80'"),
    ("top", "metrics_listen", "'::1:9145'", "got '::1:9145'"),
    ("top", "metrics_listen", "'[::1]'", "got '[::1]'"),
    ("top", "metrics_listen", "'[zz]:80'", "got '[zz]:80'"),
    ("top", "metrics_listen", "':9145'", "got ':9145'"),
    ("top", "metrics_listen", "'a b:80'", "got 'a b:80'"),
    ("top", "metrics_listen", "'bad_host:80'", "got 'bad_host:80'"),
    ("top", "metrics_listen", "true", "got 'true'"),
    ("top", "allow_insecure_permissions", "yes", "expected true or false, got the boolean yes"),
    ("top", "allow_insecure_permissions", "'true'", "expected true or false, got 'true'"),
    ("top", "allow_insecure_permissions", "1", "got the number 1"),
    ("top", "allow_insecure_permissions", "null", "got null"),
    # webhooks, gates and HTTP checks as a whole
    ("rollout", "webhooks", HOOK, "expected a list of webhooks like [{url: 'https://hooks.example.com/canary'}], "
                                  f"got '{HOOK}'"),
    ("rollout", "webhooks", "{url: x}", "expected a list of webhooks"),
    ("rollout", "webhooks", "true", "got the boolean true"),
    ("rollout", "gates", "[]", "expected a mapping of gate name to URL, got a list"),
    ("rollout", "gates", HOOK, "expected a mapping of gate name to URL"),
    ("analysis", "http_checks", "http://127.0.0.1/health", "expected a list of URLs like "
                                                           "['http://127.0.0.1:8082/health'], got 'http://127.0.0.1/health'"),
    ("analysis", "http_checks", "{url: http://a.example}", "got a mapping"),
    # one webhook: the URL rules (more in test_url_rules)
    ("webhook", "url", "hooks.example.com/x", "expected an http:// or https:// URL, got 'hooks.example.com/x'"),
    ("webhook", "url", "ftp://files.example.com/", "expected an http:// or https:// URL"),
    ("webhook", "url", "'http://a b.example/'", "contains the character ' ', which a URL cannot hold"),
    ("webhook", "url", '"http://a.example/\\nx"', "contains the character '\\n'"),
    ("webhook", "url", "http://", "URL has no host"),
    ("webhook", "url", "'http://a.example:99999/'", "has an invalid port '99999' (1 to 65535)"),
    ("webhook", "url", "null", "expected an http or https URL like 'https://hooks.example.com/canary', got null"),
    ("webhook", "url", "[http://a.example]", "got a list"),
    ("webhook", "url", "http://a.example/" + "x" * MAX_URL_LENGTH, "more than the 2048 allowed"),
    ("webhook", "events", "[]", "expected a list of events like [promoted, rolled_back], got an empty list"),
    ("webhook", "events", "rolled_back", "expected a list of events like [promoted, rolled_back], got 'rolled_back'"),
    ("webhook", "events", "null", "got null"),
    ("webhook", "format", "text", "expected json or slack, got 'text'"),
    ("webhook", "format", "JSON", "expected json or slack, got 'JSON'"),
    ("webhook", "format", "null", "got null"),
    ("webhook", "timeout", "61s", "must be at most 60s (an endpoint slower than that is down), got 61s"),
    ("webhook", "timeout", "0", "must be greater than 0"),
    ("webhook", "timeout", "5 seconds", DURATION + "'5 seconds'"),
    ("webhook", "retries", "11", "must be from 0 to 10, got 11"),
    ("webhook", "retries", "-1", "must be from 0 to 10, got -1"),
    ("webhook", "retries", "1.5", "expected a whole number from 0 to 10 like 3, got the number 1.5"),
    ("webhook", "retries", "'3'", "(numbers are written without quotes)"),
    ("webhook", "retries", "null", "got null"),
    # gates
    ("gates", "pre_rollout", "/local/path", "expected an http:// or https:// URL, got '/local/path'"),
    ("gates", "pre_rollout", "true", "expected an http:// or https:// URL, got 'true'"),
    ("gates", "confirm_step", "'http://gate.example\\@evil.example/'", "contains the character '\\\\'"),
    ("gates", "confirm_step", "[http://a.example]", "got a list"),
    ("gates", "confirm_promotion", "'http://bad_host/'", "has an invalid host 'bad_host'"),
    ("gates", "confirm_promotion", "http://gäte.example/", "contains the non-ASCII character 'ä'"),
    # one HTTP check
    ("http_check", "url", "127.0.0.1:8082/health", "expected an http:// or https:// URL"),
    ("http_check", "url", "'http://[::1/'", "has an invalid host '[::1'"),
    ("http_check", "url", "''", "expected an http:// or https:// URL, got ''"),
    ("http_check", "timeout", "2m", "must be at most 60s"),
    ("http_check", "timeout", "-1s", "must be greater than 0"),
    ("http_check", "timeout", "null", "got null"),
]


@pytest.mark.parametrize("level, key, value, fragment", BAD)
def test_bad_value(level, key, value, fragment):
    text = setting(level, key, value)
    assert_refused(text, LEVELS[level][1], LEVELS[level][2] + key, fragment)


def test_every_rule_has_good_and_bad_cases():
    good = {(level, key) for level, key, _, _ in GOOD}
    bad = {(level, key) for level, key, _, _ in BAD}
    every = {("top", f.name) for f in dataclasses.fields(DaemonSettings) if f.name not in ("nginx", "rollouts")}
    every |= {("nginx", f.name) for f in dataclasses.fields(NginxSettings)}
    every |= {("rollout", f.name) for f in dataclasses.fields(RolloutSettings)
              if f.name not in ("name", "upstream", "canary", "analysis")}
    every |= {("analysis", f.name) for f in dataclasses.fields(AnalysisSettings)}
    every |= {("webhook", f.name) for f in dataclasses.fields(WebhookSettings)}
    every |= {("gates", f.name) for f in dataclasses.fields(GateSettings)}
    every |= {("http_check", f.name) for f in dataclasses.fields(HttpCheckSettings)}
    assert every - good == set()
    assert every - bad == set()


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


@pytest.mark.parametrize("url", [
    "http://a.example", "https://a.example/", "http://127.0.0.1:8082/health", "http://[::1]:8082/health",
    "https://[2001:db8::1]/x", "http://localhost", "https://user:pw@a.example:1/p?q=1&r=%20#top", "HTTP://A.EXAMPLE",
    "http://a.example:65535", "http://" + "a" * 63 + ".example/" + "p" * (MAX_URL_LENGTH - 80),
])
def test_good_url(url):
    assert url_problem(url) is None
    rollout = parse(MINIMAL + f"    gates:\n      confirm_step: {json.dumps(url)}\n").rollouts["app"]
    assert rollout.gates.confirm_step == url


@pytest.mark.parametrize("url, fragment", [
    ("", "expected an http:// or https:// URL, got ''"),
    ("a.example", "expected an http:// or https:// URL"),
    ("//a.example/", "expected an http:// or https:// URL"),
    ("http:/a.example", "expected an http:// or https:// URL"),
    ("file:///etc/passwd", "expected an http:// or https:// URL"),
    ("javascript://a.example/", "expected an http:// or https:// URL"),
    ("gopher://a.example/", "expected an http:// or https:// URL"),
    ("http://", "has no host"),
    ("http:///path", "has no host"),
    ("http://user@/x", "has no host"),
    ("http://:80/", "has no host"),
    ("http://a.example:0/", "invalid port '0'"),
    ("http://a.example:080/", "invalid port '080'"),
    ("http://a.example:/", "invalid port ''"),
    ("http://a.example:http/", "invalid port 'http'"),
    ("http://[::1]x/", "invalid port 'x'"),
    ("http://[zz]/", "invalid host '[zz]'"),
    ("http://::1/", "has no host"),
    ("http://999.1.1.1/", "invalid host '999.1.1.1'"),
    ("http://-a.example/", "invalid host '-a.example'"),
    ("http://a_b.example/", "invalid host 'a_b.example'"),
    ("http://a.example /", "contains the character ' '"),
    ("http://a.example/x y", "contains the character ' '"),
    ("http://a.example/\t", "contains the character '\\t'"),
    ("http://a.example/\r\nX-Injected: 1", "contains the character '\\r'"),
    ("http://a.example/\x00", "contains the character '\\x00'"),
    ("http://a.example/\x7f", "contains the character '\\x7f'"),
    ("http://a.example\\@b.example/", "contains the character '\\\\'"),
    ("http://b\u0430d.example/", "contains the non-ASCII character '\u0430'"),
    ("http://a.example/\u2028", "contains the non-ASCII character"),
    ("http://a.example/" + "x" * MAX_URL_LENGTH, f"URL is {MAX_URL_LENGTH + 17} characters long, more than the 2048"),
])
def test_bad_url(url, fragment):
    problem = url_problem(url)
    assert problem is not None and fragment in problem, problem
    assert "\n" not in problem
    text = MINIMAL + f"    webhooks:\n      - {json.dumps(url)}\n"
    assert_refused(text, 6, "rollouts.app.webhooks[0]", fragment)


def test_webhook_entry_needs_a_url():
    assert_refused(MINIMAL + "    webhooks:\n      - format: slack\n", 6, "rollouts.app.webhooks[0]",
                   "missing required key 'url'")
    assert_refused(MINIMAL + "    webhooks: [{}]\n", 5, "rollouts.app.webhooks[0]", "missing required key 'url'")
    assert_refused(MINIMAL + "    analysis:\n      http_checks: [{timeout: 1s}]\n", 6,
                   "rollouts.app.analysis.http_checks[0]", "missing required key 'url'")
    assert_refused(MINIMAL + "    webhooks: [null]\n", 5, "rollouts.app.webhooks[0]",
                   "expected a webhook: a URL, or a mapping with url, events, format, timeout, retries, got null")
    assert_refused(MINIMAL + "    analysis:\n      http_checks: [[x]]\n", 6, "rollouts.app.analysis.http_checks[0]",
                   "expected an HTTP check: a URL, or a mapping with url, timeout, got a list")


@pytest.mark.parametrize("events, index, fragment", [
    ("[rollback]", 0, "unknown event 'rollback', did you mean 'rolled_back'? (known: started, step, paused, resumed, "
                      "promoted, rolled_back, aborted, check_failed)"),
    ("[start]", 0, "did you mean 'started'?"),
    ("[promoted, Promoted]", 1, "unknown event 'Promoted'"),
    ("[step, step]", 1, "duplicate event 'step' (also rollouts.app.webhooks[0].events[0])"),
    ("[all]", 0, "unknown event 'all' (known: started,"),
    ("[[step]]", 0, "expected an event name like 'rolled_back', got a list"),
    ("[null]", 0, "got null"),
])
def test_bad_webhook_events(events, index, fragment):
    assert_refused(setting("webhook", "events", events), 6, f"rollouts.app.webhooks[0].events[{index}]", fragment)


def test_at_most_16_webhooks_and_http_checks():
    hooks = "".join(f"      - http://127.0.0.1:{9000 + i}/\n" for i in range(17))
    assert len(parse(MINIMAL + "    webhooks:\n" + hooks[:-len(hooks) // 17]).rollouts["app"].webhooks) == 16
    assert_refused(MINIMAL + "    webhooks:\n" + hooks, 22, "rollouts.app.webhooks[16]",
                   "at most 16 entries are allowed here")
    checks = "".join(f"        - http://127.0.0.1:{9000 + i}/\n" for i in range(17))
    assert_refused(MINIMAL + "    analysis:\n      http_checks:\n" + checks, 23,
                   "rollouts.app.analysis.http_checks[16]", "at most 16 entries are allowed here")


def test_duplicate_key_in_a_webhook():
    text = MINIMAL + f"    webhooks:\n      - url: {HOOK}\n        format: json\n        format: slack\n"
    assert_refused(text, 8, "rollouts.app.webhooks[0]", "duplicate key 'format' (first on line 7)")


def test_webhooks_can_be_shared_by_alias():
    text = f"""\
rollouts:
  app:
    upstream: backend
    canary: [a]
    webhooks: &hooks
      - {{url: {HOOK}, format: slack, events: [rolled_back]}}
  api:
    upstream: api
    canary: [b]
    webhooks: *hooks
"""
    parsed = parse(text)
    assert parsed.rollouts["api"].webhooks == parsed.rollouts["app"].webhooks == (
        WebhookSettings(url=HOOK, format="slack", events=("rolled_back",)),)


def test_window_shorter_than_interval_is_refused_where_it_was_written():
    analysis = MINIMAL + "    analysis:\n"
    assert_refused(analysis + "      interval: 2s\n      window: 1s\n", 7, "rollouts.app.analysis.window",
                   "window (1s) must be at least interval (2s), or requests between checks go unseen")
    # Against the default window of 30s, the culprit is the interval.
    assert_refused(analysis + "      interval: 1m\n", 6, "rollouts.app.analysis.interval",
                   "window (30s) must be at least interval (60s)")
    assert parse(analysis + "      interval: 5s\n      window: 5s\n").rollouts["app"].analysis.window == 5.0


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


# --- structure: unknown keys, duplicates, types ------------------------------------------------


@pytest.mark.parametrize("level, key, prefix, fragment", [
    ("top", "stat_dir", "", "unknown key 'stat_dir', did you mean 'state_dir'? (known: nginx, state_dir, "
                            "control_socket, control_group, metrics_listen, allow_insecure_permissions, rollouts)"),
    ("top", "conf", "", "unknown key 'conf', it belongs under nginx"),
    ("top", "analysis", "", "unknown key 'analysis', it belongs under rollouts.NAME"),
    ("nginx", "config", "nginx", "unknown key 'config', did you mean 'conf'? (known: conf, binary, prefix)"),
    ("nginx", "state_dir", "nginx", "unknown key 'state_dir', it belongs under the top level"),
    ("rollout", "upstreams", "rollouts.app", "unknown key 'upstreams', did you mean 'upstream'? (known: upstream, "
                                             "canary, access_log, log_format, steps, step_interval, on_success, analysis, "
                                             "webhooks, gates)"),
    ("rollout", "url", "rollouts.app", "unknown key 'url', it belongs under rollouts.NAME.webhooks[N] or "
                                       "rollouts.NAME.analysis.http_checks[N]"),
    ("rollout", "confirm_step", "rollouts.app", "unknown key 'confirm_step', it belongs under rollouts.NAME.gates"),
    ("analysis", "webhooks", "rollouts.app.analysis", "unknown key 'webhooks', it belongs under rollouts.NAME"),
    ("webhook", "event", "rollouts.app.webhooks[0]", "unknown key 'event', did you mean 'events'? (known: url, "
                                                     "events, format, timeout, retries)"),
    ("webhook", "retry", "rollouts.app.webhooks[0]", "did you mean 'retries'?"),
    ("gates", "confirm", "rollouts.app.gates", "unknown key 'confirm', did you mean 'confirm_step'? (known: "
                                               "pre_rollout, confirm_step, confirm_promotion)"),
    ("gates", "timeout", "rollouts.app.gates", "unknown key 'timeout', it belongs under rollouts.NAME.webhooks[N] or "
                                               "rollouts.NAME.analysis.http_checks[N]"),
    ("http_check", "retries", "rollouts.app.analysis.http_checks[0]", "unknown key 'retries', it belongs under "
                                                                      "rollouts.NAME.webhooks[N] (known: url, timeout)"),
    ("rollout", "window", "rollouts.app", "unknown key 'window', it belongs under rollouts.NAME.analysis"),
    ("rollout", "weight", "rollouts.app", "unknown key 'weight' (known: upstream,"),
    ("analysis", "intervall", "rollouts.app.analysis", "unknown key 'intervall', did you mean 'interval'? (known: "
                                                       "interval, window, min_requests, max_error_rate,"),
    ("analysis", "steps", "rollouts.app.analysis", "unknown key 'steps', it belongs under rollouts.NAME"),
    ("analysis", "p99", "rollouts.app.analysis", "unknown key 'p99' (known: interval,"),
])
def test_unknown_key(level, key, prefix, fragment):
    assert_refused(setting(level, key, "1"), LEVELS[level][1], prefix or None, fragment)


def test_unknown_key_is_shown_safely():
    error = assert_refused('"a\\nb": 1\n', 1, None, "unknown key 'a\\nb'")
    assert "\n" not in str(error)


DUPLICATES = [
    ("state_dir: /a\nstate_dir: /b\n", 2, None, "duplicate key 'state_dir' (first on line 1)"),
    ("nginx:\n  conf: /a\n  binary: nginx\n  conf: /b\n", 4, "nginx", "duplicate key 'conf' (first on line 2)"),
    (MINIMAL + "  app:\n    upstream: x\n    canary: [b]\n", 5, "rollouts", "duplicate key 'app' (first on line 2)"),
    (MINIMAL + "    upstream: other\n", 5, "rollouts.app", "duplicate key 'upstream' (first on line 3)"),
    (MINIMAL + "    analysis:\n      window: 10s\n      window: 20s\n", 7, "rollouts.app.analysis",
     "duplicate key 'window' (first on line 6)"),
    ("rollouts: {}\nrollouts: {}\n", 2, None, "duplicate key 'rollouts' (first on line 1)"),
]


@pytest.mark.parametrize("text, line, key, fragment", DUPLICATES)
def test_duplicate_key(text, line, key, fragment):
    assert_refused(text, line, key, fragment)


@pytest.mark.parametrize("text, line, key, fragment", [
    ("- a\n- b\n", 1, None, "expected a mapping of settings at the top level, got a list"),
    ("just text\n", 1, None, "expected a mapping of settings at the top level, got 'just text'"),
    ("42\n", 1, None, "got the number 42"),
    ("nginx: [conf]\n", 1, "nginx", "expected a mapping, got a list"),
    ("nginx: /etc/nginx/nginx.conf\n", 1, "nginx", "expected a mapping, got '/etc/nginx/nginx.conf'"),
    ("rollouts:\n  - app\n", 2, "rollouts", "expected a mapping of rollout name to its settings, got a list"),
    ("rollouts: app\n", 1, "rollouts", "got 'app'"),
    (MINIMAL + "    analysis: strict\n", 5, "rollouts.app.analysis",
     "expected a mapping of analysis settings, got 'strict'"),
    (MINIMAL + "    analysis: [1s]\n", 5, "rollouts.app.analysis", "got a list"),
    ("? [a, b]\n: 1\n", 1, None, "keys must be plain names, got a list"),
    ("nginx:\n  ? {a: 1}\n  : 1\n", 2, "nginx", "keys must be plain names, got a mapping"),
    ("state_dir: !!python/object/apply:os.system ['true']\n", 1, "state_dir",
     "expected an absolute path, got a value tagged '!!python/object/apply:os.system'"),
    ("state_dir: !custom /x\n", 1, "state_dir", "got a value tagged '!custom'"),
    ("state_dir: !!binary aGVsbG8=\n", 1, "state_dir", "got a value tagged '!!binary'"),
    ("nginx: !!omap [conf: /x]\n", 1, "nginx", "expected a mapping, got a value tagged '!!omap'"),
    ("nginx: !!python/object:os.X {conf: /x}\n", 1, "nginx", "got a value tagged '!!python/object:os.X'"),
    ("nginx: !!str {conf: /x}\n", 1, "nginx", "got a value tagged '!!str'"),
    ("state_dir: !!str &a [*a]\n", 1, "state_dir", "expected an absolute path, got a value tagged '!!str'"),
    (MINIMAL + "    steps: !!set {100: null}\n", 5, "rollouts.app.steps", "got a value tagged '!!set'"),
])
def test_wrong_type(text, line, key, fragment):
    assert_refused(text, line, key, fragment)


def test_merge_keys_are_refused():
    text = MINIMAL + "    analysis:\n      <<: {window: 10s}\n"
    assert_refused(text, 6, "rollouts.app.analysis", "YAML merge keys ('<<') are not supported")


def test_aliases_share_a_section():
    text = """\
rollouts:
  app:
    upstream: backend
    canary: [a]
    analysis: &strict
      max_error_rate: 0.01
      window: 10s
  api:
    upstream: api
    canary: [b]
    analysis: *strict
"""
    parsed = parse(text)
    assert parsed.rollouts["api"].analysis == parsed.rollouts["app"].analysis
    assert parsed.rollouts["api"].analysis.max_error_rate == 0.01


def test_aliased_error_names_the_key_it_is_used_under():
    text = "x: &bad 10 seconds\n"
    assert_refused(text, 1, None, "unknown key 'x'")
    text = MINIMAL + "    step_interval: &d 10 seconds\n    analysis:\n      window: *d\n"
    assert_refused(text, 5, "rollouts.app.step_interval", DURATION + "'10 seconds'")


def test_alias_bomb_is_not_expanded():
    # Billion laughs: each level refers to the one before ten times.
    lines = ["rollouts:", "  app:", "    upstream: backend", "    canary:", "      - &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"      - &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 12)]
    assert_refused("\n".join(lines) + "\n", 5, "rollouts.app.canary[0]", "got a list")


# --- empty, syntax, encoding --------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "   \n", "# only a comment\n", "---\n", "---\n...\n", "~\n", "null\n"])
def test_empty_config(text):
    assert str(refused(text)) == f"{SOURCE}:1: empty config"


@pytest.mark.parametrize("text, line, fragment", [
    ("state_dir: /a\nnginx: conf: /x\n", 2, "invalid YAML: mapping values are not allowed here (column 12)"),
    ("rollouts:\n  app:\n    canary: [a, b\n", 4, "invalid YAML: while parsing a flow sequence (from line 3): "
                                                 "expected ',' or ']'"),
    ("nginx:\n\tconf: /x\n", 2, "found character '\\t' that cannot start any token"),
    ("state_dir: /a\n---\nstate_dir: /b\n", 2, "expected a single document in the stream"),
    ("state_dir: *nothing\n", 1, "found undefined alias 'nothing'"),
    ("state_dir: '/a\n", 2, "found unexpected end of stream"),
    ("nginx:\n  conf: /x\n state_dir: /y\n", 3, "invalid YAML"),
    ("state_dir: /a\x00\n", 1, "invalid YAML: special characters are not allowed, found '\\x00'"),
    ("a: 1\nb: \x07\n", 2, "found '\\x07'"),
    ("[" * 5000, 1, "invalid YAML: nested too deeply"),
])
def test_syntax_error(text, line, fragment):
    error = refused(text)
    assert str(error).startswith(f"{SOURCE}:{line}: invalid YAML: "), str(error)
    assert fragment in str(error)


def test_source_with_a_newline_stays_on_one_line():
    error = refused("x: 1\n", source="odd\nname.yaml")
    assert str(error).startswith("'odd\\nname.yaml':1: ")


# --- finding and reading the file ----------------------------------------------------------------


def test_config_path_precedence():
    assert config_path(None, {}) == DEFAULT_CONFIG_PATH == "/etc/nginx-canary/config.yaml"
    assert config_path(None, {CONFIG_ENV: "/env.yaml"}) == "/env.yaml"
    assert config_path("/cli.yaml", {CONFIG_ENV: "/env.yaml"}) == "/cli.yaml"
    assert config_path("/cli.yaml", {}) == "/cli.yaml"
    assert config_path(None, {CONFIG_ENV: ""}) == DEFAULT_CONFIG_PATH  # `VAR=` clears it
    assert CONFIG_ENV == "NGINX_CANARY_CONFIG"


def test_empty_config_option_is_refused():
    with pytest.raises(SettingsError, match="--config must not be empty"):
        config_path("", {CONFIG_ENV: "/env.yaml"})


def test_load_settings_reads_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "    steps: [50, 100]\n")
    assert load_settings(str(path)).rollouts["app"].steps == (50, 100)


def test_load_settings_errors_name_the_path(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "    analysis:\n      interval: 10 seconds\n")
    with pytest.raises(SettingsError) as info:
        load_settings(str(path))
    assert str(info.value) == (f"{path}:6: rollouts.app.analysis.interval: "
                               "expected a duration like 250ms, 10s or 5m, got '10 seconds'")


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "cannot read the config: No such file or directory"),
    (lambda p: p.mkdir(), "cannot read the config: Is a directory"),
])
def test_unreadable_config(tmp_path, make, fragment):
    path = tmp_path / "config.yaml"
    make(path)
    with pytest.raises(SettingsError) as info:
        load_settings(str(path))
    assert str(info.value) == f"{path}: {fragment}"
    assert info.value.exit_code == ExitCode.BAD_INPUT


def test_non_utf8_config_names_the_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"state_dir: /a\nnginx:\n  conf: /caf\xe9\n")
    with pytest.raises(SettingsError) as info:
        load_settings(str(path))
    assert str(info.value) == f"{path}:3: not UTF-8: byte 0xe9 cannot be decoded"


def test_oversized_config_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(SettingsError, match="larger than"):
        load_settings(str(path))


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes("\ufeffstate_dir: /tmp/s\n".encode())
    assert load_settings(str(path)).state_dir == "/tmp/s"


# --- the shipped example and the reference ------------------------------------------------------


def every_key() -> List[str]:
    names = [f.name for cls in (DaemonSettings, NginxSettings, RolloutSettings, AnalysisSettings, WebhookSettings,
                                GateSettings, HttpCheckSettings)
             for f in dataclasses.fields(cls)]
    return [name for name in names if name != "name"]  # a rollout's name is its key


def test_example_config_loads():
    parsed = load_settings(str(EXAMPLE))
    assert list(parsed.rollouts) == ["app"]
    app = parsed.rollouts["app"]
    assert app.upstream and app.canary
    # The example spells out the defaults, so what it says is what you get; only
    # what ties it to the example site (conf.d/) is its own.
    site_keys = {"upstream": app.upstream, "canary": app.canary, "access_log": app.access_log,
                 "log_format": app.log_format}
    assert parsed == DaemonSettings(rollouts={"app": RolloutSettings(name="app", **site_keys)})


def test_example_and_reference_mention_every_key():
    example = EXAMPLE.read_text()
    reference = REFERENCE.read_text()
    for key in every_key():
        assert re.search(rf"^\s*#?\s*(?:-\s*)?{key}:", example, re.M), f"{key} missing from {EXAMPLE.name}"
        assert f"`{key}`" in reference, f"{key} missing from {REFERENCE.name}"


# --- fuzz -----------------------------------------------------------------------------------------

WHERE = re.compile(rf"\A{re.escape(SOURCE)}:[0-9]+: ")
FUZZ = settings(max_examples=300, deadline=timedelta(seconds=2))


def parse_or_refuse(text: str) -> Optional[SettingsError]:
    """Parse; the only failure allowed is a one-line SettingsError naming file and line."""
    try:
        parse(text)
    except SettingsError as error:
        assert "\n" not in str(error)
        assert WHERE.match(str(error)), str(error)
        return error
    return None


KEYS = every_key() + ["nginx", "analysis", "rollouts", "app", "web", "<<"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10 ** 20), max_value=10 ** 20)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["10s", "250ms", "5m", "1h", "0", "100", "12.5", "/var/log/x", "backend", "10.0.0.12:8080",
                       "keep", "restore", "127.0.0.1:9145", "x" * 300, "a;b", "b\u0430ckend", HOOK,
                       "http://[::1]:80/", "http://a b", "slack", "json", "rolled_back", "check_failed"])
)
TREES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=5),
    max_leaves=25,
)


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_any_text(text):
    parse_or_refuse(text)


@FUZZ
@given(st.lists(st.sampled_from(["rollouts:", "  app:", "    upstream: backend", "    canary: [a]", "    analysis:",
                                 "      window: 1s", "nginx:", "  conf: /x", "- ", "&a ", "*a", "<<: ", "{", "}", "[",
                                 "]", ",", ":", "'", '"', "#", "\t", "!!", "---", "\n", " ", "?"]), max_size=40))
def test_fuzz_yaml_shaped_text(parts):
    parse_or_refuse("".join(parts))


@FUZZ
@given(TREES, st.booleans())
def test_fuzz_yaml_structures(tree, unicode):
    parse_or_refuse(yaml.safe_dump(tree, allow_unicode=unicode))


VALID: Dict[str, Any] = {
    "nginx": {"conf": "/etc/nginx/nginx.conf", "binary": "nginx", "prefix": None},
    "state_dir": "/var/lib/nginx-canary",
    "control_socket": "/run/nginx-canary/control.sock",
    "control_group": "nginx-canary",
    "metrics_listen": "127.0.0.1:9145",
    "rollouts": {"app": {
        "upstream": "backend", "canary": ["10.0.0.12:8080"], "access_log": "/var/log/nginx/access.log",
        "log_format": "canary", "steps": [10, 25, 50, 100], "step_interval": "60s", "on_success": "keep",
        "analysis": {"interval": "1s", "window": "30s", "min_requests": 20, "max_error_rate": 0.05,
                     "max_error_rate_increase": 0.02, "max_p99_latency": "1s", "max_p99_latency_ratio": 2.0,
                     "failure_threshold": 2, "http_checks": ["http://127.0.0.1:8082/health"]},
        "webhooks": [{"url": HOOK, "events": ["rolled_back"], "format": "slack", "timeout": "5s", "retries": 3}],
        "gates": {"pre_rollout": None, "confirm_step": "http://127.0.0.1:9000/ok", "confirm_promotion": None},
    }},
}


def paths(tree: Any, prefix: Tuple[str, ...] = ()) -> List[Tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += paths(value, prefix + (key,))
    return found


def test_valid_base_parses():
    app = parse(yaml.safe_dump(VALID)).rollouts["app"]
    assert app.analysis == AnalysisSettings(http_checks=(HttpCheckSettings(url="http://127.0.0.1:8082/health"),))
    assert app.webhooks == (WebhookSettings(url=HOOK, events=("rolled_back",), format="slack"),)
    assert app.gates == GateSettings(confirm_step="http://127.0.0.1:9000/ok")


@FUZZ
@given(st.sampled_from(paths(VALID)), TREES)
def test_fuzz_one_value_of_a_valid_config(path, value):
    tree = json.loads(json.dumps(VALID))
    owner = tree
    for key in path[:-1]:
        owner = owner[key]
    owner[path[-1]] = value
    error = parse_or_refuse(yaml.safe_dump(tree))
    if error is not None:
        # The error is about the value that changed, or something inside it.
        assert (error.key or "").startswith(".".join(path[:-1])), (path, str(error))
