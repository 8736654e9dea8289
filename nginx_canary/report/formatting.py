"""The report's text of values: escaped record strings, numbers read leniently, percents, rates, durations, clock
times. Pure; the clock times are local time."""

from __future__ import annotations

import html
import math
import time
from typing import Any, Optional

from nginx_canary.domain import percent_text


def esc(value: Any) -> str:
    """Escaped text of anything taken from a record."""
    return html.escape("" if value is None else str(value), quote=True)


def finite_number(value: Any) -> Optional[float]:
    """``value`` as a finite float (a number or a numeric string), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def percent_label(value: Any) -> str:
    """``12.5 %``; ``-`` for what is not a number."""
    number = finite_number(value)
    return "-" if number is None else percent_text(number) + " %"


def rate_text(rate: Optional[float]) -> str:
    """A fraction as ``1.25 %``; ``-`` for None."""
    return "-" if rate is None else f"{rate * 100:.2f} %"


def ms_text(seconds: Optional[float]) -> str:
    """Seconds as ``45.0 ms``; ``-`` for None."""
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def duration_text(seconds: Optional[float]) -> str:
    """``3 min 12 s``, ``850 ms``, ``2 h 5 min``."""
    if seconds is None:
        return "-"
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"


def clock_text(stamp: Optional[float], *, date: bool = False) -> str:
    """Local ``HH:MM:SS`` of an epoch time (with ``date``: ``YYYY-mm-dd HH:MM:SS +zzzz``); ``-`` for None."""
    if stamp is None:
        return "-"
    local = time.localtime(stamp)
    text = time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", local)
    return text + (time.strftime(" %z", local) if date else "")


def elapsed_text(seconds: float) -> str:
    """Time since the run's start: ``+1:05``, ``+1:02:03``."""
    total = int(round(max(0.0, seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"+{hours}:{minutes:02d}:{secs:02d}" if hours else f"+{minutes}:{secs:02d}"
