"""Where an OpenResty ``*_by_lua_block { ... }`` ends.

nginx does not read the inside of such a block as nginx tokens: the Lua module
takes over after the ``{`` and scans Lua until the ``}`` that balances it. The
rules here are the Lua module's own (``ngx_http_lua_conf_read_lua_token`` and
the lexer generated for it): search for the leftmost of, in this order of
preference, ``{``, ``}``, a long string ``[=*[``, a long comment ``--[=*[``,
a stray ``]=*]``, a line comment ``--...``, a ``"..."`` or ``'...'`` string that
ends on its own line (backslash escapes any character but a newline); whatever
else lies between is skipped. A quote that does not close on its line is
skipped like any other character, as nginx does. Long strings and comments end
at the first ``]`` ``=``*n ``]`` with the same number of ``=``.

The same scan backs two readers: :mod:`nginx_canary.nginx.lexer` (on the
whole file text) and crossplane, whose own Lua extension misreads escaped
quotes and long brackets; :func:`register_with_crossplane` replaces it.
"""

from __future__ import annotations

import re
from typing import Iterator, Optional, Tuple

SUFFIX = "_by_lua_block"

#: The ``*_by_lua_block`` directives of the http and stream Lua modules.
#: crossplane looks directives up by exact name; the span-keeping lexer takes any name ending in :data:`SUFFIX`.
DIRECTIVES = frozenset({
    "access_by_lua_block", "balancer_by_lua_block", "body_filter_by_lua_block", "content_by_lua_block",
    "exit_worker_by_lua_block", "header_filter_by_lua_block", "init_by_lua_block", "init_worker_by_lua_block",
    "log_by_lua_block", "precontent_by_lua_block", "preread_by_lua_block", "proxy_ssl_certificate_by_lua_block",
    "proxy_ssl_verify_by_lua_block", "rewrite_by_lua_block", "server_rewrite_by_lua_block", "set_by_lua_block",
    "ssl_certificate_by_lua_block", "ssl_client_hello_by_lua_block", "ssl_session_fetch_by_lua_block",
    "ssl_session_store_by_lua_block",
})

_TOKEN = re.compile(
    r"""(?P<open>\{)|(?P<close>\})|(?P<long>\[=*\[)|--(?P<longcomment>\[=*\[)|\]=*\]|--[^\n]*"""
    r"""|"(?:\\[^\n]|[^"\n\\])*"|'(?:\\[^\n]|[^'\n\\])*'|(?P<quote>["'])"""
)


class LuaBlockError(Exception):
    """A Lua block that nginx would refuse; ``line`` is the line of the scanned text it is on (1-based)."""

    def __init__(self, message: str, line: int) -> None:
        self.message = message
        self.line = line
        super().__init__(message)


def is_lua_block(directive: str) -> bool:
    """Whether ``directive`` hands the inside of its block to the Lua module."""
    return directive.endswith(SUFFIX)


def block_end(text: str, start: int, final: bool = True) -> Optional[int]:
    """The index of the ``}`` that closes a Lua block whose body starts at ``text[start]``.

    With ``final=False`` the text may be cut short: None means the answer
    depends on text not read yet (the block, a long bracket or a string is
    still open at the end). With ``final=True`` the text is all there is.

    Raises:
        LuaBlockError: (``final`` only) the block or one of its long brackets is never closed.
    """
    level = 1
    pos = start
    while True:
        m = _TOKEN.search(text, pos)
        if m is None:
            break
        pos = m.end()
        if m.group("open"):
            level += 1
        elif m.group("close"):
            level -= 1
            if level == 0:
                return m.start()
        elif m.group("quote"):
            # No closing quote on this line: nginx skips the quote and reads on.
            if not final and "\n" not in text[pos:]:
                return None
        elif m.group("long") or m.group("longcomment"):
            bracket = m.group("long") or m.group("longcomment")
            closing = "]" + bracket[1:-1] + "]"
            found = text.find(closing, pos)
            if found < 0:
                if not final:
                    return None
                raise LuaBlockError(f'Lua code block missing the closing long bracket "{closing}"',
                                    text.count("\n", 0, m.start()) + 1)
            pos = found + len(closing)
    if not final:
        return None
    raise LuaBlockError("unexpected end of file, expecting terminating characters for lua code block",
                        text.count("\n", 0, start) + 1)


def _crossplane_lexer(chars: Iterator[Tuple[str, int]], directive: str) -> Iterator[Tuple[str, int, bool]]:
    """crossplane's external-lexer protocol: read from just after the directive name, yield its tokens.

    The block becomes one quoted argument and a ``;``, as crossplane's own Lua
    extension gives it. ``chars`` yields (text, line), text being one
    character or a backslash and the character it escapes.

    Raises:
        NgxParserSyntaxError: no ``{`` where the block should start, or the block is not closed.
    """
    from crossplane.errors import NgxParserSyntaxError

    char, line = "", 0
    if directive == "set_by_lua_block":  # the one with an argument: the variable to set
        arg = ""
        for char, line in chars:
            if char == "{" or (char.isspace() and arg):
                break
            arg += char.strip()
        yield (arg, line, False)
    if char != "{":
        for char, line in chars:
            if not char.isspace():
                break
    if char != "{":
        raise NgxParserSyntaxError(f'expected "{{" to start the Lua block of "{directive}"', None, line)
    start_line = line
    body = ""
    end: Optional[int] = None
    for char, line in chars:
        body += char
        if char.endswith("}"):
            end = block_end(body, 0, final=False)
            if end is not None:
                break
    else:
        try:
            end = block_end(body, 0, final=True)
        except LuaBlockError as exc:
            raise NgxParserSyntaxError(exc.message, None, start_line + exc.line - 1) from exc
    if end != len(body) - 1:
        # A quote left open on its line hid this "}" until the line ended; what
        # followed has been read past and cannot be handed back to crossplane.
        raise NgxParserSyntaxError("a string in the Lua block is not closed on its line",
                                   None, start_line + body.count("\n", 0, end))
    yield (body[:-1], start_line, True)
    yield (";", line, False)


def register_with_crossplane() -> None:
    """Make crossplane read every ``*_by_lua_block`` with :func:`block_end` (replacing its own Lua lexer)."""
    from crossplane.lexer import register_external_lexer

    register_external_lexer(directives=sorted(DIRECTIVES), lexer=_crossplane_lexer)
