"""The YAML node tree: text composed into nodes that keep their line, and how a node is named in errors.

``yaml.compose`` (PyYAML's safe loader) never constructs objects from tags;
the reader walks the nodes instead (:mod:`nginx_canary.config.reader`).
"""

from __future__ import annotations

from typing import Optional

import yaml

from nginx_canary.errors import SettingsError
from nginx_canary.text import quoted

CORE = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, MERGE, MAP, SEQ = (
    CORE + t for t in ("str", "int", "float", "bool", "null", "merge", "map", "seq"))
# Scalars whose text is taken as written where a name or path is expected:
# YAML 1.1 guesses types from spelling, and a user who writes `upstream: 1.10`
# or `control_group: 1000` means those characters.
TEXT_TAGS = frozenset((STR, INT, FLOAT, BOOL, CORE + "timestamp"))
NUMBER_TAGS = frozenset((INT, FLOAT))


def compose(text: str, source: str) -> Optional[yaml.Node]:
    """Parse ``text`` into a node tree with line marks (None for an empty document).

    Raises:
        SettingsError: a YAML syntax or reader error, or nesting too deep.
    """
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = one_line(exc.problem or exc.context or "unreadable")
        if mark is not None:
            message += f" (column {mark.column + 1})"
        if exc.context and exc.problem:
            context = one_line(exc.context)
            if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
                context += f" (from line {exc.context_mark.line + 1})"
            message = f"{context}: {message}"
        raise SettingsError(f"invalid YAML: {message}", file=source,
                            line=mark.line + 1 if mark is not None else 1) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise SettingsError(f"invalid YAML: {one_line(exc.reason)}, found {character!r}",
                            file=source, line=line) from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"invalid YAML: {one_line(str(exc))}", file=source, line=1) from exc
    except RecursionError as exc:
        # PyYAML composes nested collections recursively; a few hundred
        # levels of `[[[[` exhaust the stack. No real config nests past 4.
        raise SettingsError("invalid YAML: nested too deeply", file=source, line=1) from exc


def one_line(text: str) -> str:
    return " ".join(text.split())


def printable_source(text: str) -> str:
    """``text`` as a message may show it: messages must stay on one line even for a path with a newline in it."""
    return text if text.isprintable() else repr(text)


def is_mapping(node: yaml.Node) -> bool:
    return isinstance(node, yaml.MappingNode) and node.tag == MAP


def is_list(node: yaml.Node) -> bool:
    return isinstance(node, yaml.SequenceNode) and node.tag == SEQ


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL


def describe(node: yaml.Node) -> str:
    """What was found, for ``expected ..., got ...`` messages."""
    if is_mapping(node):
        return "a mapping"
    if is_list(node):
        return "a list"
    if not isinstance(node, yaml.ScalarNode):
        return _tagged(node.tag)
    if node.tag == NULL:
        return "nothing" if node.value == "" else "null"
    if node.tag == BOOL:
        return f"the boolean {node.value}"
    if node.tag in NUMBER_TAGS:
        return f"the number {node.value}"
    if node.tag in TEXT_TAGS:
        return quoted(node.value)
    return _tagged(node.tag)


def _tagged(tag: str) -> str:
    short = "!!" + tag[len(CORE):] if tag.startswith(CORE) else tag
    return f"a value tagged {quoted(short)}"


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def join_key(parent: str, child: str) -> str:
    """The key path of ``child`` under ``parent`` (``rollouts.app`` + ``steps``)."""
    return f"{parent}.{child}" if parent else child
