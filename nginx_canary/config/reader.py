"""The core of the config reader: mappings, lists and scalars checked against what the schema expects.

Each section's reader (:mod:`~nginx_canary.config.settings`,
:mod:`~nginx_canary.config.rollouts`, :mod:`~nginx_canary.config.endpoints`)
builds on :class:`NodeReader`; every error it raises is a one-line
:class:`~nginx_canary.errors.SettingsError` carrying file, line and key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from fractions import Fraction
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import yaml

from nginx_canary.config.nodes import (
    BOOL, FLOAT, INT, MERGE, NULL, NUMBER_TAGS, STR, TEXT_TAGS,
    describe, is_list, is_mapping, is_null, join_key, line_of)
from nginx_canary.config.schema import BELONGS
from nginx_canary.config.syntax import DECIMAL, DURATION, DURATION_EXAMPLES, INTEGER, parse_duration
from nginx_canary.errors import BadInputError, SettingsError
from nginx_canary.inputs import check_word
from nginx_canary.text import quoted

MAX_PATH_BYTES = 4095

#: A mapping's entries: key name to its (key node, value node).
Entries = Dict[str, Tuple[yaml.Node, yaml.Node]]
_T = TypeVar("_T")
Read = Callable[[yaml.Node, str], _T]
_Settings = TypeVar("_Settings")


def nullable(read: Read[_T]) -> Read[Optional[_T]]:
    """``read``, except that null means None (for keys whose default is null)."""
    return lambda node, key: None if is_null(node) else read(node, key)


class NodeReader:
    """Walks a composed node tree against the schema; every error carries file, line and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: Union[yaml.Node, int], key: str, message: str) -> SettingsError:
        line = node if isinstance(node, int) else line_of(node)
        return SettingsError(message, file=self.source, line=line, key=key or None)

    # -- structure ----------------------------------------------------------

    def section(self, node: yaml.Node, key: str, known: Sequence[str], what: str) -> Entries:
        """The entries of a mapping with a fixed set of keys; an empty value is an empty section."""
        if is_null(node):
            return {}
        return self.entries(node, key, what, known)

    def entries(self, node: yaml.Node, key: str, what: str, known: Optional[Sequence[str]] = None) -> Entries:
        # A tagged collection (`!!omap`, `!!python/...`) is refused rather
        # than read as if the tag were not there.
        if not is_mapping(node):
            raise self.error(node, key, f"expected {what}, got {describe(node)}")
        found: Entries = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == MERGE:
                raise self.error(key_node, key, "YAML merge keys ('<<') are not supported: "
                                                "write the keys out, or alias a whole section")
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in TEXT_TAGS | {NULL}:
                raise self.error(key_node, key, f"keys must be plain names, got {describe(key_node)}")
            name = key_node.value
            if name in found:
                raise self.error(key_node, key, f"duplicate key {quoted(name)} (first on line {line_of(found[name][0])})")
            if known is not None and name not in known:
                raise self.error(key_node, key, self._unknown(name, known))
            found[name] = (key_node, value_node)
        return found

    @staticmethod
    def _unknown(name: str, known: Sequence[str]) -> str:
        hint = ""
        if name in BELONGS:
            # A key that is known, just not here.
            hint = f", it belongs under {BELONGS[name]}"
        else:
            close = difflib.get_close_matches(name, known, n=1)
            if close:
                hint = f", did you mean {close[0]!r}?"
        return f"unknown key {quoted(name)}{hint} (known: {', '.join(known)})"

    def items(self, node: yaml.Node, key: str, what: str) -> Iterator[Tuple[str, yaml.Node]]:
        """``(key path, node)`` for each element of a non-empty list."""
        if not is_list(node):
            raise self.error(node, key, f"expected {what}, got {describe(node)}")
        if not node.value:
            raise self.error(node, key, f"expected {what}, got an empty list")
        for index, item in enumerate(node.value):
            yield f"{key}[{index}]", item

    def fields(self, entries: Entries, key: str, defaults: _Settings, readers: Mapping[str, Read[Any]]) -> _Settings:
        """``defaults`` (a dataclass) with each field found in ``entries`` read by its reader, in ``readers`` order.

        Raises:
            SettingsError: the first value its reader refuses.
        """
        found = {name: read(entries[name][1], join_key(key, name)) for name, read in readers.items() if name in entries}
        return dataclasses.replace(defaults, **found)

    # -- scalars ------------------------------------------------------------

    def text(self, node: yaml.Node, key: str, what: str) -> str:
        """A scalar's text exactly as written."""
        if not isinstance(node, yaml.ScalarNode) or node.tag not in TEXT_TAGS:
            raise self.error(node, key, f"expected {what}, got {describe(node)}")
        text: str = node.value
        return text

    def choice(self, node: yaml.Node, key: str, choices: Sequence[str]) -> str:
        """One of ``choices``, spelled exactly."""
        what = " or ".join(choices)
        text = self.text(node, key, what)
        if text not in choices:
            raise self.error(node, key, f"expected {what}, got {describe(node)}")
        return text

    def number(self, node: yaml.Node, key: str, what: str, pattern: re.Pattern[str]) -> Fraction:
        if isinstance(node, yaml.ScalarNode) and node.tag in NUMBER_TAGS and pattern.match(node.value):
            return Fraction(node.value)
        hint = ""
        if isinstance(node, yaml.ScalarNode) and node.tag == STR and DECIMAL.match(node.value):
            hint = " (numbers are written without quotes)"
        raise self.error(node, key, f"expected {what}, got {describe(node)}{hint}")

    def boolean(self, node: yaml.Node, key: str) -> bool:
        """``true`` or ``false``; YAML 1.1's yes/no/on/off are refused as easy to misread."""
        if isinstance(node, yaml.ScalarNode) and node.tag == BOOL and node.value in ("true", "false"):
            return node.value == "true"
        raise self.error(node, key, f"expected true or false, got {describe(node)}")

    def share(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key, "a share from 0 to 1 like 0.05", DECIMAL)
        if not 0 <= value <= 1:
            raise self.error(node, key, f"must be from 0 to 1 (0.05 = 5 %), got {node.value}")
        return float(value)

    def ratio(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key, "a ratio like 2.0", DECIMAL)
        if value < 1:
            raise self.error(node, key, f"must be at least 1 (canary p99 divided by stable p99), got {node.value}")
        return float(value)

    def count(self, node: yaml.Node, key: str) -> int:
        value = self.number(node, key, "a whole number like 20", INTEGER)
        if value < 1:
            raise self.error(node, key, f"must be at least 1, got {node.value}")
        return int(value)

    def duration(self, node: yaml.Node, key: str) -> float:
        """Seconds, from ``250ms`` / ``10s`` / ``5m`` / ``1h`` or a bare number of seconds."""
        text: str = node.value if isinstance(node, yaml.ScalarNode) and node.tag in (STR, INT, FLOAT) else ""
        if DURATION.match(text) is None:
            raise self.error(node, key, f"expected {DURATION_EXAMPLES}, got {describe(node)}")
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

    def path(self, node: yaml.Node, key: str, max_bytes: int = MAX_PATH_BYTES, *, relative: bool = False) -> str:
        """A printable path of at most ``max_bytes``, absolute unless ``relative``."""
        text = self.text(node, key, "a path" if relative else "an absolute path")
        if not relative and not text.startswith("/"):
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
