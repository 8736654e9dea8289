"""redact_url: what messages, history, state, reports and webhook bodies may show of a URL."""

from __future__ import annotations

import pytest

from nginx_canary.integrations.urls import UNREADABLE, redact_url


@pytest.mark.parametrize("url, shown", [
    ("http://a.example", "http://a.example:80"),
    ("https://a.example/", "https://a.example:443"),
    ("HTTPS://A.Example:8443/x", "https://a.example:8443"),
    ("https://u:p@a.example:8443/x/y?q=1#f", "https://a.example:8443"),
    ("https://user@a.example/hook", "https://a.example:443"),
    ("http://[::1]:8080/h?token=x", "http://[::1]:8080"),
    ("http://[::1]/h", "http://[::1]:80"),
    ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com:443"),
    ("http://127.0.0.1:9/gate#frag", "http://127.0.0.1:9"),
])
def test_scheme_host_and_port_only(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize("url", [
    "", "not a url", "/local/path", "http://", "http://a.example:99999/x", "http://[::1/x", "http:///secret",
    "http://u:secret@/x",
])
def test_anything_else_shows_nothing_of_it(url):
    assert redact_url(url) == UNREADABLE
