"""The daemon's configuration: one YAML file read into the frozen dataclasses of :mod:`nginx_canary.config.model`.

The file is parsed with ``yaml.compose`` (PyYAML's safe loader) into a node
tree that keeps line numbers, then walked against a fixed schema: nothing is
ever constructed from tags, so no YAML can build objects, and the walk only
descends where the schema does, so aliases cannot blow up into huge values.

Every error is a :class:`~nginx_canary.errors.SettingsError` whose message is
one line naming the file, the line and the key path::

    /etc/nginx-canary/config.yaml:14: rollouts.app.analysis.interval: expected a duration like 250ms, 10s or 5m, got '10 seconds'

Rules worth knowing (``docs/CONFIG.md`` is the full reference):

* Unknown keys, duplicate keys and YAML merge keys (``<<``) are errors at every
  level. Anchors and aliases (``&common`` / ``*common``) work.
* A section (``nginx``, ``rollouts``, ``analysis``) left empty means all its
  defaults. Any other key set to null is an error unless its default is null:
  leave the key out to get the default.
* Names and paths are taken exactly as written, quoted or not (``upstream:
  1.10`` is the upstream ``"1.10"``, not a number). Numbers must be written as
  plain decimals without quotes: ``0.05``, not ``"0.05"``, ``5e-2``, ``.05`` or
  ``true``.
* A duration is one decimal number with an optional unit, ``ms``, ``s``, ``m``
  or ``h``, and no space: ``250ms``, ``1.5s``, ``10s``, ``5m``, ``1h``; a bare
  number counts seconds. It has millisecond resolution and lies in
  (0, 720h]. Compound (``1h30m``), spelled-out (``5min``, ``10 seconds``) and
  exponent (``1e3s``) forms are refused.
* URLs (``webhooks``, ``gates``, ``analysis.http_checks``) are ``http://`` or
  ``https://`` with a host, printable ASCII without spaces or backslashes, at
  most 2048 characters (:func:`~nginx_canary.config.syntax.url_problem`).
  The two lists may be empty or left empty (no webhooks, no HTTP checks); an
  entry is a URL, or a mapping with ``url`` and its options.

This module reads the top level; the reader's core is
:mod:`~nginx_canary.config.reader`, the ``rollouts`` section
:mod:`~nginx_canary.config.rollouts`, the URL-bearing settings
:mod:`~nginx_canary.config.endpoints` and the ``fleet`` section
:mod:`~nginx_canary.config.fleet`.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

import yaml

from nginx_canary.config.fleet import FleetReader
from nginx_canary.config.model import DaemonSettings, NginxSettings
from nginx_canary.config.nodes import compose, is_null, join_key, printable_source
from nginx_canary.config.reader import NodeReader, nullable
from nginx_canary.config.rollouts import RolloutReader
from nginx_canary.config.schema import NGINX_KEYS, TOP_KEYS
from nginx_canary.config.syntax import PORT, is_host
from nginx_canary.errors import SettingsError
from nginx_canary.text import quoted

DEFAULT_CONFIG_PATH = "/etc/nginx-canary/config.yaml"
CONFIG_ENV = "NGINX_CANARY_CONFIG"
# A daemon config is a few kilobytes; refusing more catches a wrong --config
# (a log file, a binary) before PyYAML spends seconds on it.
MAX_CONFIG_BYTES = 1 << 20

_GROUP = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\Z")
_COMMAND = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.+-]{0,255}\Z")
# sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


def config_path(cli_value: Optional[str], environ: Mapping[str, str]) -> str:
    """Pick the config file: ``--config`` beats ``$NGINX_CANARY_CONFIG`` beats the default.

    An empty ``NGINX_CANARY_CONFIG`` counts as unset, as shells use ``VAR=`` to
    clear a variable.

    Raises:
        SettingsError: ``--config`` was given as an empty string.
    """
    if cli_value is not None:
        if not cli_value:
            raise SettingsError("--config must not be empty")
        return cli_value
    return environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load_settings(path: str) -> DaemonSettings:
    """Read and validate the config file at ``path``.

    Raises:
        SettingsError: the file cannot be read, is larger than 1 MiB, is not
            UTF-8, is not valid YAML, or breaks a rule of the schema.
    """
    where = printable_source(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"cannot read the config: {exc.strerror or exc}", file=where) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise SettingsError(f"the config is larger than {MAX_CONFIG_BYTES} bytes; is this the right file?", file=where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SettingsError(f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded", file=where, line=line) from exc
    return parse_settings(text, path)


def parse_settings(text: str, source: str) -> DaemonSettings:
    """Validate config ``text``; ``source`` names it in error messages (usually its path).

    Raises:
        SettingsError: the text is empty, not valid YAML, or breaks a rule of the schema.
    """
    root = compose(text, printable_source(source))
    if root is None or is_null(root):
        raise SettingsError("empty config", file=printable_source(source), line=1)
    return SettingsReader(printable_source(source)).daemon(root)


class SettingsReader(NodeReader):
    """Reads the top level and the ``nginx`` section; errors carry file, line and key."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.rollout_sections = RolloutReader(source)
        self.fleet_section = FleetReader(source)

    def daemon(self, root: yaml.Node) -> DaemonSettings:
        top = self.entries(root, "", "a mapping of settings at the top level", TOP_KEYS)
        return self.fields(top, "", DaemonSettings(), {
            "nginx": self.nginx,
            "state_dir": self.path,
            "control_socket": lambda n, k: self.path(n, k, max_bytes=MAX_SOCKET_PATH_BYTES),
            "control_group": nullable(self.group),
            "metrics_listen": nullable(self.listen),
            "allow_insecure_permissions": self.boolean,
            "rollouts": self.rollout_sections.rollouts,
            "fleet": self.fleet_section.fleet,
        })

    def nginx(self, node: yaml.Node, key: str) -> NginxSettings:
        entries = self.section(node, key, NGINX_KEYS, "a mapping")
        nginx = self.fields(entries, key, NginxSettings(), {
            "conf": self.conf_path,
            "binary": self.binary,
            "prefix": nullable(self.path),
        })
        if not nginx.conf.startswith("/") and (nginx.prefix is None or not nginx.conf.strip()):
            raise self.error(entries["conf"][1], join_key(key, "conf"),
                             f"expected an absolute path, or one relative to nginx.prefix (as nginx -p PREFIX -c "
                             f"CONF reads it) with a prefix set, got {quoted(nginx.conf)}")
        return nginx

    def conf_path(self, node: yaml.Node, key: str) -> str:
        """nginx's main file: absolute, or relative to ``nginx.prefix`` (checked by :meth:`nginx`)."""
        return self.path(node, key, relative=True)

    def binary(self, node: yaml.Node, key: str) -> str:
        text = self.text(node, key, "a command name or an absolute path")
        if text.startswith("/"):
            return self.path(node, key)
        if not _COMMAND.match(text):
            raise self.error(node, key, f"expected a command name like 'nginx' (looked up in PATH) or an absolute path, "
                                        f"got {quoted(text)}")
        return text

    def group(self, node: yaml.Node, key: str) -> str:
        text = self.text(node, key, "a group name or id")
        if not _GROUP.match(text):
            raise self.error(node, key, f"expected a group name or numeric id like 'nginx-canary', got {quoted(text)}")
        return text

    def listen(self, node: yaml.Node, key: str) -> str:
        text = self.text(node, key, "host:port like '127.0.0.1:9145'")
        host, colon, port = text.rpartition(":")
        if colon and PORT.match(port) and int(port) <= 65535 and is_host(host):
            return text
        raise self.error(node, key, f"expected host:port like '127.0.0.1:9145', '[::1]:9145' or 'localhost:9145' "
                                    f"(port 1 to 65535), got {quoted(text)}")
