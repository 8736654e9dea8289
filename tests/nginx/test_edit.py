"""Unit and property tests of the in-place server edits (nginx_canary.nginx.edit)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nginx_canary.errors import ConfigError, EditError
from nginx_canary.nginx.edit import ServerChange, edit_servers
from nginx_canary.nginx.lexer import COMMENT, Statement, statements, tokenize


def edit1(text: str, line: int, address: str, weight: int, down: bool) -> str:
    """Apply one change to ``text``."""
    return edit_servers(text, [ServerChange(line, address, weight, down)], filename="test.conf")


def server_args(text: str) -> Dict[str, List[str]]:
    """Argument values (after the address) of each simple ``server`` directive, by address."""
    return {
        s.args[0].value: [a.value for a in s.args[1:]]
        for s in statements(text)
        if s.name.value == "server" and s.args and s.end.kind == ";"
    }


# --- weight ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "weight", "new"),
    [
        ("server a:80;", 3, "server a:80 weight=3;"),
        ("server a:80 max_fails=3;", 3, "server a:80 weight=3 max_fails=3;"),
        ("server a:80 weight=2;", 5, "server a:80 weight=5;"),
        ("server a:80 weight=2 max_fails=3;", 1, "server a:80 weight=1 max_fails=3;"),
        ("server a:80 max_fails=3 weight=2 fail_timeout=5s;", 7, "server a:80 max_fails=3 weight=7 fail_timeout=5s;"),
        ("server a:80;", 1, "server a:80;"),
        ("server a:80 weight=4;", 4, "server a:80 weight=4;"),
        ("server a:80 weight=04;", 4, "server a:80 weight=04;"),
        ('server "a:80";', 2, 'server "a:80" weight=2;'),
    ],
)
def test_weight_added_changed_or_kept(old: str, weight: int, new: str) -> None:
    """A new weight goes after the address, an existing one is replaced in place, an equal one is kept."""
    assert edit1(old, 1, "a:80", weight, False) == new


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('server a:80 "weight=5";', 'server a:80 "weight=9";'),
        ("server a:80 'weight=5';", "server a:80 'weight=9';"),
        ('server a:80 "weight=5" down;', 'server a:80 "weight=9";'),
    ],
)
def test_quoted_weight_keeps_its_quotes(old: str, new: str) -> None:
    """A quoted ``weight=`` stays quoted with the same quote character."""
    assert edit1(old, 1, "a:80", 9, False) == new


def test_quoted_weight_equal_is_untouched() -> None:
    """A quoted weight equal to the wanted one is left exactly as written."""
    assert edit1('server a:80 "weight=5";', 1, "a:80", 5, False) == 'server a:80 "weight=5";'


# --- down --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "weight", "new"),
    [
        ("server a:80;", 1, "server a:80 down;"),
        ("server a:80;", 3, "server a:80 weight=3 down;"),
        ("server a:80 weight=2;", 2, "server a:80 weight=2 down;"),
        ("server a:80 weight=2;", 6, "server a:80 weight=6 down;"),
        ("server a:80 max_fails=3 fail_timeout=5s;", 1, "server a:80 max_fails=3 fail_timeout=5s down;"),
        ("server a:80 max_fails=3;", 2, "server a:80 weight=2 max_fails=3 down;"),
        ("server a:80 down;", 1, "server a:80 down;"),
        ("server a:80 down weight=2;", 5, "server a:80 down weight=5;"),
    ],
)
def test_down_added_after_last_argument(old: str, weight: int, new: str) -> None:
    """``down`` goes after the last argument (or after an inserted weight); an existing one stays."""
    assert edit1(old, 1, "a:80", weight, True) == new


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("server a:80 down;", "server a:80;"),
        ("server a:80\tdown;", "server a:80;"),
        ("server a:80 \t down weight=2;", "server a:80 weight=2;"),
        ("server a:80 down  ;", "server a:80  ;"),
        ("server a:80 weight=2 down max_fails=1;", "server a:80 weight=2 max_fails=1;"),
        ('server a:80 "down";', "server a:80;"),
        ("server a:80 down down;", "server a:80;"),
        ("server a:80;", "server a:80;"),
    ],
)
def test_down_removed_with_its_spaces(old: str, new: str) -> None:
    """``down`` goes with the spaces and tabs before it, and nothing else."""
    assert edit1(old, 1, "a:80", 2 if "weight=2" in old else 1, False) == new


def test_down_removed_and_weight_inserted_at_same_place() -> None:
    """Removing ``down`` right after the address while inserting a weight there."""
    assert edit1("server a:80 down;", 1, "a:80", 3, False) == "server a:80 weight=3;"


@pytest.mark.parametrize(
    ("old", "down", "new"),
    [
        ("server a:80 weight=9;", False, "server a:80;"),
        ("server a:80 weight=9;", True, "server a:80 down;"),
        ("server a:80 weight=9 max_fails=3;", True, "server a:80 max_fails=3 down;"),
        ("server a:80 max_fails=3 weight=9;", False, "server a:80 max_fails=3;"),
        ("server a:80;", True, "server a:80 down;"),
        ("server a:80 weight=1 down;", True, "server a:80 down;"),
    ],
)
def test_bare_weight_takes_the_weight_word_away(old: str, down: bool, new: str) -> None:
    """A restore to a snapshot without ``weight=`` gives back that form, not ``weight=1``."""
    assert edit_servers(old, [ServerChange(1, "a:80", 1, down, bare_weight=True)]) == new
    # Without bare_weight the weight is written (the split's own edits).
    assert "weight=1" in edit_servers("server a:80 weight=9;", [ServerChange(1, "a:80", 1, down)])


def test_down_removal_never_takes_a_line_break() -> None:
    """A ``down`` alone on a line leaves the line (and the line count) in place."""
    old = "server a:80\n    down\n    ;\n"
    new = edit1(old, 1, "a:80", 1, False)
    assert new == "server a:80\n\n    ;\n"
    assert new.count("\n") == old.count("\n")


# --- surroundings kept ---------------------------------------------------------


def test_comments_and_trailing_comments_kept() -> None:
    """Comments around, inside and after the directive stay byte-identical."""
    old = (
        "upstream app {\n"
        "    # the canary: weight=1 down\n"
        "    server a:80 # first word\n"
        "        max_fails=3 # down weight=9\n"
        "        ;  # trailing; {\n"
        "    server b:80; # stable down\n"
        "}\n"
    )
    new = edit_servers(old, [ServerChange(3, "a:80", 4, True), ServerChange(6, "b:80", 2, False)])
    assert new == (
        "upstream app {\n"
        "    # the canary: weight=1 down\n"
        "    server a:80 weight=4 # first word\n"
        "        max_fails=3 down # down weight=9\n"
        "        ;  # trailing; {\n"
        "    server b:80 weight=2; # stable down\n"
        "}\n"
    )


def test_tabs_kept() -> None:
    """Tab indentation and tab separators are kept."""
    old = "upstream app {\n\tserver\ta:80\tweight=2\tdown;\n\tserver\tb:80;\n}\n"
    new = edit_servers(old, [ServerChange(2, "a:80", 3, False), ServerChange(3, "b:80", 1, True)])
    assert new == "upstream app {\n\tserver\ta:80\tweight=3;\n\tserver\tb:80 down;\n}\n"


def test_crlf_line_endings_kept() -> None:
    """CRLF files stay CRLF, with the same number of lines."""
    old = "upstream app {\r\n    server a:80 down;\r\n    server b:80\r\n      weight=2;\r\n}\r\n"
    new = edit_servers(old, [ServerChange(2, "a:80", 2, False), ServerChange(3, "b:80", 5, True)])
    assert new == "upstream app {\r\n    server a:80 weight=2;\r\n    server b:80\r\n      weight=5 down;\r\n}\r\n"
    assert new.count("\r\n") == old.count("\r\n") and new.count("\n") == old.count("\n")


def test_multi_line_server_directive() -> None:
    """Parameters on following lines are edited where they are; the directive is found by its first line."""
    old = "upstream app {\n    server\n        a:80\n        weight=2\n        max_fails=3\n        down\n    ;\n}\n"
    new = edit1(old, 2, "a:80", 6, False)
    assert new == "upstream app {\n    server\n        a:80\n        weight=6\n        max_fails=3\n\n    ;\n}\n"
    with pytest.raises(EditError):
        edit1(old, 3, "a:80", 6, False)


def test_multi_line_directive_add_weight_and_down() -> None:
    """A weight is inserted after the address, ``down`` after the last argument on its own line."""
    old = "server a:80\n  max_fails=3\n;\n"
    assert edit1(old, 1, "a:80", 2, True) == "server a:80 weight=2\n  max_fails=3 down\n;\n"


def test_several_servers_on_one_line() -> None:
    """Servers sharing a line are told apart by address; the others are untouched."""
    old = "upstream app { server a:80; server b:80 weight=2; server c:80 down; }\n"
    assert edit1(old, 1, "b:80", 3, True) == "upstream app { server a:80; server b:80 weight=3 down; server c:80 down; }\n"
    assert edit1(old, 1, "c:80", 1, False) == "upstream app { server a:80; server b:80 weight=2; server c:80; }\n"
    both = edit_servers(old, [ServerChange(1, "a:80", 4, False), ServerChange(1, "c:80", 4, False)])
    assert both == "upstream app { server a:80 weight=4; server b:80 weight=2; server c:80 weight=4; }\n"


@pytest.mark.parametrize("params", ["backup", "max_fails=3", "fail_timeout=10s", "max_fails=0 fail_timeout=30s backup",
                                    "slow_start=30s max_conns=100", "resolve"])
def test_other_params_untouched(params: str) -> None:
    """``backup``, ``max_fails=``, ``fail_timeout=`` and friends keep their text and order."""
    old = f"server a:80 {params};"
    new = edit1(old, 1, "a:80", 5, True)
    assert new == f"server a:80 weight=5 {params} down;"
    assert edit1(new, 1, "a:80", 5, False) == f"server a:80 weight=5 {params};"
    assert server_args(new)["a:80"] == ["weight=5", *params.split(), "down"]


def test_only_named_directives_change() -> None:
    """Other servers, other upstreams and other directives stay byte-identical."""
    old = (
        "upstream one { server a:80; server b:80; }\n"
        "upstream two { server a:80; server b:80; }\n"
    )
    new = edit1(old, 2, "a:80", 2, True)
    assert new == (
        "upstream one { server a:80; server b:80; }\n"
        "upstream two { server a:80 weight=2 down; server b:80; }\n"
    )


def test_no_change_gives_identical_text() -> None:
    """Asking for what is already written returns the same text."""
    old = "upstream app {\n  server a:80 weight=3;\n  server b:80 down;\n}\n"
    assert edit_servers(old, [ServerChange(2, "a:80", 3, False), ServerChange(3, "b:80", 1, True)]) == old
    assert edit_servers(old, []) == old


# --- refusals ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "address"),
    [(2, "z:80"), (3, "a:80"), (1, "a:80"), (99, "a:80")],
)
def test_directive_not_found(line: int, address: str) -> None:
    """No ``server ADDRESS`` starting on the line is an EditError naming file and line."""
    old = "upstream app {\n  server a:80;\n  server b:80;\n}\n"
    with pytest.raises(EditError) as info:
        edit1(old, line, address, 2, False)
    assert info.value.file == "test.conf" and info.value.line == line


def test_ambiguous_directive() -> None:
    """The same address twice on one line cannot be told apart."""
    with pytest.raises(EditError, match="more than one"):
        edit1("upstream app { server a:80; server a:80 backup; }\n", 1, "a:80", 2, False)


@pytest.mark.parametrize("weight", [0, -1, -100])
def test_weight_below_one(weight: int) -> None:
    """nginx has no weight below 1."""
    with pytest.raises(EditError):
        edit1("server a:80;", 1, "a:80", weight, False)


@pytest.mark.parametrize("bad", ["weight=abc", "weight=0", "weight=", "weight=-2", "weight=1.5"])
def test_existing_invalid_weight(bad: str) -> None:
    """A weight that is not a positive integer is not silently replaced."""
    with pytest.raises(EditError):
        edit1(f"server a:80 {bad};", 1, "a:80", 2, False)


def test_error_leaves_no_partial_edit() -> None:
    """One bad change among good ones raises instead of applying the good ones alone."""
    old = "server a:80;\nserver b:80;\n"
    with pytest.raises(EditError):
        edit_servers(old, [ServerChange(1, "a:80", 2, False), ServerChange(2, "nope:80", 2, False)])


def test_unparsable_text_is_config_error() -> None:
    """Text the lexer rejects raises a ConfigError (EditError is one too)."""
    with pytest.raises(ConfigError):
        edit1('server a:80 "weight=2;\n', 1, "a:80", 2, False)
    with pytest.raises(ConfigError):
        edit1("upstream app {\n server a:80;\n", 2, "a:80", 2, False)


# --- http server blocks ------------------------------------------------------


HTTP = """\
http {
    upstream app { server a:80; }
    server {
        listen 80;
        server_name a:80;
    }
    server { listen 81; }
}
"""


@pytest.mark.parametrize(("line", "address"), [(3, "{"), (3, "a:80"), (5, "a:80"), (7, "{"), (7, "listen")])
def test_http_server_blocks_never_matched(line: int, address: str) -> None:
    """``server {`` blocks (and directives inside them) are never taken for upstream servers."""
    with pytest.raises(EditError):
        edit1(HTTP, line, address, 2, True)


def test_upstream_server_next_to_http_server_blocks() -> None:
    """The upstream server itself is found and only it changes."""
    assert edit1(HTTP, 2, "a:80", 2, True) == HTTP.replace("server a:80;", "server a:80 weight=2 down;")


def test_stream_and_mail_server_blocks_with_arguments_never_matched() -> None:
    """A ``server`` directive ending in ``{`` is a block even when it has words."""
    text = "mail {\n  server a:80 {\n    listen 25;\n  }\n}\n"
    with pytest.raises(EditError):
        edit1(text, 2, "a:80", 2, False)


# --- property test -------------------------------------------------------------

ADDRESSES = ["10.0.0.1:80", "10.0.0.2:8080", "unix:/tmp/app.sock", "[::1]:81", "backend.example.org", "127.0.0.1"]
OTHER_PARAMS = ["backup", "max_fails=3", "fail_timeout=10s", "max_conns=50", "slow_start=5s"]
COMMENT_TEXTS = ["# note", "# down", "# weight=7 down;", "#{ } ; 'x", "#"]
# A word's removal regex: the word and the spaces/tabs before it, the word
# standing alone (whitespace or start before it, whitespace or ; after it).
REMOVABLE = re.compile(r"""[ \t]*(?<![^\s])(?:weight=\d+|"weight=\d+"|'weight=\d+'|down|"down"|'down')(?=[\s;])""")


@dataclass(frozen=True)
class GenServer:
    """One generated server directive: its address, wanted parameters and current state."""

    address: str
    weight: Optional[int]
    down: bool
    line: int


def _quote(word: str, style: int) -> str:
    return word if style == 0 else ('"%s"' % word if style == 1 else "'%s'" % word)


@st.composite
def separators(draw: st.DrawFn, newline: str) -> str:
    """Whitespace between two words of a directive: spaces, tabs, line breaks, comments."""
    parts = draw(st.lists(st.sampled_from(["space", "tab", "nl", "comment"]), min_size=1, max_size=3))
    out = ""
    for part in parts:
        if part == "space":
            out += " " * draw(st.integers(1, 3))
        elif part == "tab":
            out += "\t"
        elif part == "nl":
            out += newline + draw(st.sampled_from(["", "  ", "\t", "        "]))
        else:
            out += " " + draw(st.sampled_from(COMMENT_TEXTS)) + newline + draw(st.sampled_from(["", "    ", "\t"]))
    if not out[0].isspace():
        out = " " + out
    return out


@st.composite
def upstream_texts(draw: st.DrawFn) -> Tuple[str, List[GenServer]]:
    """An upstream block (in an http block next to an http ``server {}``) of random server directives."""
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    addresses = draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=5, unique=True))
    text = f"http {{{newline}    # upstreams{newline}    upstream app {{"
    gens: List[GenServer] = []
    for address in addresses:
        text += draw(st.sampled_from([" ", newline + "    ", newline + "\t", newline + newline + "  ",
                                      "  # down" + newline + "    "]))
        weight = draw(st.one_of(st.none(), st.integers(1, 12)))
        down = draw(st.booleans())
        params = draw(st.lists(st.sampled_from(OTHER_PARAMS), max_size=3, unique=True))
        if weight is not None:
            params.append(_quote(f"weight={weight}", draw(st.integers(0, 2))))
        if down:
            params.append(_quote("down", draw(st.sampled_from([0, 0, 0, 1]))))
        params = draw(st.permutations(params))
        line = text.count("\n") + 1
        text += "server" + draw(separators(newline)) + _quote(address, draw(st.sampled_from([0, 0, 0, 1])))
        for param in params:
            text += draw(separators(newline)) + param
        text += draw(st.sampled_from([";", " ;", newline + "    ;", "\t# end" + newline + ";"]))
        text += draw(st.sampled_from(["", " # trailing down" + newline, "\t#weight=3" + newline]))
        gens.append(GenServer(address, weight, down, line))
    text += f"{newline}    }}{newline}    server {{ listen 80; server_name 10.0.0.1:80; }}{newline}}}{newline}"
    return text, gens


def _stripped(text: str) -> str:
    """The text without weight / down words, blank runs made one space, none at line ends or starts."""
    text = re.sub(r"[ \t]+", " ", REMOVABLE.sub("", text))
    return re.sub(r" ?(\r?\n) ?", r"\1", text)


def _server_statements(text: str) -> Dict[str, Statement]:
    return {s.args[0].value: s for s in statements(text)
            if s.name.value == "server" and s.args and s.end.kind == ";"}


def _comments(text: str) -> List[str]:
    return [t.value for t in tokenize(text) if t.kind == COMMENT]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), generated=upstream_texts())
def test_random_upstreams_edit_only_weight_and_down(data: st.DataObject, generated: Tuple[str, Sequence[GenServer]]) -> None:
    """Random server directives edited with random weights/down flags change only those words."""
    old, gens = generated
    chosen = data.draw(st.lists(st.sampled_from(list(gens)), unique_by=lambda g: g.address), label="changed")
    changes = [ServerChange(g.line, g.address, data.draw(st.integers(1, 40)), data.draw(st.booleans())) for g in chosen]
    new = edit_servers(old, changes)

    # (a) the lexer reads back the wanted weight / down; other servers keep theirs.
    wanted = {c.address: c for c in changes}
    before, after = _server_statements(old), _server_statements(new)
    assert before.keys() == after.keys()
    for gen in gens:
        args = [a.value for a in after[gen.address].args[1:]]
        weights = [int(a[len("weight="):]) for a in args if a.startswith("weight=")]
        change = wanted.get(gen.address)
        want_weight = change.weight if change else (gen.weight or 1)
        want_down = change.down if change else gen.down
        assert (weights[-1] if weights else 1) == want_weight
        assert ("down" in args) == want_down
        assert after[gen.address].name.line == gen.line
        others = [a for a in args if not a.startswith("weight=") and a != "down"]
        assert others == [a.value for a in before[gen.address].args[1:]
                          if not a.value.startswith("weight=") and a.value != "down"]
        if change and change.weight == (gen.weight or 1) and change.down == gen.down or not change:
            s_old, s_new = before[gen.address], after[gen.address]
            assert old[s_old.name.start:s_old.end.end] == new[s_new.name.start:s_new.end.end]

    # (b) removing every weight=N / down word gives the same text, but for blanks beside them.
    assert _stripped(old) == _stripped(new)
    assert old.count("\n") == new.count("\n") and old.count("\r") == new.count("\r")
    assert _comments(old) == _comments(new)


# --- parameters on their own lines (issue #16) ------------------------------------------

OWN_LINE = "upstream app {\n    server a:80\n        down;  # comment\n    server b:80 weight=90;\n}\n"


def test_own_line_down_removed_keeps_the_semicolon_in_its_column() -> None:
    """``down`` first on its line goes with the blanks after it; the indentation stays for the ``;``."""
    assert edit1(OWN_LINE, 2, "a:80", 1, False) == OWN_LINE.replace("        down;", "        ;")


def test_own_line_down_comes_back_byte_identical_from_the_original() -> None:
    original = "server a:80\n        down;"
    up = edit_servers(OWN_LINE, [ServerChange(2, "a:80", 2, False, original=original)])
    assert up == OWN_LINE.replace("server a:80\n        down;", "server a:80 weight=2\n        ;")
    back = edit_servers(up, [ServerChange(2, "a:80", 1, True, original=original)])
    assert back == OWN_LINE
    # Without the original, down goes after the last word: nothing lands in column 0.
    assert edit1(up, 2, "a:80", 2, True) == OWN_LINE.replace(
        "server a:80\n        down;", "server a:80 weight=2 down\n        ;")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("server a:80\n    down max_fails=3;", "server a:80\n    max_fails=3;"),
        ("server a:80\n\tdown\t# why\n;", "server a:80\n\t# why\n;"),
        ("server a:80\r\n    down\r\n    ;", "server a:80\r\n\r\n    ;"),
        ("server a:80 max_fails=3\n    down ;", "server a:80 max_fails=3\n    ;"),
        ("server a:80 # c\n  down  max_fails=3 ;", "server a:80 # c\n  max_fails=3 ;"),
    ],
)
def test_down_first_on_its_line_removed(old: str, new: str) -> None:
    assert edit1(old, 1, "a:80", 1, False) == new


def test_two_words_removed_from_one_line_do_not_overlap() -> None:
    """A first-on-line ``down`` takes the blanks after it, the weight after it the blanks before: one removal."""
    old = "server a:80\n    down weight=9;"
    assert edit_servers(old, [ServerChange(1, "a:80", 1, False, bare_weight=True)]) == "server a:80\n    ;"


@pytest.mark.parametrize(
    ("original", "now", "weight", "down", "new"),
    [
        ("server a:80 weight=05;", "server a:80 weight=9;", 5, True, "server a:80 weight=05 down;"),
        ('server a:80 "weight=90";', "server a:80 weight=1 down;", 90, True, 'server a:80 "weight=90" down;'),
        ("server a:80;", "server a:80 weight=9 down;", 1, True, "server a:80 down;"),
        ("server a:80;", "server a:80 weight=9 down;", 1, False, "server a:80;"),
        ("server a:80 down;", "server a:80;", 7, False, "server a:80 weight=7;"),
        # Another parameter changed since: no wholesale copy, but the weight's spelling comes back.
        ("server a:80 weight=05 max_fails=3;", "server a:80 weight=9 max_fails=4;", 5, False,
         "server a:80 weight=05 max_fails=4;"),
    ],
)
def test_original_spelling_comes_back(original: str, now: str, weight: int, down: bool, new: str) -> None:
    """A weight equal to the original one is written as the original wrote it (or not at all)."""
    assert edit_servers(now, [ServerChange(1, "a:80", weight, down, original=original)]) == new


def test_original_of_another_server_is_refused() -> None:
    with pytest.raises(EditError, match="original form"):
        edit_servers("server a:80;", [ServerChange(1, "a:80", 2, False, original="server b:80;")])


def _originals(text: str) -> Dict[str, str]:
    return {address: text[s.name.start:s.end.end] for address, s in _server_statements(text).items()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), generated=upstream_texts())
def test_random_layouts_round_trip_to_the_original_bytes(data: st.DataObject,
                                                         generated: Tuple[str, Sequence[GenServer]]) -> None:
    """Splits one after the other (10 %, 0 %, 100 %, ...), then the original split: the original bytes."""
    old, gens = generated
    originals = _originals(old)
    text = old
    for _ in range(data.draw(st.integers(1, 4), label="steps")):
        chosen = data.draw(st.lists(st.sampled_from(list(gens)), unique_by=lambda g: g.address), label="changed")
        with_original = data.draw(st.booleans(), label="with original")
        changes = [ServerChange(g.line, g.address, data.draw(st.integers(1, 40)), data.draw(st.booleans()),
                                original=originals[g.address] if with_original else None) for g in chosen]
        new = edit_servers(text, changes)
        assert _stripped(new) == _stripped(text) and _comments(new) == _comments(old)
        assert new.count("\n") == old.count("\n") and new.count("\r") == old.count("\r")
        text = new
    back = [ServerChange(g.line, g.address, g.weight or 1, g.down, original=originals[g.address]) for g in gens]
    assert edit_servers(text, back) == old
