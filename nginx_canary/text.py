"""Text that is safe to show on an operator's terminal, and user input quoted short in messages.

Messages can carry bytes nobody on the host wrote: nginx copies a client's
request line and headers into its error log, and a reload failure quotes that
log. An escape sequence in them could rewrite the terminal (hide a line, fake
a prompt, set the title), so every control character, and the invisible
bidirectional overrides that reorder what is shown, is replaced with its
escaped form before it is stored or printed.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidi embedding/override/isolate marks.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: "re.Match[str]") -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` on one line with every control or bidi character shown escaped (``\\x1b``)."""
    return _UNSAFE.sub(_escaped, text)


def printable_lines(text: str) -> str:
    """Like :func:`printable`, but newlines and tabs are kept (for diffs and tables)."""
    return _UNSAFE_KEEP_LINES.sub(_escaped, text)


def quoted(text: str, limit: int = 60) -> str:
    """``repr`` of a value, shortened: messages quote what the user wrote, on one line."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
