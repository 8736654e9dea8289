"""A tokenizer for nginx config text that keeps every token's byte span.

crossplane tells us *what* a config means; to change a ``server`` directive in
place we also need to know *where* each of its words sits in the file text. The
rules follow nginx's own reader (``ngx_conf_read_token``), which differs from
crossplane on corner cases: ``#`` starts a comment only at the start of a word,
quotes open a string only at the start of a word, and ``${`` does not open a
block. The inside of an OpenResty ``*_by_lua_block { ... }`` is Lua, not nginx
tokens: it becomes one opaque :data:`LUA` token, ended where the Lua module
ends it (:mod:`nginx_canary.nginx.lua_block`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional

from nginx_canary.errors import ConfigError
from nginx_canary.nginx.lua_block import LuaBlockError, block_end, is_lua_block

WORD = "word"
SEMICOLON = ";"
BLOCK_START = "{"
BLOCK_END = "}"
COMMENT = "comment"
#: The body of a ``*_by_lua_block``, between its braces (which are tokens of their own).
LUA = "lua"

_SPACE = " \t\r\n"
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


@dataclass(frozen=True)
class Token:
    """One token: ``text[start:end]`` is exactly what the file holds."""

    kind: str
    value: str
    start: int
    end: int
    line: int
    quoted: bool = False


@dataclass(frozen=True)
class Statement:
    """A directive: its name, its argument words and what ended it (``;`` or ``{``)."""

    name: Token
    args: List[Token]
    end: Token
    depth: int


def unescape(raw: str) -> str:
    """nginx's reading of backslash escapes in a word: \\" \\' \\\\ \\t \\r \\n; other backslashes stay."""
    out = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw) and raw[i + 1] in _ESCAPES:
            out.append(_ESCAPES[raw[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def tokenize(text: str, filename: Optional[str] = None) -> Iterator[Token]:
    """Yield the tokens of ``text`` in order.

    Raises:
        ConfigError: an unterminated quote, a quote not followed by a separator,
            or a Lua block that is not closed.
    """
    i = 0
    n = len(text)
    line = 1
    directive: Optional[str] = None  # the first word of the statement being read
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            if ch == "\n":
                line += 1
            i += 1
            continue
        if ch in ";{}":
            yield Token(ch, ch, i, i + 1, line)
            i += 1
            if ch == "{" and directive is not None and is_lua_block(directive):
                try:
                    end = block_end(text, i)
                except LuaBlockError as exc:
                    raise ConfigError(exc.message, file=filename, line=exc.line) from exc
                assert end is not None  # a final scan returns the end or raises
                yield Token(LUA, text[i:end], i, end, line)
                line += text.count("\n", i, end)
                i = end
            directive = None
            continue
        if ch == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            yield Token(COMMENT, text[i:j], i, j, line)
            i = j
            continue
        start, start_line = i, line
        if ch in "\"'":
            quote = ch
            i += 1
            while i < n and text[i] != quote:
                if text[i] == "\\":
                    i += 1
                if i < n and text[i] == "\n":
                    line += 1
                i += 1
            if i >= n:
                raise ConfigError("unterminated quoted string", file=filename, line=start_line)
            i += 1
            # nginx also accepts ")" right after a closing quote (as in
            # `if ($host != 'a')`); the ")" then starts a word of its own.
            if i < n and text[i] not in _SPACE + ";{)":
                raise ConfigError(f"unexpected {text[i]!r} after quoted string", file=filename, line=line)
            word = Token(WORD, unescape(text[start + 1 : i - 1]), start, i, start_line, quoted=True)
            directive = word.value if directive is None else directive
            yield word
            continue
        variable = False
        while i < n:
            ch = text[i]
            if ch == "{" and variable:
                i += 1
                continue
            variable = False
            if ch == "\\":
                if i + 1 < n and text[i + 1] == "\n":
                    line += 1
                i += 2
                continue
            if ch == "$":
                variable = True
                i += 1
                continue
            if ch in _SPACE or ch in ";{":
                break
            i += 1
        i = min(i, n)
        word = Token(WORD, unescape(text[start:i]), start, i, start_line)
        directive = word.value if directive is None else directive
        yield word


def statements(text: str, filename: Optional[str] = None) -> Iterator[Statement]:
    """Yield every directive of ``text`` (at any depth), comments and Lua code skipped.

    Raises:
        ConfigError: the text cannot be tokenized, a directive is unterminated
            or braces do not balance.
    """
    depth = 0
    words: List[Token] = []
    for tok in tokenize(text, filename):
        if tok.kind in (COMMENT, LUA):
            continue
        if tok.kind == WORD:
            words.append(tok)
            continue
        if tok.kind == BLOCK_END:
            if words or depth == 0:
                raise ConfigError('unexpected "}"', file=filename, line=tok.line)
            depth -= 1
            continue
        if not words:
            raise ConfigError(f'unexpected "{tok.kind}"', file=filename, line=tok.line)
        yield Statement(words[0], words[1:], tok, depth)
        words = []
        if tok.kind == BLOCK_START:
            depth += 1
    if words:
        raise ConfigError("unexpected end of file, expecting \";\" or \"}\"", file=filename, line=words[-1].line)
    if depth:
        raise ConfigError('unexpected end of file, expecting "}"', file=filename, line=text.count("\n") + 1)
