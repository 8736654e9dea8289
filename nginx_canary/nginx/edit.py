"""Pure text edits of upstream ``server`` directives.

Only the ``weight=`` and ``down`` parameters of the named directives change;
every other byte of the text (comments, blank lines, indentation, quoting, line
endings, order) is kept as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from nginx_canary.errors import EditError
from nginx_canary.nginx.lexer import SEMICOLON, Statement, Token, statements

DEFAULT_WEIGHT = 1


@dataclass(frozen=True)
class ServerChange:
    """Wanted parameters for the ``server ADDRESS`` directive starting on ``line``."""

    line: int
    address: str
    weight: int
    down: bool
    #: With weight 1: no ``weight=`` at all (a restore gives back the form the snapshot had, not ``weight=1``).
    bare_weight: bool = False


def _weight_token(stmt: Statement) -> Optional[Token]:
    found = [t for t in stmt.args[1:] if t.value.startswith("weight=")]
    return found[-1] if found else None


def _down_tokens(stmt: Statement) -> List[Token]:
    return [t for t in stmt.args[1:] if t.value == "down"]


def current_weight(stmt: Statement, filename: Optional[str] = None) -> int:
    """The weight a server directive gives (1 when it has no ``weight=``).

    Raises:
        EditError: the weight is not a positive integer.
    """
    tok = _weight_token(stmt)
    if tok is None:
        return DEFAULT_WEIGHT
    raw = tok.value[len("weight="):]
    if not raw.isdigit() or int(raw) < 1:
        raise EditError(f"invalid weight {tok.value!r}", file=filename, line=tok.line)
    return int(raw)


def _find(by_place: Dict[Tuple[int, str], List[Statement]], change: ServerChange, filename: Optional[str]) -> Statement:
    found = by_place.get((change.line, change.address), [])
    if len(found) != 1:
        what = "no" if not found else "more than one"
        raise EditError(f"{what} 'server {change.address}' directive starts on this line", file=filename, line=change.line)
    return found[0]


def _replace_word(tok: Token, text: str, new_value: str) -> Tuple[int, int, str]:
    raw = text[tok.start:tok.end]
    if tok.quoted:
        return tok.start, tok.end, raw[0] + new_value + raw[-1]
    return tok.start, tok.end, new_value


def _remove_word(tok: Token, text: str) -> Tuple[int, int, str]:
    # Take the spaces or tabs before the word with it, never a line break, so the
    # line keeps its shape: "server a:80 down;" -> "server a:80;".
    start = tok.start
    while start > 0 and text[start - 1] in " \t":
        start -= 1
    return start, tok.end, ""


def _edits_for(stmt: Statement, change: ServerChange, text: str, filename: Optional[str]) -> List[Tuple[int, int, str]]:
    if change.weight < 1:
        raise EditError(f"weight must be >= 1, not {change.weight}", file=filename, line=change.line)
    edits: List[Tuple[int, int, str]] = []
    address = stmt.args[0]
    weight_tok = _weight_token(stmt)
    inserted_after_address = ""
    remove_weight = change.bare_weight and change.weight == DEFAULT_WEIGHT and weight_tok is not None
    if remove_weight:
        assert weight_tok is not None
        edits.append(_remove_word(weight_tok, text))
    elif current_weight(stmt, filename) != change.weight:
        new_weight = f"weight={change.weight}"
        if weight_tok is not None:
            edits.append(_replace_word(weight_tok, text, new_weight))
        else:
            inserted_after_address = " " + new_weight
    downs = _down_tokens(stmt)
    last = [t for t in stmt.args if not (remove_weight and t is weight_tok)][-1]
    if change.down and not downs:
        if last is address:
            inserted_after_address += " down"
        else:
            edits.append((last.end, last.end, " down"))
    elif not change.down:
        edits.extend(_remove_word(tok, text) for tok in downs)
    if inserted_after_address:
        edits.append((address.end, address.end, inserted_after_address))
    return edits


def server_statements(text: str, filename: Optional[str] = None) -> List[Statement]:
    """Every simple ``server ADDRESS ...;`` directive of ``text`` (not ``server {`` blocks).

    Raises:
        ConfigError: the text cannot be tokenized.
    """
    return [
        stmt for stmt in statements(text, filename)
        if stmt.name.value == "server" and stmt.end.kind == SEMICOLON and stmt.args
    ]


def edit_servers(text: str, changes: Sequence[ServerChange], filename: Optional[str] = None) -> str:
    """Return ``text`` with each changed server's ``weight=`` / ``down`` set as asked.

    A weight equal to the one in effect is left as written (an absent
    ``weight=`` stays absent when 1 is wanted).

    Raises:
        EditError: a directive is missing or ambiguous, or a weight is invalid.
    """
    by_place: Dict[Tuple[int, str], List[Statement]] = {}
    for stmt in server_statements(text, filename):
        by_place.setdefault((stmt.name.line, stmt.args[0].value), []).append(stmt)
    edits: List[Tuple[int, int, str]] = []
    for change in changes:
        edits.extend(_edits_for(_find(by_place, change, filename), change, text, filename))
    out = text
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        out = out[:start] + new + out[end:]
    return out
