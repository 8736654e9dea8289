"""What a user types is refused before it can reach an nginx file."""

from __future__ import annotations

from fractions import Fraction

import pytest

from nginx_canary.errors import BadInputError, ExitCode
from nginx_canary.inputs import check_word, parse_percent


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("10", 10), ("100", 100), ("12.5", Fraction(25, 2)), ("33.33", Fraction(3333, 100)), ("100.00", 100), ("0.01", Fraction(1, 100)),
])
def test_good_percent(text, value):
    assert parse_percent(text) == value


@pytest.mark.parametrize("text", [
    "", "-1", "101", "100.01", "1.234", "1e2", "ten", " 10", "10 ", "10;", "10%", "0x10", "1_0", "٣", "10\n", "nan", "inf",
])
def test_bad_percent(text):
    with pytest.raises(BadInputError) as info:
        parse_percent(text)
    assert info.value.exit_code == ExitCode.BAD_INPUT


@pytest.mark.parametrize("text", ["backend", "10.0.0.12:8080", "unix:/run/app.sock", "[::1]:80", "app-v2.internal:443"])
def test_good_words(text):
    assert check_word("ADDR", text) == text


@pytest.mark.parametrize("text", [
    "a b", "a;b", "a{", "}", "a#b", 'a"b', "a'b", "$host", "a\nb", "a\tb", "a\x00b", "a\x1bb", "a\\b", "",
    "x" * 300, "bаckend",  # Cyrillic а
    "a\u00a0b",  # non-breaking space
])
def test_bad_words(text):
    with pytest.raises(BadInputError):
        check_word("ADDR", text)
