"""Who may use the demo app's admin endpoint: loopback peers and hosts, no forwarding headers."""

from __future__ import annotations

from email.message import Message

import pytest

from nginx_canary.demo.admin_access import admin_refusal, is_loopback_address


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.0.2.2", False), ("0.0.0.0", False), ("::", False), ("fd00::2", False),
    ("::ffff:10.0.0.1", False), ("localhost", False), ("", False), ("not an address", False),
])
def test_is_loopback_address(host, loopback):
    assert is_loopback_address(host) is loopback


def _headers(**items: str) -> Message:
    msg = Message()
    for name, value in items.items():
        msg[name.replace("_", "-")] = value
    return msg


@pytest.mark.parametrize("peer, headers, refused", [
    ("127.0.0.1", _headers(Host="127.0.0.1:8080"), False),
    ("::1", _headers(Host="[::1]:8080"), False),
    ("127.0.0.1", _headers(Host="localhost"), False),
    ("192.0.2.7", _headers(Host="127.0.0.1:8080"), True),
    ("127.0.0.1", _headers(Host="127.0.0.1:8080", X_Forwarded_For="192.0.2.7"), True),
    ("127.0.0.1", _headers(Host="127.0.0.1:8080", Forwarded="for=192.0.2.7"), True),
    ("127.0.0.1", _headers(Host="127.0.0.1:8080", Via="1.1 proxy"), True),
    ("127.0.0.1", _headers(Host="backend"), True),  # nginx's default Host for proxy_pass http://backend
    ("127.0.0.1", _headers(Host="evil.example:8080"), True),  # DNS rebinding
    ("127.0.0.1", _headers(), True),
])
def test_admin_refusal(peer, headers, refused):
    assert (admin_refusal(peer, headers) is not None) is refused
