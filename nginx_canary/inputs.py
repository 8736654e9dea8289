"""Validation of what a user types before it can get anywhere near an nginx file."""

from __future__ import annotations

import re
from fractions import Fraction

from nginx_canary.errors import BadInputError

MAX_NAME_LENGTH = 256
_PERCENT = re.compile(r"\A(?:100(?:\.0{1,2})?|[0-9]{1,2}(?:\.[0-9]{1,2})?)\Z")
# Characters that end, open, quote, comment or expand something in nginx's
# syntax, plus whitespace and control characters.
_FORBIDDEN = re.compile(r"""[\s;{}#"'`$\\\x00-\x1f\x7f]""")


def parse_percent(text: str) -> Fraction:
    """Parse a canary share such as ``10``, ``12.5`` or ``33.33`` (0..100, up to two decimals).

    Raises:
        BadInputError: anything else.
    """
    if not _PERCENT.match(text):
        raise BadInputError(f"PERCENT must be a number from 0 to 100 with at most two decimals, not {text!r}")
    return Fraction(text)


def check_word(kind: str, text: str) -> str:
    """Return ``text`` if it is a plain nginx word safe to compare with config words.

    Raises:
        BadInputError: empty, too long, non-ASCII, or containing whitespace, a
            control character or any of ``; { } # " ' ` $ \\``.
    """
    if not text:
        raise BadInputError(f"{kind} must not be empty")
    if len(text) > MAX_NAME_LENGTH:
        raise BadInputError(f"{kind} is longer than {MAX_NAME_LENGTH} characters")
    bad = _FORBIDDEN.search(text)
    if bad:
        raise BadInputError(f"{kind} {text!r} contains the forbidden character {bad.group()!r}")
    if not text.isascii():
        raise BadInputError(f"{kind} {text!r} contains non-ASCII characters")
    return text
