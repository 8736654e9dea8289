"""The parameters of an upstream ``server`` line, checked the way nginx checks them.

nginx refuses a parameter it does not know with ``invalid parameter "X"``. The
usual way to meet that message is a ``;`` left off the end of a line, which
makes the next ``server`` line part of this one; listing such a config as if it
were valid would hide exactly the mistake nginx is about to refuse.
"""

from __future__ import annotations

from typing import Optional, Sequence

from nginx_canary.errors import ConfigError
from nginx_canary.nginx.lexer import statements
from nginx_canary.nginx.model import UpstreamServer

#: Parameters without a value: nginx's, and NGINX Plus's ``drain``.
FLAGS = frozenset({"backup", "down", "resolve", "drain"})
#: ``name=value`` parameters whose value is an integer (weight: at least 1).
COUNTS = frozenset({"weight", "max_fails", "max_conns"})
#: Other ``name=value`` parameters (time values and names, left to ``nginx -t`` to judge).
VALUED = frozenset({"fail_timeout", "service", "slow_start", "route"})


def _valid(param: str) -> bool:
    name, eq, value = param.partition("=")
    if not eq:
        return param in FLAGS
    if name in COUNTS:
        return value.isdigit() and (name != "weight" or int(value) > 0)
    return name in VALUED and value != ""


def _word_line(file: str, line: int, index: int) -> Optional[int]:
    """The line of argument ``index`` of the ``server`` directive starting on ``line`` of ``file`` (None: not found)."""
    try:
        with open(file, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for stmt in statements(text, file):
            if stmt.name.value == "server" and stmt.name.line == line and len(stmt.args) > index:
                return stmt.args[index].line
    except (OSError, ConfigError):
        pass  # the line of the directive will do
    return None


def upstream_server(args: Sequence[str], file: str, line: int) -> UpstreamServer:
    """The server that ``server ARGS;`` on ``line`` of ``file`` declares in an upstream block.

    Raises:
        ConfigError: a parameter nginx would refuse, with the line it is on
            (for a ``server`` word: the ``;`` missing before it).
    """
    for index, param in enumerate(args[1:], start=1):
        if _valid(param):
            continue
        where = _word_line(file, line, index) or line
        hint = ""
        if param == "server":
            before = _word_line(file, line, index - 1) or line
            hint = f' (a ";" missing at the end of line {before}?)'
        raise ConfigError(f'invalid parameter "{param}"{hint}', file=file, line=where)
    return UpstreamServer(args[0], tuple(args[1:]), file, line)
