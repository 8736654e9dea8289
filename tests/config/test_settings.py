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

from nginx_canary.errors import ExitCode, SettingsError
from nginx_canary.config.model import (
    WEBHOOK_EVENTS,
    AnalysisSettings,
    DaemonSettings,
    FleetSettings,
    GateSettings,
    HttpCheckSettings,
    NginxSettings,
    RolloutSettings,
    WebhookSettings,
)
from nginx_canary.config.settings import (
    CONFIG_ENV, DEFAULT_CONFIG_PATH, MAX_CONFIG_BYTES, config_path, load_settings)
from nginx_canary.config.syntax import MAX_URL_LENGTH
from tests.config.cases import DURATION, HOOK, LEVELS, MINIMAL, SOURCE, assert_refused, parse, refused, read_back, setting

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "conf.d" / "nginx-canary.example.yaml"
REFERENCE = ROOT / "docs" / "CONFIG.md"

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


@pytest.mark.parametrize("text", ["nginx:\n", "nginx: {}\n", "rollouts:\n", "rollouts: {}\n"])
def test_empty_sections_mean_their_defaults(text):
    assert parse(text) == DaemonSettings()


def test_settings_are_frozen():
    parsed = parse(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.state_dir = "/tmp"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.rollouts["app"].analysis.window = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.rollouts["other"] = parsed.rollouts["app"]  # type: ignore[index]


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
    ("analysis", "max_step_wait", "10m", 600.0),
    ("analysis", "max_step_wait", "90", 90.0),
    ("analysis", "max_step_wait", "null", None),
    ("analysis", "max_step_wait", "~", None),
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
    # tolerance: a share of stable's rate, 0 or more (may exceed 1)
    ("analysis", "error_rate_tolerance", "0", 0.0),
    ("analysis", "error_rate_tolerance", "0.25", 0.25),
    ("analysis", "error_rate_tolerance", "3", 3.0),
    # risks: above 0, below 0.5
    ("analysis", "risk", "0.01", 0.01),
    ("analysis", "risk", "0.0001", 0.0001),
    ("analysis", "risk", "0.499", 0.499),
    ("analysis", "promotion_risk", "0.05", 0.05),
    ("analysis", "promotion_risk", "0.001", 0.001),
    ("analysis", "promotion_risk", "0.2", 0.2),
    # ratio
    ("analysis", "max_p99_latency_ratio", "1", 1.0),
    ("analysis", "max_p99_latency_ratio", "1.5", 1.5),
    ("analysis", "max_p99_latency_ratio", "10", 10.0),
    ("analysis", "max_p50_latency_ratio", "1", 1.0),
    ("analysis", "max_p50_latency_ratio", "1.1", 1.1),
    ("analysis", "max_p50_latency_ratio", "3", 3.0),
    # steps
    ("rollout", "steps", "[100]", (Fraction(100),)),
    ("rollout", "steps", "[0.5, 12.5, 33.33, 100]", (Fraction(1, 2), Fraction(25, 2), Fraction(3333, 100), Fraction(100))),
    ("rollout", "steps", "[1, 100.00]", (Fraction(1), Fraction(100))),
    ("rollout", "steps", "[0.01, 99.99, 100]", (Fraction(1, 100), Fraction(9999, 100), Fraction(100))),
    # on_success
    ("rollout", "on_success", "keep", "keep"),
    ("rollout", "context", "http", "http"),
    ("rollout", "context", "stream", "stream"),
    ("rollout", "on_success", "restore", "restore"),
    ("rollout", "on_success", "'restore'", "restore"),
    ("rollout", "sticky", "true", True),
    ("rollout", "sticky", "false", False),
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
    ("top", "fleet", "{etcd: [https://10.0.0.5:2379], name: shop, host: lb-1}",
     FleetSettings(etcd=("https://10.0.0.5:2379",), name="shop", host="lb-1")),  # the rest: tests/config/test_fleet.py
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


def test_block_style_lists():
    text = MINIMAL.replace('canary: ["10.0.0.12:8080"]', "canary:\n      - 10.0.0.12:8080\n      - 10.0.0.13:8080")
    text += "    steps:\n      - 50\n      - 100\n"
    rollout = parse(text).rollouts["app"]
    assert rollout.canary == ("10.0.0.12:8080", "10.0.0.13:8080")
    assert rollout.steps == (50, 100)


# --- every value rule: bad --------------------------------------------------------

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
    ("analysis", "window", "null", DURATION + "null"),
    ("analysis", "max_step_wait", "0", "must be greater than 0, got '0'"),
    ("analysis", "max_step_wait", "-1m", "must be greater than 0"),
    ("analysis", "max_step_wait", "721h", "must be at most 720h"),
    ("analysis", "max_step_wait", "forever", DURATION + "'forever'"),
    ("analysis", "max_step_wait", "[10m]", DURATION + "a list"),
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
    # tolerance
    ("analysis", "error_rate_tolerance", "-0.1", "must be 0 or more (0.25 = 25 % above stable's rate), got -0.1"),
    ("analysis", "error_rate_tolerance", "25%", "expected a share like 0.25 (the canary's rate may be 25 % above "
                                                "stable's), got '25%'"),
    ("analysis", "error_rate_tolerance", ".inf", "got the number .inf"),
    ("analysis", "error_rate_tolerance", "'0.25'", "(numbers are written without quotes)"),
    ("analysis", "error_rate_tolerance", "null", "got null"),
    # risks
    ("analysis", "risk", "0", "must be above 0 and below 0.5 (0.01 = 1 %), got 0"),
    ("analysis", "risk", "0.5", "must be above 0 and below 0.5 (0.01 = 1 %), got 0.5"),
    ("analysis", "risk", "-0.01", "must be above 0 and below 0.5"),
    ("analysis", "risk", "1%", "expected a chance from 0 to 0.5 like 0.01 (1 %), got '1%'"),
    ("analysis", "risk", "true", "got the boolean true"),
    ("analysis", "risk", "null", "got null"),
    ("analysis", "promotion_risk", "0.0", "must be above 0 and below 0.5"),
    ("analysis", "promotion_risk", "0.75", "must be above 0 and below 0.5 (0.01 = 1 %), got 0.75"),
    ("analysis", "promotion_risk", "5e-2", "got '5e-2'"),
    ("analysis", "promotion_risk", "null", "got null"),
    # ratio
    ("analysis", "max_p99_latency_ratio", "0.99", "must be at least 1 (canary p99 divided by stable p99), got 0.99"),
    ("analysis", "max_p99_latency_ratio", "0", "must be at least 1"),
    ("analysis", "max_p99_latency_ratio", "-1", "must be at least 1"),
    ("analysis", "max_p99_latency_ratio", "yes", "expected a ratio like 2.0, got the boolean yes"),
    ("analysis", "max_p99_latency_ratio", ".inf", "got the number .inf"),
    ("analysis", "max_p50_latency_ratio", "0.9", "must be at least 1"),
    ("analysis", "max_p50_latency_ratio", "'1.1'", "(numbers are written without quotes)"),
    ("analysis", "max_p50_latency_ratio", "null", "got null"),
    # steps, as a whole
    ("rollout", "steps", "[]", "expected a list of percents like [10, 25, 50, 100], got an empty list"),
    ("rollout", "steps", "50", "expected a list of percents like [10, 25, 50, 100], got the number 50"),
    ("rollout", "steps", "null", "got null"),
    ("rollout", "steps", "{a: 1}", "got a mapping"),
    # on_success
    ("rollout", "on_success", "Keep", "expected keep or restore, got 'Keep'"),
    ("rollout", "context", "mail", "expected http or stream, got 'mail'"),
    ("rollout", "context", "HTTP", "expected http or stream, got 'HTTP'"),
    ("rollout", "on_success", "rollback", "expected keep or restore, got 'rollback'"),
    ("rollout", "on_success", "true", "expected keep or restore, got the boolean true"),
    ("rollout", "on_success", "null", "got null"),
    ("rollout", "on_success", "[keep]", "got a list"),
    ("rollout", "sticky", "yes", "expected true or false, got the boolean yes"),
    ("rollout", "sticky", "'true'", "expected true or false, got 'true'"),
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
    ("nginx", "conf", "nginx.conf", "expected an absolute path, or one relative to nginx.prefix (as nginx -p "
                                    "PREFIX -c CONF reads it) with a prefix set, got 'nginx.conf'"),
    ("nginx", "conf", "null", "expected a path, got null"),
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
    ("top", "fleet", "[https://10.0.0.5:2379]", "expected a mapping of fleet settings, got a list"),
    ("top", "fleet", "null", "missing required key 'etcd'"),
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
                                GateSettings, HttpCheckSettings, FleetSettings)
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
                     "error_rate_tolerance": 0, "max_error_rate_increase": 0.02, "max_p99_latency": "1s",
                     "max_p99_latency_ratio": 2.0, "max_p50_latency_ratio": 1.1, "risk": 0.01,
                     "promotion_risk": 0.05, "max_step_wait": None, "failure_threshold": 1,
                     "http_checks": ["http://127.0.0.1:8082/health"]},
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
    # Every analysis value is its default; window is still read (and kept), though no check uses it.
    assert app.analysis == AnalysisSettings(window=30.0,
                                            http_checks=(HttpCheckSettings(url="http://127.0.0.1:8082/health"),))
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
