"""The `fleet` section: every key with good and bad cases, the keys that go together, the hostname default, secrets."""

from __future__ import annotations

import dataclasses
import socket
from typing import Dict, Optional, Tuple

import pytest
import yaml

from nginx_canary.config.fleet import FleetReader, is_loopback
from nginx_canary.config.model import DaemonSettings, FleetSettings
from nginx_canary.domain import is_rollout_name
from nginx_canary.errors import SettingsError
from tests.config.cases import MINIMAL, SOURCE, assert_refused, parse, refused

ETCD = "[https://10.0.0.5:2379]"
BASE: Dict[str, str] = {"etcd": ETCD, "name": "shop", "host": "lb-1"}
PASSWORD = "Hunter2-s3cr3t"
FILES = {"ca": "/etc/nginx-canary/etcd-ca.pem", "cert": "/etc/nginx-canary/etcd.pem", "key": "/etc/nginx-canary/etcd.key"}


def fleet_text(**keys: Optional[str]) -> Tuple[str, Dict[str, int]]:
    """A config with a `fleet` section: BASE with ``keys`` set (None leaves one out), and each key's line."""
    values = {**BASE, **keys}
    lines = {}
    text = MINIMAL + "fleet:\n"
    for index, (key, value) in enumerate((k, v) for k, v in values.items() if v is not None):
        lines[key] = MINIMAL.count("\n") + 2 + index
        text += f"  {key}: {value}\n"
    return text, lines


def parsed_fleet(**keys: Optional[str]) -> FleetSettings:
    fleet = parse(fleet_text(**keys)[0]).fleet
    assert fleet is not None
    return fleet


def test_without_the_section_there_is_no_fleet():
    assert parse(MINIMAL).fleet is None
    assert DaemonSettings().fleet is None


def test_the_issues_example():
    text = MINIMAL + 'fleet:\n  etcd: ["http://10.0.0.5:2379"]\n  name: shop\n  host: lb-1\n  allow_plaintext: true\n'
    assert parse(text).fleet == FleetSettings(etcd=("http://10.0.0.5:2379",), name="shop", host="lb-1",
                                              allow_plaintext=True)


# --- every key: good ------------------------------------------------------------------

GOOD = [
    ({"etcd": "[https://10.0.0.5:2379]"}, "etcd", ("https://10.0.0.5:2379",)),
    ({"etcd": "[https://a.example:2379, 'https://[fd00::1]:2379', HTTPS://B.example:1]"}, "etcd",
     ("https://a.example:2379", "https://[fd00::1]:2379", "HTTPS://B.example:1")),
    ({"etcd": "\n    - https://etcd-1.internal:2379\n    - https://etcd-2.internal:2379"}, "etcd",
     ("https://etcd-1.internal:2379", "https://etcd-2.internal:2379")),
    ({"etcd": "[http://127.0.0.1:2379]"}, "etcd", ("http://127.0.0.1:2379",)),
    ({"etcd": "[http://127.8.9.10:2379, 'http://[::1]:2379', http://LocalHost:2379]"}, "etcd",
     ("http://127.8.9.10:2379", "http://[::1]:2379", "http://LocalHost:2379")),
    ({"name": "shop"}, "name", "shop"),
    ({"name": "eu-west_1.shop"}, "name", "eu-west_1.shop"),
    ({"name": "'2024'"}, "name", "2024"),
    ({"host": "lb-1"}, "host", "lb-1"),
    ({"host": "lb-1.eu.example.com"}, "host", "lb-1.eu.example.com"),
    ({"host": "h" * 64}, "host", "h" * 64),
    ({**FILES}, "ca", FILES["ca"]),
    ({"ca": "null"}, "ca", None),
    ({**FILES}, "cert", FILES["cert"]),
    ({"cert": "~", "key": "~"}, "cert", None),
    ({**FILES}, "key", FILES["key"]),
    ({"user": "root", "password": PASSWORD}, "user", "root"),
    ({"user": "null"}, "user", None),
    ({"user": "nginx-canary", "password": PASSWORD}, "password", PASSWORD),
    ({"user": "u", "password": "1234"}, "password", "1234"),
    ({"user": "u", "password": "'p@ss: w/rd#'"}, "password", "p@ss: w/rd#"),
    ({"user": "u", "password_file": "/etc/nginx-canary/etcd.password"}, "password_file",
     "/etc/nginx-canary/etcd.password"),
    ({"password_file": "null"}, "password_file", None),
    ({"etcd": "[http://10.0.0.5:2379]", "allow_plaintext": "true"}, "allow_plaintext", True),
    ({"allow_plaintext": "false"}, "allow_plaintext", False),
    ({"etcd": "[https://10.0.0.5:2379]", "allow_plaintext": "true"}, "allow_plaintext", True),
    ({}, "on_host_lost", "pause"),
    ({"on_host_lost": "rollback"}, "on_host_lost", "rollback"),
    ({"on_host_lost": "continue"}, "on_host_lost", "continue"),
    ({}, "lease_ttl", 5.0),
    ({"lease_ttl": "2s"}, "lease_ttl", 2.0),
    ({"lease_ttl": "5m"}, "lease_ttl", 300.0),
    ({"lease_ttl": "10"}, "lease_ttl", 10.0),
]


@pytest.mark.parametrize("keys, field, expected", GOOD)
def test_good_value(keys, field, expected):
    assert getattr(parsed_fleet(**keys), field) == expected


# --- every key: bad --------------------------------------------------------------------

NAME_RULE = "must be 1 to 64 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit"
PLAINTEXT = ("plaintext http:// to '10.0.0.5', which is not loopback: credentials and rollout control would travel "
             "unencrypted on that link; use https://, or set fleet.allow_plaintext: true on a network you trust")
# (keys, the key whose line is blamed, the key path after `fleet.`, fragment)
BAD = [
    ({"etcd": "[]"}, "etcd", "etcd", "expected a list of etcd endpoints like ['https://10.0.0.5:2379'], got an empty list"),
    ({"etcd": "https://10.0.0.5:2379"}, "etcd", "etcd", "expected a list of etcd endpoints"),
    ({"etcd": "null"}, "etcd", "etcd", "got null"),
    ({"etcd": "[[https://a:1]]"}, "etcd", "etcd[0]", "expected an etcd endpoint like 'https://10.0.0.5:2379', "
                                                    "got a list"),
    ({"etcd": "[10.0.0.5:2379]"}, "etcd", "etcd[0]", "expected an http:// or https:// endpoint like "
                                                     "'https://10.0.0.5:2379', got '10.0.0.5:2379' (no scheme)"),
    ({"etcd": "['etcd://10.0.0.5:2379']"}, "etcd", "etcd[0]", "got the scheme 'etcd'"),
    ({"etcd": "['unix:/run/etcd.sock']"}, "etcd", "etcd[0]", "got no scheme"),
    ({"etcd": "[https://10.0.0.5]"}, "etcd", "etcd[0]", "an etcd endpoint needs a port, like 'https://10.0.0.5:2379' "
                                                        "(etcd's client port is 2379)"),
    ({"etcd": "['https://[::1]']"}, "etcd", "etcd[0]", "needs a port"),
    ({"etcd": "[https://10.0.0.5:2379/]"}, "etcd", "etcd[0]", "an etcd endpoint is scheme://host:port and nothing "
                                                              "more: no path (not even '/'), query or fragment"),
    ({"etcd": "[https://10.0.0.5:2379/v3]"}, "etcd", "etcd[0]", "no path"),
    ({"etcd": "['https://10.0.0.5:2379?x=1']"}, "etcd", "etcd[0]", "no path"),
    ({"etcd": "['https://root:pw@10.0.0.5:2379']"}, "etcd", "etcd[0]", "an etcd endpoint holds no user:password@: set "
                                                                       "fleet.user and fleet.password instead"),
    ({"etcd": "['https://10.0.0.5:0']"}, "etcd", "etcd[0]", "has an invalid port '0' (1 to 65535)"),
    ({"etcd": "['https://bad_host:2379']"}, "etcd", "etcd[0]", "has an invalid host 'bad_host'"),
    ({"etcd": "['https://a b:2379']"}, "etcd", "etcd[0]", "contains the character ' '"),
    ({"etcd": "[https://a:1, https://b:1, HTTPS://A:1]"}, "etcd", "etcd[2]", "duplicate endpoint (also fleet.etcd[0])"),
    ({"etcd": "[" + ", ".join(f"https://e{n}:2379" for n in range(17)) + "]"}, "etcd", "etcd[16]",
     "at most 16 endpoints are allowed"),
    ({"etcd": "[https://a:2379, http://127.0.0.1:2379]"}, "etcd", "etcd",
     "the endpoints mix http:// and https://: use one scheme for every endpoint"),
    ({"etcd": "[http://10.0.0.5:2379]"}, "etcd", "etcd[0]", PLAINTEXT),
    ({"etcd": "[http://127.0.0.1:2379, http://etcd.internal:2379]"}, "etcd", "etcd[1]",
     "plaintext http:// to 'etcd.internal', which is not loopback"),
    ({"etcd": "[http://localhost.example:2379]"}, "etcd", "etcd[0]", "which is not loopback"),
    ({"etcd": "['http://[::2]:2379']"}, "etcd", "etcd[0]", "plaintext http:// to '[::2]'"),
    ({"name": "''"}, "name", "name", f"invalid fleet name '': {NAME_RULE}"),
    ({"name": "shop/eu"}, "name", "name", f"invalid fleet name 'shop/eu': {NAME_RULE}"),
    ({"name": ".hidden"}, "name", "name", "invalid fleet name '.hidden'"),
    ({"name": "n" * 65}, "name", "name", "invalid fleet name"),
    ({"name": "null"}, "name", "name", "expected a fleet name like 'shop', got null"),
    ({"name": "[shop]"}, "name", "name", "got a list"),
    ({"host": "'lb 1'"}, "host", "host", f"invalid host id 'lb 1': {NAME_RULE}"),
    ({"host": "h" * 65}, "host", "host", "invalid host id"),
    ({"host": "null"}, "host", "host", "expected a host id like 'lb-1', got null"),
    ({"ca": "etcd-ca.pem"}, "ca", "ca", "expected an absolute path, got 'etcd-ca.pem'"),
    ({"ca": FILES["ca"], "etcd": "[http://127.0.0.1:2379]"}, "ca", "ca",
     "ca is for TLS, but the endpoints are http://: use https://"),
    ({"cert": "[/a]", "key": "/b"}, "cert", "cert", "expected an absolute path, got a list"),
    ({"cert": FILES["cert"]}, "cert", "cert", "cert needs key: a client certificate and its key go together"),
    ({"cert": FILES["cert"], "key": FILES["key"], "etcd": "[http://localhost:2379]"}, "cert", "cert",
     "cert is for TLS, but the endpoints are http://"),
    ({"key": "relative.key", "cert": "/c"}, "key", "key", "expected an absolute path"),
    ({"key": FILES["key"]}, "key", "key", "key needs cert"),
    ({"user": "'a b'", "password": PASSWORD}, "user", "user", "expected an etcd user name of 1 to 128 printable "
                                                              "characters without spaces, got 'a b'"),
    ({"user": "''", "password": PASSWORD}, "user", "user", "expected an etcd user name"),
    ({"user": "[root]", "password": PASSWORD}, "user", "user", "got a list"),
    ({"user": "root"}, "user", "user", "user needs password or password_file"),
    ({"password": PASSWORD}, "password", "password", "password needs user"),
    ({"user": "u", "password": "''"}, "password", "password", "the password must be non-empty printable text "
                                                              "(or use password_file)"),
    ({"user": "u", "password": '"a\\tb"'}, "password", "password", "must be non-empty printable text"),
    ({"user": "u", "password": "[x]"}, "password", "password", "expected a password (or use password_file), got a list"),
    ({"password_file": "/p"}, "password_file", "password_file", "password_file needs user"),
    ({"user": "u", "password_file": "pw.txt"}, "password_file", "password_file", "expected an absolute path"),
    ({"user": "u", "password": PASSWORD, "password_file": "/p"}, "password_file", "password_file",
     "password and password_file exclude each other: set one"),
    ({"allow_plaintext": "yes"}, "allow_plaintext", "allow_plaintext", "expected true or false, got the boolean yes"),
    ({"allow_plaintext": "null"}, "allow_plaintext", "allow_plaintext", "got null"),
    ({"on_host_lost": "stop"}, "on_host_lost", "on_host_lost", "stop"),
    ({"lease_ttl": "1s"}, "lease_ttl", "lease_ttl", "must be whole seconds from 2s to 300s"),
    ({"lease_ttl": "2500ms"}, "lease_ttl", "lease_ttl", "must be whole seconds"),
    ({"lease_ttl": "6m"}, "lease_ttl", "lease_ttl", "to 300s"),
    ({"lease_ttl": "soon"}, "lease_ttl", "lease_ttl", "expected"),
]


@pytest.mark.parametrize("keys, blamed, key, fragment", BAD)
def test_bad_value(keys, blamed, key, fragment):
    text, lines = fleet_text(**keys)
    error = assert_refused(text, lines[blamed], f"fleet.{key}", fragment)
    assert PASSWORD not in str(error)


def test_every_key_has_good_and_bad_cases():
    every = {f.name for f in dataclasses.fields(FleetSettings)}
    assert every - {field for _, field, _ in GOOD} == set()
    assert every - {blamed for _, blamed, _, _ in BAD} == set()


@pytest.mark.parametrize("text, line, key, fragment", [
    (MINIMAL + "fleet:\n", 5, "fleet", "missing required key 'etcd'"),
    (MINIMAL + "fleet: {}\n", 5, "fleet", "missing required key 'etcd'"),
    (MINIMAL + "fleet:\n  etcd: [https://a:1]\n", 6, "fleet", "missing required key 'name'"),
    (MINIMAL + "fleet:\n  name: shop\n", 6, "fleet", "missing required key 'etcd'"),
    (MINIMAL + "fleet: [https://a:1]\n", 5, "fleet", "expected a mapping of fleet settings, got a list"),
    (MINIMAL + "fleet: shop\n", 5, "fleet", "expected a mapping of fleet settings, got 'shop'"),
    (MINIMAL + "fleet:\n  etcd: [https://a:1]\n  name: shop\n  etcd: [https://b:1]\n", 8, "fleet",
     "duplicate key 'etcd' (first on line 6)"),
])
def test_bad_section(text, line, key, fragment):
    assert_refused(text, line, key, fragment)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.255.0.9", True), ("[::1]", True), ("localhost", True), ("LOCALHOST", True),
    ("10.0.0.5", False), ("[::2]", False), ("localhost.localdomain", False), ("128.0.0.1", False),
    ("[::ffff:127.0.0.1]", False), ("0.0.0.0", False),
])
def test_loopback(host, loopback):
    assert is_loopback(host) is loopback


# --- the host id's default: the hostname -----------------------------------------------------


def read_fleet(text: str, hostname: str) -> FleetSettings:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    return FleetReader(SOURCE, hostname=lambda: hostname).fleet(node, "fleet")


def test_host_defaults_to_the_hostname():
    assert read_fleet("etcd: [https://a:1]\nname: shop\n", "lb-7.example.com").host == "lb-7.example.com"
    # A host id written out wins, even over a hostname that could not be one.
    assert read_fleet("etcd: [https://a:1]\nname: shop\nhost: lb-1\n", "bad host").host == "lb-1"


@pytest.mark.parametrize("hostname", ["", "bad host", "h" * 65, "-lead"])
def test_a_hostname_that_cannot_be_a_host_id_says_to_set_host(hostname):
    with pytest.raises(SettingsError) as info:
        read_fleet("etcd: [https://a:1]\nname: shop\n", hostname)
    assert str(info.value).startswith(f"{SOURCE}:1: fleet.host: this machine's hostname ")
    assert str(info.value).endswith("cannot be its host id (1 to 64 ASCII letters, digits, '_', '.' or '-', starting "
                                    "with a letter or digit): set fleet.host")


def test_parse_settings_uses_this_machines_hostname():
    text = fleet_text(host=None)[0]
    if is_rollout_name(socket.gethostname()):
        assert parse(text).fleet.host == socket.gethostname()
    else:
        assert "set fleet.host" in str(refused(text))


# --- secrets --------------------------------------------------------------------------------


def test_the_password_is_in_no_repr():
    settings = parse(fleet_text(user="root", password=PASSWORD)[0])
    assert settings.fleet is not None and settings.fleet.password == PASSWORD
    for shown in (repr(settings), str(settings), repr(settings.fleet), str(settings.fleet)):
        assert PASSWORD not in shown
        assert "user='root'" in shown


@pytest.mark.parametrize("keys", [
    {"user": "root", "password": PASSWORD, "password_file": "/p"},
    {"password": PASSWORD},
    {"user": "''", "password": PASSWORD},
    {"user": "u", "password": PASSWORD, "etcd": "[http://10.0.0.5:2379]"},
    {"user": "u", "password": PASSWORD, "ca": "/ca", "etcd": "[http://127.0.0.1:2379]"},
    {"user": "u", "password": f'"{PASSWORD}\\u2028"'},
    {"user": "u", "password": PASSWORD, "allow_plaintext": "maybe"},
    {"etcd": f"['https://root:{PASSWORD}@10.0.0.5:2379']"},
    {"etcd": f"['https://root:{PASSWORD}/x@10.0.0.5:2379']"},
    {"etcd": f"['https://10.0.0.5:2379/?password={PASSWORD}']"},
    {"etcd": f"['etcd://root:{PASSWORD}@10.0.0.5:2379']"},
    {"etcd": f"['root:{PASSWORD}@10.0.0.5:2379']"},
    {"etcd": f"['root:{PASSWORD}@10.0.0.5://x']"},
])
def test_no_error_shows_the_password(keys):
    error = refused(fleet_text(**keys)[0])
    assert PASSWORD not in str(error)
    assert PASSWORD[:6] not in str(error)
