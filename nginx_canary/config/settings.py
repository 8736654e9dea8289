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
  most 2048 characters (:func:`url_problem`). The two lists may be empty or
  left empty (no webhooks, no HTTP checks); an entry is a URL, or a mapping
  with ``url`` and its options.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from fractions import Fraction
from types import MappingProxyType
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import yaml

from nginx_canary.domain import MAX_DURATION_MS, StepError, check_steps, validate_name
from nginx_canary.errors import BadInputError, SettingsError
from nginx_canary.inputs import check_word, parse_percent
from nginx_canary.text import quoted
from nginx_canary.config.model import (
    OnSuccess,
    WEBHOOK_EVENTS,
    WebhookFormat,
    NginxSettings,
    HttpCheckSettings,
    AnalysisSettings,
    WebhookSettings,
    GateSettings,
    RolloutSettings,
    DaemonSettings,
)

DEFAULT_CONFIG_PATH = "/etc/nginx-canary/config.yaml"
CONFIG_ENV = "NGINX_CANARY_CONFIG"
# A daemon config is a few kilobytes; refusing more catches a wrong --config
# (a log file, a binary) before PyYAML spends seconds on it.
MAX_CONFIG_BYTES = 1 << 20

ON_SUCCESS_CHOICES: Tuple[str, ...] = ("keep", "restore")
#: The longest URL accepted: longer ones are refused by many servers and proxies anyway.
MAX_URL_LENGTH = 2048
#: Per rollout; each webhook has its own delivery thread, each HTTP check its own fetches.
MAX_WEBHOOKS = 16
MAX_HTTP_CHECKS = 16
MAX_RETRIES = 10
# A receiver or health endpoint slower than this is down, and a longer timeout
# would only hold its delivery thread (and the notifications behind it) longer.
MAX_HTTP_TIMEOUT = 60.0
WEBHOOK_FORMATS: Tuple[str, ...] = ("json", "slack")


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
    where = _printable(path)
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
    root = _compose(text, _printable(source))
    if root is None or _is_null(root):
        raise SettingsError("empty config", file=_printable(source), line=1)
    return _Reader(_printable(source)).daemon(root)


# ---------------------------------------------------------------------------
# YAML nodes

_CORE = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _MERGE, _MAP, _SEQ = (
    _CORE + t for t in ("str", "int", "float", "bool", "null", "merge", "map", "seq"))
# Scalars whose text is taken as written where a name or path is expected:
# YAML 1.1 guesses types from spelling, and a user who writes `upstream: 1.10`
# or `control_group: 1000` means those characters.
_TEXT_TAGS = frozenset((_STR, _INT, _FLOAT, _BOOL, _CORE + "timestamp"))
_NUMBER_TAGS = frozenset((_INT, _FLOAT))


def _compose(text: str, source: str) -> Optional[yaml.Node]:
    """Parse ``text`` into a node tree with line marks (None for an empty document).

    Raises:
        SettingsError: a YAML syntax or reader error, or nesting too deep.
    """
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = _one_line(exc.problem or exc.context or "unreadable")
        if mark is not None:
            message += f" (column {mark.column + 1})"
        if exc.context and exc.problem:
            context = _one_line(exc.context)
            if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
                context += f" (from line {exc.context_mark.line + 1})"
            message = f"{context}: {message}"
        raise SettingsError(f"invalid YAML: {message}", file=source,
                            line=mark.line + 1 if mark is not None else 1) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise SettingsError(f"invalid YAML: {_one_line(exc.reason)}, found {character!r}",
                            file=source, line=line) from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"invalid YAML: {_one_line(str(exc))}", file=source, line=1) from exc
    except RecursionError as exc:
        # PyYAML composes nested collections recursively; a few hundred
        # levels of `[[[[` exhaust the stack. No real config nests past 4.
        raise SettingsError("invalid YAML: nested too deeply", file=source, line=1) from exc


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _printable(text: str) -> str:
    # Messages must stay on one line even for a path with a newline in it.
    return text if text.isprintable() else repr(text)


def _is_mapping(node: yaml.Node) -> bool:
    return isinstance(node, yaml.MappingNode) and node.tag == _MAP


def _is_list(node: yaml.Node) -> bool:
    return isinstance(node, yaml.SequenceNode) and node.tag == _SEQ


def _describe(node: yaml.Node) -> str:
    if _is_mapping(node):
        return "a mapping"
    if _is_list(node):
        return "a list"
    if not isinstance(node, yaml.ScalarNode):
        return _tagged(node.tag)
    if node.tag == _NULL:
        return "nothing" if node.value == "" else "null"
    if node.tag == _BOOL:
        return f"the boolean {node.value}"
    if node.tag in _NUMBER_TAGS:
        return f"the number {node.value}"
    if node.tag in _TEXT_TAGS:
        return quoted(node.value)
    return _tagged(node.tag)


def _tagged(tag: str) -> str:
    short = "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag
    return f"a value tagged {quoted(short)}"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


# ---------------------------------------------------------------------------
# Value syntax

# Leading zeros are refused: YAML 1.1 reads `010` as octal 8.
_DECIMAL = re.compile(r"\A-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?\Z")
_INTEGER = re.compile(r"\A-?(?:0|[1-9][0-9]{0,14})\Z")
_DURATION = re.compile(r"\A(-?(?:0|[1-9][0-9]{0,9})(?:\.[0-9]{1,9})?)(ms|s|m|h)?\Z")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
DURATION_EXAMPLES = "a duration like 250ms, 10s or 5m"

_GROUP = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\Z")
_COMMAND = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.+-]{0,255}\Z")
_HOSTNAME = re.compile(r"\A(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
_PORT = re.compile(r"\A[1-9][0-9]{0,4}\Z")
MAX_PATH_BYTES = 4095
# sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107

_TOP_KEYS = ("nginx", "state_dir", "control_socket", "control_group", "metrics_listen", "allow_insecure_permissions",
             "rollouts")
_NGINX_KEYS = ("conf", "binary", "prefix")
_ROLLOUT_KEYS = ("upstream", "canary", "access_log", "log_format", "steps", "step_interval", "on_success", "analysis",
                 "webhooks", "gates")
_ANALYSIS_KEYS = ("interval", "window", "min_requests", "max_error_rate", "max_error_rate_increase",
                  "max_p99_latency", "max_p99_latency_ratio", "failure_threshold", "http_checks")
_WEBHOOK_KEYS = ("url", "events", "format", "timeout", "retries")
_GATE_KEYS = ("pre_rollout", "confirm_step", "confirm_promotion")
_HTTP_CHECK_KEYS = ("url", "timeout")


def _where_keys_belong() -> Dict[str, str]:
    """Where a key found at the wrong level belongs, for a pointed hint (some keys live in two places)."""
    places: Dict[str, List[str]] = {}
    for keys, where in ((_TOP_KEYS, "the top level"), (_NGINX_KEYS, "nginx"), (_ROLLOUT_KEYS, "rollouts.NAME"),
                        (_ANALYSIS_KEYS, "rollouts.NAME.analysis"), (_WEBHOOK_KEYS, "rollouts.NAME.webhooks[N]"),
                        (_GATE_KEYS, "rollouts.NAME.gates"),
                        (_HTTP_CHECK_KEYS, "rollouts.NAME.analysis.http_checks[N]")):
        for key in keys:
            places.setdefault(key, []).append(where)
    return {key: " or ".join(where) for key, where in places.items()}


_BELONGS = _where_keys_belong()

_Entries = Dict[str, Tuple[yaml.Node, yaml.Node]]
_T = TypeVar("_T")
_Read = Callable[[yaml.Node, str], _T]


def _nullable(read: _Read[_T]) -> _Read[Optional[_T]]:
    """``read``, except that null means None (for keys whose default is null)."""
    return lambda node, key: None if _is_null(node) else read(node, key)


class _Reader:
    """Walks a composed node tree against the schema; every error carries file, line and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: Union[yaml.Node, int], key: str, message: str) -> SettingsError:
        line = node if isinstance(node, int) else _line(node)
        return SettingsError(message, file=self.source, line=line, key=key or None)

    # -- structure ----------------------------------------------------------

    def section(self, node: yaml.Node, key: str, known: Sequence[str], what: str) -> _Entries:
        """The entries of a mapping with a fixed set of keys; an empty value is an empty section."""
        if _is_null(node):
            return {}
        return self.entries(node, key, what, known)

    def entries(self, node: yaml.Node, key: str, what: str, known: Optional[Sequence[str]] = None) -> _Entries:
        # A tagged collection (`!!omap`, `!!python/...`) is refused rather
        # than read as if the tag were not there.
        if not _is_mapping(node):
            raise self.error(node, key, f"expected {what}, got {_describe(node)}")
        found: _Entries = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE:
                raise self.error(key_node, key, "YAML merge keys ('<<') are not supported: "
                                                "write the keys out, or alias a whole section")
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _TEXT_TAGS | {_NULL}:
                raise self.error(key_node, key, f"keys must be plain names, got {_describe(key_node)}")
            name = key_node.value
            if name in found:
                raise self.error(key_node, key, f"duplicate key {quoted(name)} (first on line {_line(found[name][0])})")
            if known is not None and name not in known:
                raise self.error(key_node, key, self._unknown(name, known))
            found[name] = (key_node, value_node)
        return found

    @staticmethod
    def _unknown(name: str, known: Sequence[str]) -> str:
        hint = ""
        if name in _BELONGS:
            # A key that is known, just not here.
            hint = f", it belongs under {_BELONGS[name]}"
        else:
            close = difflib.get_close_matches(name, known, n=1)
            if close:
                hint = f", did you mean {close[0]!r}?"
        return f"unknown key {quoted(name)}{hint} (known: {', '.join(known)})"

    def items(self, node: yaml.Node, key: str, what: str) -> Iterator[Tuple[str, yaml.Node]]:
        """``(key path, node)`` for each element of a non-empty list."""
        if not _is_list(node):
            raise self.error(node, key, f"expected {what}, got {_describe(node)}")
        if not node.value:
            raise self.error(node, key, f"expected {what}, got an empty list")
        for index, item in enumerate(node.value):
            yield f"{key}[{index}]", item

    def value(self, entries: _Entries, name: str, key: str, read: _Read[_T], default: _T) -> _T:
        if name not in entries:
            return default
        return read(entries[name][1], _join(key, name))

    # -- scalars ------------------------------------------------------------

    def text(self, node: yaml.Node, key: str, what: str) -> str:
        """A scalar's text exactly as written."""
        if not isinstance(node, yaml.ScalarNode) or node.tag not in _TEXT_TAGS:
            raise self.error(node, key, f"expected {what}, got {_describe(node)}")
        text: str = node.value
        return text

    def number(self, node: yaml.Node, key: str, what: str, pattern: re.Pattern[str]) -> Fraction:
        if isinstance(node, yaml.ScalarNode) and node.tag in _NUMBER_TAGS and pattern.match(node.value):
            return Fraction(node.value)
        hint = ""
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR and _DECIMAL.match(node.value):
            hint = " (numbers are written without quotes)"
        raise self.error(node, key, f"expected {what}, got {_describe(node)}{hint}")

    def boolean(self, node: yaml.Node, key: str) -> bool:
        """``true`` or ``false``; YAML 1.1's yes/no/on/off are refused as easy to misread."""
        if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL and node.value in ("true", "false"):
            return node.value == "true"
        raise self.error(node, key, f"expected true or false, got {_describe(node)}")

    def share(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key, "a share from 0 to 1 like 0.05", _DECIMAL)
        if not 0 <= value <= 1:
            raise self.error(node, key, f"must be from 0 to 1 (0.05 = 5 %), got {node.value}")
        return float(value)

    def ratio(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key, "a ratio like 2.0", _DECIMAL)
        if value < 1:
            raise self.error(node, key, f"must be at least 1 (canary p99 divided by stable p99), got {node.value}")
        return float(value)

    def count(self, node: yaml.Node, key: str) -> int:
        value = self.number(node, key, "a whole number like 20", _INTEGER)
        if value < 1:
            raise self.error(node, key, f"must be at least 1, got {node.value}")
        return int(value)

    def duration(self, node: yaml.Node, key: str) -> float:
        """Seconds, from ``250ms`` / ``10s`` / ``5m`` / ``1h`` or a bare number of seconds."""
        text: str = node.value if isinstance(node, yaml.ScalarNode) and node.tag in (_STR, _INT, _FLOAT) else ""
        if _DURATION.match(text) is None:
            raise self.error(node, key, f"expected {DURATION_EXAMPLES}, got {_describe(node)}")
        try:
            return parse_duration(text)
        except BadInputError as exc:
            raise self.error(node, key, exc.message) from None

    def word(self, node: yaml.Node, key: str, kind: str, example: str) -> str:
        """A name that may be compared with or written into nginx config words."""
        text = self.text(node, key, f"{kind} like {example!r}")
        try:
            return check_word(kind, text)
        except BadInputError as exc:
            raise self.error(node, key, exc.message) from None

    def path(self, node: yaml.Node, key: str, max_bytes: int = MAX_PATH_BYTES) -> str:
        text = self.text(node, key, "an absolute path")
        if not text.startswith("/"):
            raise self.error(node, key, f"expected an absolute path, got {quoted(text)}")
        self.printable(node, key, "path", text)
        size = len(text.encode("utf-8"))
        if size > max_bytes:
            raise self.error(node, key, f"path is {size} bytes long, more than the {max_bytes} allowed here")
        return text

    def printable(self, node: yaml.Node, key: str, kind: str, text: str) -> None:
        for char in text:
            if not char.isprintable():
                raise self.error(node, key, f"{kind} {quoted(text)} contains the unprintable character {char!r}")

    # -- sections -----------------------------------------------------------

    def daemon(self, root: yaml.Node) -> DaemonSettings:
        top = self.entries(root, "", "a mapping of settings at the top level", _TOP_KEYS)
        defaults = DaemonSettings()
        return DaemonSettings(
            nginx=self.value(top, "nginx", "", self.nginx, defaults.nginx),
            state_dir=self.value(top, "state_dir", "", self.path, defaults.state_dir),
            control_socket=self.value(top, "control_socket", "",
                                      lambda n, k: self.path(n, k, max_bytes=MAX_SOCKET_PATH_BYTES),
                                      defaults.control_socket),
            control_group=self.value(top, "control_group", "", _nullable(self.group), defaults.control_group),
            metrics_listen=self.value(top, "metrics_listen", "", _nullable(self.listen), defaults.metrics_listen),
            allow_insecure_permissions=self.value(top, "allow_insecure_permissions", "", self.boolean,
                                                  defaults.allow_insecure_permissions),
            rollouts=self.value(top, "rollouts", "", self.rollouts, defaults.rollouts),
        )

    def nginx(self, node: yaml.Node, key: str) -> NginxSettings:
        entries = self.section(node, key, _NGINX_KEYS, "a mapping")
        defaults = NginxSettings()
        return NginxSettings(
            conf=self.value(entries, "conf", key, self.path, defaults.conf),
            binary=self.value(entries, "binary", key, self.binary, defaults.binary),
            prefix=self.value(entries, "prefix", key, _nullable(self.path), defaults.prefix),
        )

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
        if colon and _PORT.match(port) and int(port) <= 65535 and _is_host(host):
            return text
        raise self.error(node, key, f"expected host:port like '127.0.0.1:9145', '[::1]:9145' or 'localhost:9145' "
                                    f"(port 1 to 65535), got {quoted(text)}")

    def rollouts(self, node: yaml.Node, key: str) -> Mapping[str, RolloutSettings]:
        if _is_null(node):
            return MappingProxyType({})
        entries = self.entries(node, key, "a mapping of rollout name to its settings")
        rollouts: Dict[str, RolloutSettings] = {}
        # Two rollouts steering one upstream would overwrite each other's weights.
        claimed: Dict[str, str] = {}
        for name, (key_node, value_node) in entries.items():
            try:
                validate_name(name)
            except BadInputError as exc:
                raise self.error(key_node, key, exc.message) from None
            rollouts[name] = self.rollout(value_node, _join(key, name), name, _line(key_node), claimed)
        return MappingProxyType(rollouts)

    def rollout(self, node: yaml.Node, key: str, name: str, name_line: int, claimed: Dict[str, str]) -> RolloutSettings:
        entries = self.section(node, key, _ROLLOUT_KEYS, "a mapping of rollout settings")
        for required in ("upstream", "canary"):
            if required not in entries:
                raise self.error(name_line, key, f"missing required key {required!r}")
        upstream_node = entries["upstream"][1]
        upstream = self.word(upstream_node, _join(key, "upstream"), "upstream name", "backend")
        if upstream in claimed:
            raise self.error(upstream_node, _join(key, "upstream"),
                             f"upstream {upstream!r} is already steered by {claimed[upstream]}; one upstream, one rollout")
        claimed[upstream] = f"rollout {name!r} (line {_line(upstream_node)})"
        defaults = RolloutSettings(name=name, upstream=upstream, canary=())
        return RolloutSettings(
            name=name,
            upstream=upstream,
            canary=self.canary(entries["canary"][1], _join(key, "canary")),
            access_log=self.value(entries, "access_log", key, _nullable(self.path), defaults.access_log),
            log_format=self.value(entries, "log_format", key,
                                  _nullable(lambda n, k: self.word(n, k, "log format name", "canary")),
                                  defaults.log_format),
            steps=self.value(entries, "steps", key, self.steps, defaults.steps),
            step_interval=self.value(entries, "step_interval", key, self.duration, defaults.step_interval),
            on_success=self.value(entries, "on_success", key, self.on_success, defaults.on_success),
            analysis=self.value(entries, "analysis", key, self.analysis, defaults.analysis),
            webhooks=self.value(entries, "webhooks", key, self.webhooks, defaults.webhooks),
            gates=self.value(entries, "gates", key, self.gates, defaults.gates),
        )

    def canary(self, node: yaml.Node, key: str) -> Tuple[str, ...]:
        seen: Dict[str, str] = {}
        for item_key, item in self.items(node, key, "a list of server addresses like ['10.0.0.12:8080']"):
            address = self.word(item, item_key, "server address", "10.0.0.12:8080")
            if address in seen:
                raise self.error(item, item_key, f"duplicate server address {address!r} (also {seen[address]})")
            seen[address] = item_key
        return tuple(seen)

    def steps(self, node: yaml.Node, key: str) -> Tuple[Fraction, ...]:
        what = "a percent from 0 to 100 with at most two decimals, like 12.5"
        steps: List[Fraction] = []
        items = list(self.items(node, key, "a list of percents like [10, 25, 50, 100]"))
        for item_key, item in items:
            # YAML types first (no quoted or boolean steps), then the CLI's PERCENT rules.
            self.number(item, item_key, what, _DECIMAL)
            try:
                steps.append(parse_percent(item.value))
            except BadInputError:
                raise self.error(item, item_key, f"expected {what}, got {_describe(item)}") from None
        try:
            return check_steps(steps, spelled=[item.value for _, item in items])
        except StepError as exc:
            item_key, item = items[exc.index]
            raise self.error(item, item_key, exc.message) from None

    def on_success(self, node: yaml.Node, key: str) -> OnSuccess:
        text = self.text(node, key, "keep or restore")
        if text not in ON_SUCCESS_CHOICES:
            raise self.error(node, key, f"expected keep or restore, got {_describe(node)}")
        return text  # type: ignore[return-value]

    def analysis(self, node: yaml.Node, key: str) -> AnalysisSettings:
        entries = self.section(node, key, _ANALYSIS_KEYS, "a mapping of analysis settings")
        defaults = AnalysisSettings()
        analysis = AnalysisSettings(
            interval=self.value(entries, "interval", key, self.duration, defaults.interval),
            window=self.value(entries, "window", key, self.duration, defaults.window),
            min_requests=self.value(entries, "min_requests", key, self.count, defaults.min_requests),
            max_error_rate=self.value(entries, "max_error_rate", key, self.share, defaults.max_error_rate),
            max_error_rate_increase=self.value(entries, "max_error_rate_increase", key, self.share,
                                               defaults.max_error_rate_increase),
            max_p99_latency=self.value(entries, "max_p99_latency", key, self.duration, defaults.max_p99_latency),
            max_p99_latency_ratio=self.value(entries, "max_p99_latency_ratio", key, self.ratio,
                                             defaults.max_p99_latency_ratio),
            failure_threshold=self.value(entries, "failure_threshold", key, self.count, defaults.failure_threshold),
            http_checks=self.value(entries, "http_checks", key, self.http_checks, defaults.http_checks),
        )
        if analysis.window < analysis.interval:
            # Checks that run less often than the window they read never see
            # the requests in between.
            culprit = "window" if "window" in entries else "interval"
            raise self.error(entries[culprit][0], _join(key, culprit),
                             f"window ({_seconds(analysis.window)}) must be at least interval "
                             f"({_seconds(analysis.interval)}), or requests between checks go unseen")
        return analysis

    # -- webhooks, gates and HTTP checks --------------------------------------------

    def url(self, node: yaml.Node, key: str) -> str:
        """An ``http://`` or ``https://`` URL with a host (see :func:`url_problem`)."""
        text = self.text(node, key, "an http or https URL like 'https://hooks.example.com/canary'")
        problem = url_problem(text)
        if problem is not None:
            raise self.error(node, key, problem)
        return text

    def entry_list(self, node: yaml.Node, key: str, what: str, limit: int) -> List[Tuple[str, yaml.Node]]:
        """``(key path, node)`` per element of a list that may be empty (null counts as empty)."""
        if _is_null(node):
            return []
        if not _is_list(node):
            raise self.error(node, key, f"expected {what}, got {_describe(node)}")
        if len(node.value) > limit:
            raise self.error(node.value[limit], f"{key}[{limit}]", f"at most {limit} entries are allowed here")
        return [(f"{key}[{index}]", item) for index, item in enumerate(node.value)]

    def url_entry(self, node: yaml.Node, key: str, known: Sequence[str], what: str) -> Tuple[str, _Entries]:
        """A list entry that is either a URL or a mapping holding ``url``: the URL and the mapping's entries."""
        if isinstance(node, yaml.ScalarNode) and node.tag in _TEXT_TAGS:
            return self.url(node, key), {}
        entries = self.entries(node, key, what, known)
        if "url" not in entries:
            raise self.error(node, key, "missing required key 'url'")
        return self.url(entries["url"][1], _join(key, "url")), entries

    def webhooks(self, node: yaml.Node, key: str) -> Tuple[WebhookSettings, ...]:
        items = self.entry_list(node, key, "a list of webhooks like [{url: 'https://hooks.example.com/canary'}]",
                                MAX_WEBHOOKS)
        return tuple(self.webhook(item, item_key) for item_key, item in items)

    def webhook(self, node: yaml.Node, key: str) -> WebhookSettings:
        url, entries = self.url_entry(node, key, _WEBHOOK_KEYS,
                                      "a webhook: a URL, or a mapping with url, events, format, timeout, retries")
        defaults = WebhookSettings(url=url)
        return WebhookSettings(
            url=url,
            events=self.value(entries, "events", key, self.events, defaults.events),
            format=self.value(entries, "format", key, self.webhook_format, defaults.format),
            timeout=self.value(entries, "timeout", key, self.http_timeout, defaults.timeout),
            retries=self.value(entries, "retries", key, self.retries, defaults.retries),
        )

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
        text = self.text(node, key, "json or slack")
        if text not in WEBHOOK_FORMATS:
            raise self.error(node, key, f"expected json or slack, got {_describe(node)}")
        return text  # type: ignore[return-value]

    def http_timeout(self, node: yaml.Node, key: str) -> float:
        value = self.duration(node, key)
        if value > MAX_HTTP_TIMEOUT:
            raise self.error(node, key, f"must be at most {_seconds(MAX_HTTP_TIMEOUT)} (an endpoint slower than that "
                                        f"is down), got {_seconds(value)}")
        return value

    def retries(self, node: yaml.Node, key: str) -> int:
        value = self.number(node, key, f"a whole number from 0 to {MAX_RETRIES} like 3", _INTEGER)
        if not 0 <= value <= MAX_RETRIES:
            raise self.error(node, key, f"must be from 0 to {MAX_RETRIES}, got {node.value}")
        return int(value)

    def gates(self, node: yaml.Node, key: str) -> GateSettings:
        entries = self.section(node, key, _GATE_KEYS, "a mapping of gate name to URL")
        defaults = GateSettings()
        return GateSettings(**{name: self.value(entries, name, key, _nullable(self.url), getattr(defaults, name))
                               for name in _GATE_KEYS})

    def http_checks(self, node: yaml.Node, key: str) -> Tuple[HttpCheckSettings, ...]:
        items = self.entry_list(node, key, "a list of URLs like ['http://127.0.0.1:8082/health']", MAX_HTTP_CHECKS)
        return tuple(self.http_check(item, item_key) for item_key, item in items)

    def http_check(self, node: yaml.Node, key: str) -> HttpCheckSettings:
        url, entries = self.url_entry(node, key, _HTTP_CHECK_KEYS, "an HTTP check: a URL, or a mapping with url, timeout")
        defaults = HttpCheckSettings(url=url)
        return HttpCheckSettings(url=url,
                                 timeout=self.value(entries, "timeout", key, self.http_timeout, defaults.timeout))


def url_problem(text: str) -> Optional[str]:
    """Why ``text`` is not an acceptable webhook, gate or check URL, or None when it is.

    Accepted: ``http://`` or ``https://`` (any case), an optional ``user:password@``,
    a host (IPv4 address, bracketed IPv6 address or DNS name), an optional
    port 1-65535, then any path, query and fragment; printable ASCII only (no
    spaces: percent-encode them), no backslash (parsers disagree on where a
    host ends around one), at most :data:`MAX_URL_LENGTH` characters. The
    reasons quote the faulty part (host, port, character), not the URL: its
    path and query may hold a token (the error names the key and line).
    """
    if len(text) > MAX_URL_LENGTH:
        return f"URL is {len(text)} characters long, more than the {MAX_URL_LENGTH} allowed"
    for char in text:
        if not char.isascii():
            return (f"URL contains the non-ASCII character {char!r} (write host names in punycode and "
                    "percent-encode the rest)")
        if not char.isprintable() or char in " \\":
            return f"URL contains the character {char!r}, which a URL cannot hold (percent-encode it)"
    scheme, colon_slashes, rest = text.partition("://")
    if not colon_slashes or scheme.lower() not in ("http", "https"):
        return f"expected an http:// or https:// URL, got {quoted(text)}"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    hostport = authority.rpartition("@")[2]
    host, port = hostport, None
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        host, after = (hostport[:end], hostport[end:]) if end else (hostport, "")
        if after:
            port = after[1:] if after.startswith(":") else after
    elif ":" in hostport:
        host, _, port = hostport.partition(":")
    if not host:
        return "URL has no host"
    if not _is_host(host):
        return f"URL has an invalid host {quoted(host)}"
    if port is not None and not (_PORT.match(port) and int(port) <= 65535):
        return f"URL has an invalid port {quoted(port)} (1 to 65535)"
    return None


def parse_duration(text: str) -> float:
    """Seconds from ``250ms``, ``1.5s``, ``10s``, ``5m``, ``1h`` or a bare number of seconds.

    The same rules as durations in the YAML (millisecond resolution, above 0,
    at most 720h). Raises BadInputError with a one-line message.
    """
    match = _DURATION.match(text)
    if match is None:
        raise BadInputError(f"expected {DURATION_EXAMPLES}, got {quoted(text)}")
    ms = Fraction(match.group(1)) * _UNIT_MS[match.group(2) or "s"]
    if ms <= 0:
        raise BadInputError(f"must be greater than 0, got {quoted(text)}")
    if ms.denominator != 1:
        raise BadInputError(f"durations have millisecond resolution, got {quoted(text)}")
    if ms > MAX_DURATION_MS:
        raise BadInputError(f"must be at most 720h (30 days), got {quoted(text)}")
    return float(ms / 1000)


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        # All-digit labels are a mistyped IPv4 address, not a hostname.
        return bool(_HOSTNAME.match(host)) and not host.replace(".", "").isdigit()
    return True


def _seconds(value: float) -> str:
    return f"{value:g}s"
