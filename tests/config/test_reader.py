"""The reader's core: unknown, duplicate and merge keys, wrong types, aliases."""

from __future__ import annotations

import pytest

from tests.config.cases import DURATION, LEVELS, MINIMAL, assert_refused, parse, setting


# --- structure: unknown keys, duplicates, types ------------------------------------------------


@pytest.mark.parametrize("level, key, prefix, fragment", [
    ("top", "stat_dir", "", "unknown key 'stat_dir', did you mean 'state_dir'? (known: nginx, state_dir, "
                            "control_socket, control_group, metrics_listen, allow_insecure_permissions, rollouts, "
                            "fleet)"),
    ("top", "conf", "", "unknown key 'conf', it belongs under nginx"),
    ("top", "analysis", "", "unknown key 'analysis', it belongs under rollouts.NAME"),
    ("nginx", "config", "nginx", "unknown key 'config', did you mean 'conf'? (known: conf, binary, prefix)"),
    ("nginx", "state_dir", "nginx", "unknown key 'state_dir', it belongs under the top level"),
    ("rollout", "upstreams", "rollouts.app", "unknown key 'upstreams', did you mean 'upstream'? (known: upstream, "
                                             "context, canary, access_log, log_format, steps, step_interval, on_success, analysis, "
                                             "webhooks, gates, sticky)"),
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
    ("fleet", "endpoints", "fleet", "unknown key 'endpoints' (known: etcd, name, host, ca, cert, key, user, password, "
                                    "password_file, allow_plaintext, on_host_lost, lease_ttl)"),
    ("fleet", "allow_plain", "fleet", "did you mean 'allow_plaintext'?"),
    ("fleet", "upstream", "fleet", "unknown key 'upstream', it belongs under rollouts.NAME"),
    ("top", "etcd", "", "unknown key 'etcd', it belongs under fleet"),
    ("rollout", "name", "rollouts.app", "unknown key 'name' (known: upstream,"),
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
