"""Count identical raw field tuples of log lines: the first step of :class:`~nginx_canary.logs.analyze.Analyzer`.

Two implementations give the same entries, counts and order (first appearance):

- ``PyFieldCounter``: :meth:`CompiledFormat.extract` plus ``collections.Counter``;
  any format. It builds a few Python objects per line, which caps it near
  0.5 M lines/s.
- the C accelerator ``nginx_canary.logs._fieldcount``: ``FieldCounter`` for
  formats of the "split" strategy (the shipped ``canary`` format),
  ``WalkCounter`` for the others that have a walk (literal to literal, see
  :mod:`nginx_canary.logs.walk_strategy`; a line the walk cannot read goes to
  the regex). Both scan whole blocks and keep the distinct tuples in their own
  table, so no Python object is made per line. It is built by ``pip install``
  when a C compiler and the Python headers are there; without it everything
  runs on ``PyFieldCounter``.

``NGINX_CANARY_PURE_PYTHON=1`` in the environment forces ``PyFieldCounter``
(to compare, or to rule the accelerator out).
"""

from __future__ import annotations

import collections
import importlib
import os
from types import ModuleType
from typing import Callable, Counter, List, Optional, Protocol, Sequence, Tuple, Union

from nginx_canary.logs.format import CompiledFormat

PURE_PYTHON_ENV = "NGINX_CANARY_PURE_PYTHON"

Row = Tuple[bytes, ...]
Buffer = Union[bytes, bytearray, memoryview]

_fieldcount: Optional[ModuleType]
ACCELERATOR_ERROR: Optional[str]
try:
    _fieldcount = importlib.import_module("nginx_canary.logs._fieldcount")
except ImportError as exc:  # not built: no compiler or headers at install time
    _fieldcount, ACCELERATOR_ERROR = None, str(exc)
else:
    ACCELERATOR_ERROR = None


class FieldCounter(Protocol):
    """What the analyzer needs from a counter of raw field tuples."""

    def feed_block(self, block: Buffer) -> Tuple[int, int]:
        """Count the lines of ``block`` (bytes, bytearray or memoryview) that end with ``\\n``: ``(lines, misfits)``."""

    def feed_lines(self, lines: Sequence[bytes]) -> int:
        """Count each item as one line (it may end with ``\\n``); return the misfits."""

    def items(self) -> List[Tuple[Row, int]]:
        """Each distinct tuple with its count, in order of first appearance."""

    def clear(self) -> None:
        """Forget every tuple."""

    def __len__(self) -> int:
        """How many distinct tuples are held."""


class PyFieldCounter:
    """The pure-Python counter: the reference the accelerator is tested against."""

    def __init__(self, compiled: CompiledFormat, names: Sequence[str]) -> None:
        """Raises LogFormatError when a name is not a variable of ``compiled``."""
        compiled.extract([], names)
        self._compiled = compiled
        self._names = tuple(names)
        self._counts: Counter[Row] = collections.Counter()

    def feed_block(self, block: Buffer) -> Tuple[int, int]:
        """Raises TypeError unless ``block`` is bytes, bytearray or a memoryview."""
        if isinstance(block, (bytearray, memoryview)):
            block = bytes(block)
        if not isinstance(block, bytes):
            raise TypeError(f"feed_block() needs bytes, not {type(block).__name__}")
        lines = block.split(b"\n")
        lines.pop()
        return len(lines), self.feed_lines(lines)

    def feed_lines(self, lines: Sequence[bytes]) -> int:
        """Raises TypeError, counting nothing, unless ``lines`` holds bytes only."""
        rows, misfits = self._compiled.extract(lines, self._names)
        self._counts.update(rows)
        return misfits

    def items(self) -> List[Tuple[Row, int]]:
        return list(self._counts.items())

    def clear(self) -> None:
        self._counts.clear()

    def __len__(self) -> int:
        return len(self._counts)


def accelerator_available() -> bool:
    """Whether the C accelerator was built and imports."""
    return _fieldcount is not None


def field_counter(compiled: CompiledFormat, names: Sequence[str], *, accelerated: Optional[bool] = None) -> FieldCounter:
    """A counter of the raw values of ``names`` in lines of ``compiled``.

    ``accelerated``: None picks the C counter when it is built, the format is
    of the "split" strategy or has a walk, and ``NGINX_CANARY_PURE_PYTHON`` is
    not ``1``; False always gives :class:`PyFieldCounter`; True insists on the
    C counter.

    Raises:
        LogFormatError: a name is not a variable of ``compiled``.
        RuntimeError: ``accelerated=True`` and the C counter cannot serve (not
            built, or a format with neither a split layout nor a walk).
    """
    layout = compiled.split_layout(names)
    walk = compiled.walk_layout(names) if layout is None else None
    if accelerated is None:
        accelerated = (layout is not None or walk is not None) and _fieldcount is not None and \
            os.environ.get(PURE_PYTHON_ENV) != "1"
    if not accelerated:
        return PyFieldCounter(compiled, names)
    if _fieldcount is None:
        raise RuntimeError(f"the C accelerator is not built ({ACCELERATOR_ERROR})")
    counter: FieldCounter
    if layout is not None:
        counter = _fieldcount.FieldCounter(layout.sep, layout.fields, layout.wanted, layout.prefix, layout.suffix)
    elif walk is not None:
        counter = _fieldcount.WalkCounter(walk.prefix, walk.steps, walk.wanted, regex_row(compiled, names))
    else:
        raise RuntimeError(f"the C accelerator has no split layout or walk for {compiled!r}")
    return counter


def regex_row(compiled: CompiledFormat, names: Sequence[str]) -> Callable[[bytes], Optional[Row]]:
    """``row(line)``: the raw values of ``names`` as the regex reads ``line``, or None when it does not fit."""
    names = tuple(names)

    def row(line: bytes) -> Optional[Row]:
        rows, _ = compiled.extract([line], names)
        return rows[0] if rows else None

    return row
