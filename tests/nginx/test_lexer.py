"""Unit tests of the span-keeping nginx tokenizer (nginx_canary.nginx.lexer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import crossplane
import pytest

from nginx_canary.errors import ConfigError
from nginx_canary.nginx.lexer import (
    BLOCK_END,
    BLOCK_START,
    COMMENT,
    SEMICOLON,
    WORD,
    Token,
    statements,
    tokenize,
)
from tests.conftest import CORPUS

SAMPLE = (
    "# leading comment\n"
    "http {\n"
    "\tupstream app {  # trailing\n"
    '        server 10.0.0.1:80 "weight=5" max_fails=3;\n'
    "        server 'unix:/tmp/a b.sock' down;\n"
    "    }\n"
    '    log_format main \'$remote_addr "$request"\' "it\\"s";\n'
    "    set $x ${host}a#b;\n"
    "}\n"
)


def toks(text: str) -> List[Token]:
    """All tokens of ``text`` as a list."""
    return list(tokenize(text))


def words(text: str) -> List[str]:
    """The values of the word tokens of ``text``."""
    return [t.value for t in tokenize(text) if t.kind == WORD]


def kinds_values(text: str) -> List[Tuple[str, str]]:
    """(kind, value) of every token of ``text``."""
    return [(t.kind, t.value) for t in tokenize(text)]


def simple(text: str) -> List[Tuple[str, List[str], int]]:
    """(name, args, depth) of every statement of ``text``."""
    return [(s.name.value, [a.value for a in s.args], s.depth) for s in statements(text)]


# --- spans -----------------------------------------------------------------


def test_spans_reproduce_the_source_text() -> None:
    """Every token's span is exactly its source text, and only whitespace lies between tokens."""
    tokens = toks(SAMPLE)
    pos = 0
    for tok in tokens:
        assert SAMPLE[pos:tok.start].strip(" \t\r\n") == "", (pos, tok)
        raw = SAMPLE[tok.start:tok.end]
        if tok.kind == WORD and not tok.quoted and "\\" not in raw:
            assert raw == tok.value
        elif tok.kind == WORD and tok.quoted:
            assert raw[0] == raw[-1] and raw[0] in "\"'"
        elif tok.kind == COMMENT:
            assert raw == tok.value and raw.startswith("#")
        else:
            assert raw == tok.kind == tok.value
        pos = tok.end
    assert SAMPLE[pos:].strip() == ""


def test_spans_of_quoted_words_include_the_quotes() -> None:
    """A quoted word's span covers the quotes; its value does not."""
    text = 'a "b c" \'d\';'
    tokens = [t for t in toks(text) if t.kind == WORD]
    assert [text[t.start:t.end] for t in tokens] == ["a", '"b c"', "'d'"]
    assert [t.value for t in tokens] == ["a", "b c", "d"]
    assert [t.quoted for t in tokens] == [False, True, True]


def test_statement_spans_point_at_the_directive() -> None:
    """A statement's name, args and end token all point into the text."""
    (stmt,) = [s for s in statements(SAMPLE) if s.name.value == "server" and s.args[0].value.startswith("10.")]
    assert SAMPLE[stmt.name.start:stmt.end.end] == 'server 10.0.0.1:80 "weight=5" max_fails=3;'
    assert [SAMPLE[a.start:a.end] for a in stmt.args] == ["10.0.0.1:80", '"weight=5"', "max_fails=3"]
    assert stmt.end.kind == SEMICOLON
    assert stmt.depth == 2


# --- quoting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"double quoted";', "double quoted"),
        ("'single quoted';", "single quoted"),
        ('"say \\"hi\\"";', 'say "hi"'),
        ("'it\\'s';", "it's"),
        ('"a\\\\b";', "a\\b"),
        ('"tab\\there";', "tab\there"),
        ('"mixed \' quote";', "mixed ' quote"),
        ("'mixed \" quote';", 'mixed " quote'),
        ('"";', ""),
        ('"a;b{c}#d";', "a;b{c}#d"),
    ],
)
def test_quoted_words(text: str, value: str) -> None:
    """Quoted strings keep separators inside and unescape \\" \\' \\\\ \\t."""
    (tok,) = [t for t in toks(text) if t.kind == WORD]
    assert tok.quoted
    assert tok.value == value
    assert text[tok.start:tok.end] == text[:-1]


def test_quote_inside_a_word_is_an_ordinary_character() -> None:
    """Only a quote at the start of a word opens a string."""
    assert words("a\"b' c;") == ["a\"b'", "c"]


def test_quoted_word_may_be_followed_by_separators() -> None:
    """A closing quote may be followed by a space, ``;`` or ``{``."""
    assert kinds_values('a "b";') == [(WORD, "a"), (WORD, "b"), (SEMICOLON, ";")]
    assert kinds_values('a "b"{') == [(WORD, "a"), (WORD, "b"), (BLOCK_START, "{")]


def test_closing_paren_after_quote_starts_a_new_word() -> None:
    """``if ($host != 'x')`` is valid nginx: the ``)`` becomes a word of its own."""
    text = "if ($host != 'example.org') { return 301; }"
    assert simple(text) == [("if", ["($host", "!=", "example.org", ")"], 0), ("return", ["301"], 1)]


# --- comments --------------------------------------------------------------


def test_hash_only_starts_a_comment_at_word_start() -> None:
    """``a#b`` is one word; ``a #b`` is a word then a comment."""
    assert kinds_values("a#b;") == [(WORD, "a#b"), (SEMICOLON, ";")]
    assert kinds_values("a #b;\n") == [(WORD, "a"), (COMMENT, "#b;")]


def test_comment_runs_to_end_of_line() -> None:
    """A comment swallows ``;`` ``{`` ``}`` and quotes until the line break."""
    text = "a; # b; { } \"c\n d;"
    assert kinds_values(text) == [
        (WORD, "a"), (SEMICOLON, ";"), (COMMENT, '# b; { } "c'), (WORD, "d"), (SEMICOLON, ";"),
    ]


def test_comment_right_after_a_separator() -> None:
    """``;#``, ``{#`` and ``}#`` start comments."""
    assert [t.kind for t in toks("a;#x\nb{#y\n}#z\n")] == [
        WORD, SEMICOLON, COMMENT, WORD, BLOCK_START, COMMENT, BLOCK_END, COMMENT,
    ]


def test_comments_are_skipped_by_statements() -> None:
    """A comment between the words of a directive does not end it."""
    assert simple("server a # canary\n  weight=2 # heavier\n  ;\n") == [("server", ["a", "weight=2"], 0)]


def test_comment_after_quote_is_an_error() -> None:
    """nginx needs a separator after a closing quote, ``#`` is not one."""
    with pytest.raises(ConfigError):
        toks('a "b"#c;')


# --- variables and braces --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("set $a ${b}c;", [("set", ["$a", "${b}c"], 0)]),
        ("return 200 ${scheme}://${host};", [("return", ["200", "${scheme}://${host}"], 0)]),
        ("set ${a} 1;", [("set", ["${a}", "1"], 0)]),
    ],
)
def test_dollar_brace_does_not_open_a_block(text: str, expected: List[Tuple[str, List[str], int]]) -> None:
    """``${var}`` stays inside the word."""
    assert simple(text) == expected


def test_brace_without_dollar_ends_the_word() -> None:
    """``a{`` is the word ``a`` then a block start; ``a}`` is one word."""
    assert kinds_values("a{") == [(WORD, "a"), (BLOCK_START, "{")]
    assert kinds_values("a}") == [(WORD, "a}")]


def test_nested_depths() -> None:
    """Statements report how deep in blocks they sit."""
    text = "http { upstream u { server a; } server { listen 80; } }"
    assert simple(text) == [
        ("http", [], 0), ("upstream", ["u"], 1), ("server", ["a"], 2), ("server", [], 1), ("listen", ["80"], 2),
    ]


def test_backslash_escapes_a_separator_in_a_word() -> None:
    """A backslash keeps the next character in the word."""
    assert words("a\\;b c;") == ["a\\;b", "c"]
    assert words("a\\ b;") == ["a\\ b"]


# --- line numbers ----------------------------------------------------------


def test_line_numbers() -> None:
    """Each token carries the line it starts on."""
    text = "a;\n\nb c\n  d;\n# x\ne {\n}\n"
    assert [(t.value, t.line) for t in toks(text)] == [
        ("a", 1), (";", 1), ("b", 3), ("c", 3), ("d", 4), (";", 4), ("# x", 5), ("e", 6), ("{", 6), ("}", 7),
    ]


def test_line_numbers_with_crlf() -> None:
    """CRLF files count lines the same way; CR is whitespace."""
    text = "a;\r\nupstream u {\r\n    server x\r\n        weight=2;\r\n}\r\n"
    stmts = list(statements(text))
    assert [(s.name.value, s.name.line, s.end.line) for s in stmts] == [
        ("a", 1, 1), ("upstream", 2, 2), ("server", 3, 4),
    ]
    assert [a.value for a in stmts[2].args] == ["x", "weight=2"]


def test_multi_line_directive_keeps_start_line() -> None:
    """A directive spread over lines starts on its name's line; each word keeps its own line."""
    text = "upstream u {\n  server\n    10.0.0.1:80\n    weight=3\n    down\n  ;\n}\n"
    (server,) = [s for s in statements(text) if s.name.value == "server"]
    assert server.name.line == 2
    assert [(a.value, a.line) for a in server.args] == [("10.0.0.1:80", 3), ("weight=3", 4), ("down", 5)]
    assert server.end.line == 6


def test_multi_line_quoted_string_counts_lines() -> None:
    """Line breaks inside quotes advance the line count."""
    text = 'a "x\ny\nz";\nb;\n'
    tokens = toks(text)
    assert tokens[1].value == "x\ny\nz" and tokens[1].line == 1
    assert (tokens[3].value, tokens[3].line) == ("b", 4)


def test_escaped_newline_in_word_counts_lines() -> None:
    """A backslash-newline inside a word still advances the line count."""
    tokens = toks("a\\\nb;\nc;")
    assert [(t.kind, t.line) for t in tokens] == [(WORD, 1), (SEMICOLON, 2), (WORD, 3), (SEMICOLON, 3)]


# --- errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'a "unterminated;\n',
        "a 'unterminated;\n",
        'a "escaped end\\";\n',
        'a "b"c;',
        "a 'b'\"c\";",
    ],
)
def test_bad_quotes_raise_config_error(text: str) -> None:
    """Unterminated quotes and quotes glued to another word are ConfigErrors."""
    with pytest.raises(ConfigError):
        list(statements(text))


def test_unterminated_quote_reports_its_line() -> None:
    """The error points at the line where the quote opened, with the file name."""
    with pytest.raises(ConfigError) as info:
        toks('a;\nb "never closed;\nc;\n')
    assert info.value.line == 2
    with pytest.raises(ConfigError) as info:
        list(tokenize('a "x', filename="/etc/nginx/x.conf"))
    assert str(info.value).startswith("/etc/nginx/x.conf:1:")


@pytest.mark.parametrize(
    "text",
    [
        "http {\n  a;\n",
        "http { upstream u { server a; }\n",
        "a;\n}\n",
        "http { }\n}\n",
        "}",
        "a b }",
        "a b",
        ";",
        "{ }",
        "a { ; }",
    ],
)
def test_unbalanced_braces_and_stray_separators_raise_config_error(text: str) -> None:
    """Missing or extra ``}``, unterminated directives and stray ``;``/``{`` are ConfigErrors."""
    with pytest.raises(ConfigError):
        list(statements(text))


def test_balanced_text_raises_nothing() -> None:
    """The sample config, with comments everywhere, parses."""
    assert [s.name.value for s in statements(SAMPLE)] == [
        "http", "upstream", "server", "server", "log_format", "set",
    ]


# --- agreement with crossplane on real configs -------------------------------

Flat = List[Tuple[str, int, Optional[List[str]]]]


def _flatten(tree: List[Dict[str, Any]], out: Flat) -> Flat:
    for stmt in tree:
        if stmt["directive"] == "#":
            continue
        # crossplane strips the parentheses of ``if``; nginx (and the lexer) keep them.
        args = None if stmt["directive"] == "if" else stmt["args"]
        out.append((stmt["directive"], stmt["line"], args))
        _flatten(stmt.get("block", []), out)
    return out


CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_statements_agree_with_crossplane_on_corpus(path: Path) -> None:
    """Every corpus file yields the directives, args and lines crossplane finds (read only)."""
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    mine = [
        (s.name.value, s.name.line, None if s.name.value == "if" else [a.value for a in s.args])
        for s in statements(text, str(path))
    ]
    payload = crossplane.parse(str(path), single=True, comments=True, check_ctx=False, check_args=False)
    assert payload["status"] == "ok", payload["errors"]
    assert mine == _flatten(payload["config"][0]["parsed"], [])
    for tok in tokenize(text):
        if tok.kind == WORD and not tok.quoted and "\\" not in text[tok.start:tok.end]:
            assert text[tok.start:tok.end] == tok.value


def test_corpus_is_present() -> None:
    """The corpus cross-check must not silently run over nothing."""
    assert len(CORPUS_FILES) >= 70
