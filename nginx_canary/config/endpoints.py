"""Reading the settings that name a URL: a rollout's webhooks, its gates and its analysis's HTTP checks."""

from __future__ import annotations

import difflib
from typing import Dict, List, Sequence, Tuple

import yaml

from nginx_canary.config.model import (
    WEBHOOK_EVENTS, GateSettings, HttpCheckSettings, WebhookFormat, WebhookSettings)
from nginx_canary.config.nodes import TEXT_TAGS, describe, is_list, is_null, join_key
from nginx_canary.config.reader import Entries, NodeReader, nullable
from nginx_canary.config.schema import GATE_KEYS, HTTP_CHECK_KEYS, WEBHOOK_KEYS
from nginx_canary.config.syntax import INTEGER, seconds, url_problem
from nginx_canary.text import quoted

#: Per rollout; each webhook has its own delivery thread, each HTTP check its own fetches.
MAX_WEBHOOKS = 16
MAX_HTTP_CHECKS = 16
MAX_RETRIES = 10
# A receiver or health endpoint slower than this is down, and a longer timeout
# would only hold its delivery thread (and the notifications behind it) longer.
MAX_HTTP_TIMEOUT = 60.0
WEBHOOK_FORMATS: Tuple[str, ...] = ("json", "slack")


class EndpointReader(NodeReader):
    """Reads ``webhooks``, ``gates`` and ``analysis.http_checks``; errors carry file, line and key."""

    def url(self, node: yaml.Node, key: str) -> str:
        """An ``http://`` or ``https://`` URL with a host (see :func:`~nginx_canary.config.syntax.url_problem`)."""
        text = self.text(node, key, "an http or https URL like 'https://hooks.example.com/canary'")
        problem = url_problem(text)
        if problem is not None:
            raise self.error(node, key, problem)
        return text

    def entry_list(self, node: yaml.Node, key: str, what: str, limit: int) -> List[Tuple[str, yaml.Node]]:
        """``(key path, node)`` per element of a list that may be empty (null counts as empty)."""
        if is_null(node):
            return []
        if not is_list(node):
            raise self.error(node, key, f"expected {what}, got {describe(node)}")
        if len(node.value) > limit:
            raise self.error(node.value[limit], f"{key}[{limit}]", f"at most {limit} entries are allowed here")
        return [(f"{key}[{index}]", item) for index, item in enumerate(node.value)]

    def url_entry(self, node: yaml.Node, key: str, known: Sequence[str], what: str) -> Tuple[str, Entries]:
        """A list entry that is either a URL or a mapping holding ``url``: the URL and the mapping's entries."""
        if isinstance(node, yaml.ScalarNode) and node.tag in TEXT_TAGS:
            return self.url(node, key), {}
        entries = self.entries(node, key, what, known)
        if "url" not in entries:
            raise self.error(node, key, "missing required key 'url'")
        return self.url(entries["url"][1], join_key(key, "url")), entries

    def webhooks(self, node: yaml.Node, key: str) -> Tuple[WebhookSettings, ...]:
        items = self.entry_list(node, key, "a list of webhooks like [{url: 'https://hooks.example.com/canary'}]",
                                MAX_WEBHOOKS)
        return tuple(self.webhook(item, item_key) for item_key, item in items)

    def webhook(self, node: yaml.Node, key: str) -> WebhookSettings:
        url, entries = self.url_entry(node, key, WEBHOOK_KEYS,
                                      "a webhook: a URL, or a mapping with url, events, format, timeout, retries")
        return self.fields(entries, key, WebhookSettings(url=url), {
            "events": self.events,
            "format": self.webhook_format,
            "timeout": self.http_timeout,
            "retries": self.retries,
        })

    def events(self, node: yaml.Node, key: str) -> Tuple[str, ...]:
        seen: Dict[str, str] = {}
        for item_key, item in self.items(node, key, "a list of events like [promoted, rolled_back]"):
            event = self.text(item, item_key, "an event name like 'rolled_back'")
            if event not in WEBHOOK_EVENTS:
                close = difflib.get_close_matches(event, WEBHOOK_EVENTS, n=1)
                hint = f", did you mean {close[0]!r}?" if close else ""
                raise self.error(item, item_key, f"unknown event {quoted(event)}{hint} "
                                                 f"(known: {', '.join(WEBHOOK_EVENTS)})")
            if event in seen:
                raise self.error(item, item_key, f"duplicate event {event!r} (also {seen[event]})")
            seen[event] = item_key
        return tuple(seen)

    def webhook_format(self, node: yaml.Node, key: str) -> WebhookFormat:
        return self.choice(node, key, WEBHOOK_FORMATS)  # type: ignore[return-value]

    def http_timeout(self, node: yaml.Node, key: str) -> float:
        value = self.duration(node, key)
        if value > MAX_HTTP_TIMEOUT:
            raise self.error(node, key, f"must be at most {seconds(MAX_HTTP_TIMEOUT)} (an endpoint slower than that "
                                        f"is down), got {seconds(value)}")
        return value

    def retries(self, node: yaml.Node, key: str) -> int:
        value = self.number(node, key, f"a whole number from 0 to {MAX_RETRIES} like 3", INTEGER)
        if not 0 <= value <= MAX_RETRIES:
            raise self.error(node, key, f"must be from 0 to {MAX_RETRIES}, got {node.value}")
        return int(value)

    def gates(self, node: yaml.Node, key: str) -> GateSettings:
        entries = self.section(node, key, GATE_KEYS, "a mapping of gate name to URL")
        return self.fields(entries, key, GateSettings(), {name: nullable(self.url) for name in GATE_KEYS})

    def http_checks(self, node: yaml.Node, key: str) -> Tuple[HttpCheckSettings, ...]:
        items = self.entry_list(node, key, "a list of URLs like ['http://127.0.0.1:8082/health']", MAX_HTTP_CHECKS)
        return tuple(self.http_check(item, item_key) for item_key, item in items)

    def http_check(self, node: yaml.Node, key: str) -> HttpCheckSettings:
        url, entries = self.url_entry(node, key, HTTP_CHECK_KEYS, "an HTTP check: a URL, or a mapping with url, timeout")
        return self.fields(entries, key, HttpCheckSettings(url=url), {"timeout": self.http_timeout})
