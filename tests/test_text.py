"""Text shown to the operator carries no control characters; quoted values stay short."""

from __future__ import annotations

from nginx_canary.text import printable, printable_lines, quoted


def test_controls_and_bidi_marks_are_escaped() -> None:
    assert printable("a\x1b[2Jb\x07c\x00d\x7fe\x9bf") == "a\\x1b[2Jb\\x07c\\x00d\\x7fe\\x9bf"
    assert printable("x\u202ey\u2066z") == "x\\u202ey\\u2066z"
    assert printable("one\ntwo\r\tthree") == "one\\x0atwo\\x0d\\x09three"


def test_plain_text_and_other_unicode_are_kept() -> None:
    text = "reloaded: canary 10 % of upstream backend; größe ünïcode ✓"
    assert printable(text) == text and printable_lines(text) == text


def test_lines_mode_keeps_newlines_and_tabs_only() -> None:
    assert printable_lines("a\n\tb\r\x1b") == "a\n\tb\\x0d\\x1b"


def test_quoted_is_repr_shortened_to_a_limit():
    assert quoted("a b") == "'a b'"
    assert quoted("x" * 60) == repr("x" * 60)
    assert quoted("x" * 61) == f"{'x' * 60!r}... (61 characters)"
    assert quoted("abcdef", limit=3) == "'abc'... (6 characters)"
