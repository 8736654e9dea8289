"""Pure text edits of upstream ``server`` directives.

Only the ``weight=`` and ``down`` parameters of the named directives change;
every other byte of the text (comments, blank lines, indentation, quoting, line
endings, order) is kept as it was. A parameter alone on its line, or first on
its line, goes without moving what follows it to another column; a change that
gives a directive back the weight and ``down`` it had before nginx-canary
touched it (``ServerChange.original``) gives back its exact bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from nginx_canary.errors import EditError
from nginx_canary.nginx.lexer import SEMICOLON, WORD, Statement, Token, statements, tokenize

DEFAULT_WEIGHT = 1

Edit = Tuple[int, int, str]


@dataclass(frozen=True)
class ServerChange:
    """Wanted parameters for the ``server ADDRESS`` directive starting on ``line``."""

    line: int
    address: str
    weight: int
    down: bool
    #: With weight 1: no ``weight=`` at all (a restore gives back the form the snapshot had, not ``weight=1``).
    bare_weight: bool = False
    #: The directive's text (``server`` to ``;``) before nginx-canary changed it. Wanted weight and
    #: ``down`` equal to its own, and nothing but those words and blanks changed since: those bytes
    #: come back. Only the weight equal to its own: its spelling comes back (none, ``weight=04``, quoted).
    original: Optional[str] = None


def _weight_token(stmt: Statement) -> Optional[Token]:
    found = [t for t in stmt.args[1:] if t.value.startswith("weight=")]
    return found[-1] if found else None


def _down_tokens(stmt: Statement) -> List[Token]:
    return [t for t in stmt.args[1:] if t.value == "down"]


def _is_param(tok: Token) -> bool:
    return tok.kind == WORD and (tok.value == "down" or tok.value.startswith("weight="))


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


def _remove_word(tok: Token, text: str) -> Edit:
    """The edit taking ``tok`` away with the blanks that would otherwise shift or dangle; never a line break.

    After another word on its line: the blanks before it go ("server a:80 down;" -> "server a:80;").
    First on its line: the indentation stays for what follows and the blanks after it go
    ("    down;  # c" -> "    ;  # c"). Alone on its line: the line is left empty.
    """
    start = tok.start
    while start > 0 and text[start - 1] in " \t":
        start -= 1
    if start > 0 and text[start - 1] != "\n":
        return start, tok.end, ""
    end = tok.end
    while end < len(text) and text[end] in " \t":
        end += 1
    if end == len(text) or text[end] in "\r\n":
        return start, end, ""
    return tok.start, end, ""


def _skeleton(text: str) -> Tuple[int, List[str]]:
    """What an edit of weight / down must leave alone: the line count and every other token's bytes."""
    return text.count("\n"), [text[t.start:t.end] for t in tokenize(text) if not _is_param(t)]


@dataclass(frozen=True)
class _Original:
    """What ``ServerChange.original`` says: its text, weight, down flag and weight word as written."""

    text: str
    weight: int
    down: bool
    weight_word: Optional[str]


def _original(change: ServerChange, filename: Optional[str]) -> Optional[_Original]:
    if change.original is None:
        return None
    found = [s for s in statements(change.original, filename) if s.name.value == "server" and s.args]
    if len(found) != 1 or found[0].args[0].value != change.address:
        raise EditError(f"the original form given for 'server {change.address}' is not that one directive",
                        file=filename, line=change.line)
    stmt = found[0]
    tok = _weight_token(stmt)
    word = None if tok is None else change.original[tok.start:tok.end]
    return _Original(change.original, current_weight(stmt, filename), bool(_down_tokens(stmt)), word)


def _weight_edits(stmt: Statement, change: ServerChange, text: str, original: Optional[_Original],
                  filename: Optional[str]) -> Tuple[List[Edit], str, Optional[Token]]:
    """Edits for the weight word, the text to insert after the address, and the weight token removed (if any)."""
    weight_tok = _weight_token(stmt)
    raw = None if weight_tok is None else text[weight_tok.start:weight_tok.end]
    if original is not None and original.weight == change.weight:
        wanted: Optional[str] = original.weight_word
    elif change.bare_weight and change.weight == DEFAULT_WEIGHT:
        wanted = None
    elif current_weight(stmt, filename) == change.weight:
        wanted = raw
    elif weight_tok is not None and weight_tok.quoted:
        wanted = raw[0] + f"weight={change.weight}" + raw[-1]
    else:
        wanted = f"weight={change.weight}"
    if wanted == raw:
        return [], "", None
    if wanted is None:
        assert weight_tok is not None
        return [_remove_word(weight_tok, text)], "", weight_tok
    if weight_tok is None:
        return [], " " + wanted, None
    return [(weight_tok.start, weight_tok.end, wanted)], "", None


def _edits_for(stmt: Statement, change: ServerChange, text: str, filename: Optional[str]) -> List[Edit]:
    if change.weight < 1:
        raise EditError(f"weight must be >= 1, not {change.weight}", file=filename, line=change.line)
    original = _original(change, filename)
    start, end = stmt.name.start, stmt.end.end
    if (original is not None and (original.weight, original.down) == (change.weight, change.down)
            and _skeleton(text[start:end]) == _skeleton(original.text)):
        return [] if text[start:end] == original.text else [(start, end, original.text)]
    edits, inserted_after_address, removed = _weight_edits(stmt, change, text, original, filename)
    address = stmt.args[0]
    downs = _down_tokens(stmt)
    if change.down and not downs:
        last = [t for t in stmt.args if t is not removed][-1]
        if last is address:
            inserted_after_address += " down"
        else:
            edits.append((last.end, last.end, " down"))
    elif not change.down:
        edits.extend(_remove_word(tok, text) for tok in downs)
    if inserted_after_address:
        edits.append((address.end, address.end, inserted_after_address))
    return edits


def _merged(edits: List[Edit]) -> List[Edit]:
    """Edits in order, overlapping removals made one (two words on a line, each taking blanks beside it)."""
    out: List[Edit] = []
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1])):
        if out and start < out[-1][1] and not new and not out[-1][2]:
            out[-1] = (out[-1][0], max(end, out[-1][1]), "")
        else:
            out.append((start, end, new))
    return out


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
        EditError: a directive is missing or ambiguous, a weight is invalid, or
            an original form is not that server's directive.
    """
    by_place: Dict[Tuple[int, str], List[Statement]] = {}
    for stmt in server_statements(text, filename):
        by_place.setdefault((stmt.name.line, stmt.args[0].value), []).append(stmt)
    edits: List[Edit] = []
    for change in changes:
        edits.extend(_edits_for(_find(by_place, change, filename), change, text, filename))
    out = text
    for start, end, new in reversed(_merged(edits)):
        out = out[:start] + new + out[end:]
    return out
