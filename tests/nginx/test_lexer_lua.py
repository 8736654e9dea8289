"""The inside of OpenResty ``*_by_lua_block``s is Lua: the span-keeping lexer and crossplane skip it as nginx does.

Each case was checked against nginx 1.22 with Debian's Lua module
(tests/nginx/test_openresty.py runs the same snippets through ``nginx -t``).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import pytest

from nginx_canary.errors import ConfigError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.edit import ServerChange, edit_servers, server_statements
from nginx_canary.nginx.lexer import BLOCK_END, BLOCK_START, LUA, statements, tokenize
from nginx_canary.nginx.lua_block import block_end, is_lua_block

#: Lua bodies nginx reads as one block: their ``}`` / ``{`` / ``;`` / quotes are all Lua's.
LUA_BODIES = {
    "string then comma": 'ngx.log(ngx.ERR, "failed: ", err)',
    "single quotes then comma": "ngx.log(ngx.ERR, 'failed: ', err)",
    "separators in strings": 'local a, b = "x; y", \'{ z }\'',
    "lone close brace in string": 'local s = "}"',
    "lone open brace in string": "local s = '{'",
    "escaped double quote": r'ngx.say("{\"ok\": true}")',
    "escaped single quote": r"local s = 'it\'s } here'",
    "escaped backslash before quote": r'local s = "a\\" local t = "}"',
    "other quote inside": "local s = \"it's }\" local t = '\"{'",
    "nested tables": "local t = { a = { b = { c = {} } }, d = {} }",
    "long string": "local s = [[ } ; \" ' { ]]",
    "long string over lines": "local s = [[\n  }\n  \"\n]]",
    "leveled long string": "local s = [==[ ]] ]=] } ]==]",
    "line comment": "-- } closes nothing\nlocal x = 1",
    "comment with quote": "-- it's \"not } a string\nlocal x = 1",
    "long comment": "--[[ }\n } ]] local x = 1",
    "leveled long comment": "--[=[ ]] } ]=] local x = 1",
    "comment that only looks long": "--[ } is in a line comment\nlocal x = 1",
    "length operator": "if #parts > 0 then return #parts end",
    "hash in string": 'local s = "#}"',
    "indexing brackets": "local v = t[a[1]] local w = t[ [[k]] ]",
    "minus signs": "local x = 1 - -2 local y = a-b",
    "empty": "",
}


def lua_config(body: str, directive: str = "content_by_lua_block") -> str:
    """A config with ``body`` in a Lua block, and an upstream after it."""
    return (
        "http {\n"
        "    server {\n"
        "        location / {\n"
        f"            {directive} {{\n{body}\n}}\n"
        "        }\n"
        "    }\n"
        "    upstream app {\n"
        "        server 127.0.0.1:8001 weight=3;\n"
        "        server 127.0.0.1:8002;\n"
        "    }\n"
        "}\n"
    )


def shape(text: str) -> List[Tuple[str, List[str], int]]:
    return [(s.name.value, [a.value for a in s.args], s.depth) for s in statements(text)]


EXPECTED_SHAPE = [
    ("http", [], 0), ("server", [], 1), ("location", ["/"], 2), ("content_by_lua_block", [], 3),
    ("upstream", ["app"], 1), ("server", ["127.0.0.1:8001", "weight=3"], 2), ("server", ["127.0.0.1:8002"], 2),
]


@pytest.mark.parametrize("body", list(LUA_BODIES.values()), ids=list(LUA_BODIES))
def test_lua_block_is_one_opaque_token(body: str) -> None:
    """The body between the braces is one LUA token, exactly the source text; the directives around are intact."""
    text = lua_config(body)
    assert shape(text) == EXPECTED_SHAPE
    lua = [t for t in tokenize(text) if t.kind == LUA]
    assert len(lua) == 1
    assert lua[0].value == text[lua[0].start:lua[0].end] == f"\n{body}\n"


@pytest.mark.parametrize("body", list(LUA_BODIES.values()), ids=list(LUA_BODIES))
def test_crossplane_reads_the_same_upstream(body: str, tmp_path: Path) -> None:
    """load_config (crossplane) finds the upstream after the block, and the block's code as written."""
    text = lua_config(body)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    (upstream,) = load_config(str(conf)).upstreams
    first = text[:text.index("server 127.0.0.1:8001")].count("\n") + 1
    assert [(s.address, s.params, s.line) for s in upstream.servers] == [
        ("127.0.0.1:8001", ("weight=3",), first), ("127.0.0.1:8002", (), first + 1)]


@pytest.mark.parametrize("body", list(LUA_BODIES.values()), ids=list(LUA_BODIES))
def test_editing_after_a_lua_block_changes_only_the_weight(body: str) -> None:
    text = lua_config(body)
    line = text[:text.index("server 127.0.0.1:8001")].count("\n") + 1
    out = edit_servers(text, [ServerChange(line, "127.0.0.1:8001", 7, False)])
    assert out == text.replace("weight=3;", "weight=7;")


def test_lines_after_a_multi_line_block_are_counted() -> None:
    text = lua_config("local s = [[\n\n]]\n-- x\nlocal t = {\n}")
    server = server_statements(text)[0]
    assert server.name.line == text[:text.index("server 127.0.0.1:8001")].count("\n") + 1


def test_body_token_and_braces_positions() -> None:
    text = 'location / { content_by_lua_block { ngx.say("}") } }'
    toks = list(tokenize(text))
    kinds = [t.kind for t in toks]
    assert kinds[-4:] == [BLOCK_START, LUA, BLOCK_END, BLOCK_END]
    assert text[toks[-3].start:toks[-3].end] == ' ngx.say("}") '


@pytest.mark.parametrize("directive", [
    "access_by_lua_block", "rewrite_by_lua_block", "log_by_lua_block", "header_filter_by_lua_block",
    "body_filter_by_lua_block", "init_by_lua_block", "init_worker_by_lua_block", "balancer_by_lua_block",
    "ssl_certificate_by_lua_block", "preread_by_lua_block", '"content_by_lua_block"',
])
def test_every_by_lua_block_directive(directive: str, tmp_path: Path) -> None:
    body = 'ngx.log(ngx.ERR, "x: ", "}")'
    text = lua_config(body, directive)
    assert [s.name.value for s in statements(text)][3] == directive.strip('"')
    assert len(server_statements(text)) == 2
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    assert len(load_config(str(conf)).upstreams[0].servers) == 2


def test_any_name_ending_in_by_lua_block_is_lua() -> None:
    assert is_lua_block("foo_by_lua_block") and not is_lua_block("content_by_lua")
    assert shape('foo_by_lua_block { a("}", 1) }\nx y;') == [("foo_by_lua_block", [], 0), ("x", ["y"], 0)]


def test_set_by_lua_block_keeps_its_variable(tmp_path: Path) -> None:
    text = lua_config('return ngx.var.a .. ";" .. "}"', "set_by_lua_block $tag")
    assert shape(text)[3] == ("set_by_lua_block", ["$tag"], 3)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    assert len(load_config(str(conf)).upstreams[0].servers) == 2


def test_brace_right_after_the_name() -> None:
    assert shape('content_by_lua_block{ ngx.say("{") }\nx;') == [("content_by_lua_block", [], 0), ("x", [], 0)]


def test_other_blocks_are_nginx_tokens() -> None:
    """Only *_by_lua_block hands its block to Lua: content_by_lua "..." and plain blocks are nginx's."""
    assert shape('content_by_lua \'ngx.say("}")\';\nlocation / { x "}"; }') == [
        ("content_by_lua", ['ngx.say("}")'], 0), ("location", ["/"], 0), ("x", ["}"], 1)]


def test_one_line_blocks_in_one_line_locations(tmp_path: Path) -> None:
    text = ('http { server { location /a { content_by_lua_block { ngx.say("a}") } } '
            'location /b { content_by_lua_block { ngx.say(\'{b\') } } }\n'
            'upstream u { server 127.0.0.1:1 weight=2; } }\n')
    assert [s.name.value for s in server_statements(text)] == ["server"]
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    assert load_config(str(conf)).upstreams[0].servers[0].params == ("weight=2",)


def test_quote_not_closed_on_its_line_is_skipped_like_nginx() -> None:
    """nginx skips a quote that does not close on its line: the "}" after it ends the block."""
    text = 'local s = "}\nmore'
    assert block_end(text, 0) == text.index("}")


def test_quote_open_at_the_end_of_a_partial_text_needs_more() -> None:
    assert block_end('local s = "}', 0, final=False) is None
    assert block_end("local s = [[ }", 0, final=False) is None
    assert block_end("-- }", 0, final=False) is None
    assert block_end("x }", 0, final=False) == 2


@pytest.mark.parametrize("text, message, line", [
    ("x;\ncontent_by_lua_block {\n  ngx.say(1)\n", "expecting terminating characters for lua code block", 2),
    ("content_by_lua_block {\n  local s = [==[ ]] }\n}\n", 'missing the closing long bracket "]==]"', 2),
    ("content_by_lua_block {\n\n  --[[ }\n}\n", 'missing the closing long bracket "]]"', 3),
])
def test_unclosed_lua_is_a_config_error_with_its_line(text: str, message: str, line: int, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        list(tokenize(text, "f.conf"))
    assert message in info.value.message and info.value.line == line and info.value.file == "f.conf"
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert message in info.value.message and info.value.line == line and info.value.file == str(conf)


def test_crossplane_refuses_what_it_cannot_hand_back(tmp_path: Path) -> None:
    """A quote left open hides a "}" until its line ends; crossplane cannot re-read what followed, so it says so."""
    conf = tmp_path / "nginx.conf"
    conf.write_text('http {\n content_by_lua_block {\n  local s = "}\n }\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert "not closed on its line" in info.value.message and info.value.line == 3
