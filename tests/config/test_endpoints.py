"""Webhooks, gates and HTTP checks: their defaults, URLs, events and limits."""

from __future__ import annotations

import json

import pytest

from nginx_canary.config.model import HttpCheckSettings, WebhookSettings
from nginx_canary.config.syntax import MAX_URL_LENGTH, url_problem
from tests.config.cases import HOOK, MINIMAL, assert_refused, parse, setting


def test_webhook_and_http_check_defaults():
    assert WebhookSettings(url=HOOK) == WebhookSettings(
        url=HOOK, events=("started", "step", "paused", "resumed", "promoted", "rolled_back", "aborted", "check_failed"),
        format="json", timeout=5.0, retries=3)
    assert HttpCheckSettings(url=HOOK) == HttpCheckSettings(url=HOOK, timeout=2.0)
    rollout = parse(MINIMAL + f"    webhooks:\n      - url: {HOOK}\n    analysis:\n      http_checks:\n"
                              f"        - url: {HOOK}\n").rollouts["app"]
    assert rollout.webhooks == (WebhookSettings(url=HOOK),)
    assert rollout.analysis.http_checks == (HttpCheckSettings(url=HOOK),)


@pytest.mark.parametrize("lines", ["    webhooks:\n", "    webhooks: []\n", "    gates:\n", "    gates: {}\n",
                                   "    analysis:\n      http_checks:\n", "    analysis:\n      http_checks: []\n"])
def test_empty_webhooks_gates_and_http_checks_mean_none(lines):
    assert parse(MINIMAL + lines) == parse(MINIMAL)


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
