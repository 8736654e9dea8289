"""Reading the ``fleet`` section: the etcd endpoints, the fleet's name, this host's id, TLS and credentials.

No error
ever shows the password, and none shows an endpoint URL whole (a mistyped one
may hold ``user:password@``): messages quote only the faulty part.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Callable, Dict, List, Optional, Tuple

import yaml

from nginx_canary.config.model import FleetSettings
from nginx_canary.config.nodes import join_key, line_of
from nginx_canary.config.reader import Entries, NodeReader, nullable
from nginx_canary.config.schema import FLEET_KEYS
from nginx_canary.config.syntax import PORT, url_problem
from nginx_canary.domain import validate_name
from nginx_canary.errors import BadInputError, SettingsError
from nginx_canary.text import quoted

#: An etcd cluster has 3 to 7 members; more endpoints than this is a mistake.
MAX_ENDPOINTS = 16
MAX_USER_LENGTH = 128
# What an endpoint written without a scheme may be quoted as (host:port and no more).
_SCHEME = re.compile(r"\A[A-Za-z][A-Za-z0-9+.-]{0,15}\Z")
_BARE_HOSTPORT = re.compile(r"\A[A-Za-z0-9.:\[\]-]{1,300}\Z")
ENDPOINT_EXAMPLE = "'https://10.0.0.5:2379'"
ON_HOST_LOST = ("pause", "rollback", "continue")
#: etcd leases are whole seconds; under 2 s a busy host drops out between two refreshes.
MIN_LEASE_TTL, MAX_LEASE_TTL = 2, 300


def is_loopback(host: str) -> bool:
    """``localhost``, an address in 127.0.0.0/8, or ``[::1]``: a link that never leaves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host[1:-1] if host.startswith("[") else host).is_loopback
    except ValueError:
        return False


def endpoint_host(text: str) -> str:
    """The host of an endpoint :meth:`FleetReader.endpoint` accepted (IPv6 keeps its brackets)."""
    hostport = text.partition("://")[2]
    return hostport.rpartition(":")[0]


class FleetReader(NodeReader):
    """Reads ``fleet``; errors carry file, line and key. ``hostname`` gives the default ``host``."""

    def __init__(self, source: str, hostname: Callable[[], str] = socket.gethostname) -> None:
        super().__init__(source)
        self.hostname = hostname

    def fleet(self, node: yaml.Node, key: str) -> FleetSettings:
        """The section; present, it needs at least ``etcd`` and ``name``.

        Raises:
            SettingsError: a key or value breaks a rule, a required key is
                missing, or keys that go together (or exclude each other) do not.
        """
        entries = self.section(node, key, FLEET_KEYS, "a mapping of fleet settings")
        for required in ("etcd", "name"):
            if required not in entries:
                raise self.error(node, key, f"missing required key {required!r}")
        host = "" if "host" in entries else self.default_host(node, key)
        settings = self.fields(entries, key, FleetSettings(etcd=(), name="", host=host), {
            "etcd": self.endpoints,
            "name": self.fleet_name,
            "host": self.host_id,
            "ca": nullable(self.path),
            "cert": nullable(self.path),
            "key": nullable(self.path),
            "user": nullable(self.user),
            "password": nullable(self.password),
            "password_file": nullable(self.path),
            "allow_plaintext": self.boolean,
            "on_host_lost": lambda n, k: self.choice(n, k, ON_HOST_LOST),
            "lease_ttl": self.lease_ttl,
        })
        self.check_together(settings, entries, key)
        return settings

    # -- values --------------------------------------------------------------

    def lease_ttl(self, node: yaml.Node, key: str) -> float:
        seconds = self.duration(node, key)
        if seconds != int(seconds) or not MIN_LEASE_TTL <= seconds <= MAX_LEASE_TTL:
            raise self.error(node, key, f"must be whole seconds from {MIN_LEASE_TTL}s to {MAX_LEASE_TTL}s")
        return seconds

    def endpoints(self, node: yaml.Node, key: str) -> Tuple[str, ...]:
        items = list(self.items(node, key, f"a list of etcd endpoints like [{ENDPOINT_EXAMPLE}]"))
        if len(items) > MAX_ENDPOINTS:
            item_key, item = items[MAX_ENDPOINTS]
            raise self.error(item, item_key, f"at most {MAX_ENDPOINTS} endpoints are allowed")
        seen: Dict[str, str] = {}
        endpoints: List[str] = []
        for item_key, item in items:
            endpoint = self.endpoint(item, item_key)
            if endpoint.lower() in seen:
                raise self.error(item, item_key, f"duplicate endpoint (also {seen[endpoint.lower()]})")
            seen[endpoint.lower()] = item_key
            endpoints.append(endpoint)
        return tuple(endpoints)

    def endpoint(self, node: yaml.Node, key: str) -> str:
        """``http://`` or ``https://``, then ``host:port`` and nothing else."""
        text = self.text(node, key, f"an etcd endpoint like {ENDPOINT_EXAMPLE}")
        scheme, separator, rest = text.partition("://")
        if not separator or scheme.lower() not in ("http", "https"):
            raise self.error(node, key, self.scheme_problem(text, scheme if separator else None))
        # Before url_problem: with a '/' in the password, it would quote a piece of it as the port.
        if "@" in rest:
            raise self.error(node, key, "an etcd endpoint holds no user:password@: set fleet.user and fleet.password "
                                        "instead")
        problem = url_problem(text)
        if problem is None and re.search(r"[/?#]", rest):
            problem = "an etcd endpoint is scheme://host:port and nothing more: no path (not even '/'), query or fragment"
        if problem is None and (rest.endswith("]") or not PORT.match(rest.rpartition(":")[2])):
            problem = f"an etcd endpoint needs a port, like {ENDPOINT_EXAMPLE} (etcd's client port is 2379)"
        if problem is not None:
            raise self.error(node, key, problem)
        return text

    @staticmethod
    def scheme_problem(text: str, scheme: Optional[str]) -> str:
        expected = f"expected an http:// or https:// endpoint like {ENDPOINT_EXAMPLE}"
        if scheme is not None:
            # Only a scheme-shaped one: `root:pw@host://` would quote the password.
            return f"{expected}, got the scheme {quoted(scheme)}" if _SCHEME.match(scheme) else expected
        if _BARE_HOSTPORT.match(text):
            return f"{expected}, got {quoted(text)} (no scheme)"
        return f"{expected}, got no scheme"

    def fleet_name(self, node: yaml.Node, key: str) -> str:
        text = self.text(node, key, "a fleet name like 'shop'")
        return self.named(node, key, "fleet name", text)

    def host_id(self, node: yaml.Node, key: str) -> str:
        text = self.text(node, key, "a host id like 'lb-1'")
        return self.named(node, key, "host id", text)

    def named(self, node: yaml.Node, key: str, kind: str, text: str) -> str:
        """``text`` under a rollout name's rules (it becomes part of a key in etcd)."""
        try:
            validate_name(text)
        except BadInputError:
            raise self.error(node, key, f"invalid {kind} {quoted(text)}: must be 1 to 64 ASCII letters, digits, "
                                        "'_', '.' or '-', starting with a letter or digit") from None
        return text

    def default_host(self, node: yaml.Node, key: str) -> str:
        hostname = self.hostname()
        try:
            return validate_name(hostname)
        except BadInputError:
            raise self.error(node, join_key(key, "host"),
                             f"this machine's hostname {quoted(hostname)} cannot be its host id (1 to 64 ASCII "
                             "letters, digits, '_', '.' or '-', starting with a letter or digit): "
                             "set fleet.host") from None

    def user(self, node: yaml.Node, key: str) -> str:
        text = self.text(node, key, "an etcd user name")
        if not 1 <= len(text) <= MAX_USER_LENGTH or not text.isprintable() or any(c.isspace() for c in text):
            raise self.error(node, key, f"expected an etcd user name of 1 to {MAX_USER_LENGTH} printable characters "
                                        f"without spaces, got {quoted(text)}")
        return text

    def password(self, node: yaml.Node, key: str) -> str:
        # Never quoted: a message may say what is wrong with it, not what it is.
        text = self.text(node, key, "a password (or use password_file)")
        if not text or not text.isprintable():
            raise self.error(node, key, "the password must be non-empty printable text (or use password_file)")
        return text

    # -- keys that go together ------------------------------------------------

    def check_together(self, settings: FleetSettings, entries: Entries, key: str) -> None:
        given = {name for name in ("cert", "key", "user", "password", "password_file")
                 if getattr(settings, name) is not None}

        def error(name: str, message: str) -> SettingsError:
            return self.error(entries[name][0], join_key(key, name), message)

        for one, other in (("cert", "key"), ("key", "cert")):
            if one in given and other not in given:
                raise error(one, f"{one} needs {other}: a client certificate and its key go together")
        if {"password", "password_file"} <= given:
            raise error("password_file", "password and password_file exclude each other: set one")
        for secret in ("password", "password_file"):
            if secret in given and "user" not in given:
                raise error(secret, f"{secret} needs user")
        if "user" in given and not given & {"password", "password_file"}:
            raise error("user", "user needs password or password_file")
        schemes = {endpoint.partition("://")[0].lower() for endpoint in settings.etcd}
        if len(schemes) > 1:
            raise error("etcd", "the endpoints mix http:// and https://: use one scheme for every endpoint")
        if schemes == {"http"}:
            self.check_plaintext(settings, entries, key)

    def check_plaintext(self, settings: FleetSettings, entries: Entries, key: str) -> None:
        for name in ("ca", "cert", "key"):
            if getattr(settings, name) is not None:
                raise self.error(entries[name][0], join_key(key, name),
                                 f"{name} is for TLS, but the endpoints are http://: use https://")
        if settings.allow_plaintext:
            return
        etcd = entries["etcd"][1]
        for index, endpoint in enumerate(settings.etcd):
            host = endpoint_host(endpoint)
            if not is_loopback(host):
                raise self.error(line_of(etcd.value[index]), f"{join_key(key, 'etcd')}[{index}]",
                                 f"plaintext http:// to {quoted(host)}, which is not loopback: credentials and "
                                 "rollout control would travel unencrypted on that link; use https://, or set "
                                 "fleet.allow_plaintext: true on a network you trust")
