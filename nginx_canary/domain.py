"""Shared rules of nginx-canary, with no I/O: rollout states, percents, rollout names, steps.

Every layer asks these functions rather than keeping its own copy of a rule;
a caller that reports errors its own way (the YAML reader, with file and line)
converts the :class:`~nginx_canary.errors.BadInputError` at its boundary.
"""

from __future__ import annotations

import enum
import math
import re
from fractions import Fraction
from typing import Any, List, Optional, Sequence, Tuple, Union

from nginx_canary.errors import BadInputError


class State(str, enum.Enum):
    """Where a rollout stands. The values are the strings of state files, the socket and metrics."""

    IDLE = "idle"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    FAILED = "failed"

    # The value, like a plain string, in f-strings, %-formatting and str() on every Python version.
    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


#: States in which a run steps the canary's weights.
ACTIVE_STATES: Tuple[State, ...] = (State.PROGRESSING, State.PAUSED)
#: States a run ends in, nginx's files settled (restored or kept).
TERMINAL_STATES: Tuple[State, ...] = (State.PROMOTED, State.ROLLED_BACK, State.ABORTED)
#: States after which nothing more happens by itself: the terminal ones and ``failed`` (waits for the operator).
FINAL_STATES: Tuple[State, ...] = TERMINAL_STATES + (State.FAILED,)
#: States from which ``start`` begins a new run.
STARTABLE_STATES: Tuple[State, ...] = (State.IDLE,) + TERMINAL_STATES

# --- percents ---------------------------------------------------------------------------

Percent = Union[Fraction, int, float]


def number_text(number: float, digits: int, *, keep_point: bool = False) -> str:
    """``number`` with up to ``digits`` decimals, trailing zeros dropped: ``2.50`` -> ``"2.5"``, ``2.0`` -> ``"2"``.

    With ``keep_point`` one decimal stays: ``2.0`` -> ``"2.0"``.
    """
    text = f"{number:.{digits}f}"
    if "." not in text:
        return text
    text = text.rstrip("0")
    if keep_point:
        return text + "0" if text.endswith(".") else text
    return text.rstrip(".")


def percent_text(value: Percent, *, keep_point: bool = False) -> str:
    """A percent as text with at most two decimals, trailing zeros dropped.

    ``Fraction(25)`` -> ``"25"``, ``12.5`` -> ``"12.5"``, ``100 / 3`` -> ``"33.33"``.
    With ``keep_point`` one decimal stays: ``2.0`` -> ``"2.0"`` (the analysis' reasons).
    """
    if isinstance(value, int) and not keep_point:
        return str(value)
    if isinstance(value, Fraction) and value.denominator == 1 and not keep_point:
        return str(value.numerator)
    return number_text(float(value), 2, keep_point=keep_point)


def percent_number(value: Union[Percent, str]) -> Union[int, float]:
    """A percent as a JSON number: an int when whole, else a float rounded to two decimals.

    Accepts a Fraction, a number or a numeric string ("12.5").
    Raises ValueError when ``value`` is not a finite number.
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be finite, not {value!r}")
    return int(number) if number.is_integer() else round(number, 2)


# --- rollout names ------------------------------------------------------------------------

#: A rollout name, as a regular expression (also the head of its snapshot ids).
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_NAME = re.compile(NAME_PATTERN)


def is_rollout_name(name: Any) -> bool:
    """True when ``name`` can name a rollout (see :func:`validate_name`)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def validate_name(name: Any) -> str:
    """Return ``name`` if it can name a rollout (and its files under the state dir).

    1 to 64 ASCII letters, digits, ``_``, ``.``, ``-``, starting with a letter or
    digit; so no ``/``, no ``..`` path, no hidden file.

    Raises:
        BadInputError: anything else.
    """
    if not is_rollout_name(name):
        raise BadInputError(
            f"invalid rollout name {name!r}: must be 1 to 64 ASCII letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


# --- steps and the step interval ------------------------------------------------------------

#: The longest duration anywhere (step interval, analysis window, ...): 720h, 30 days.
MAX_DURATION_MS = 720 * 3_600_000


class StepError(BadInputError):
    """A rollout's steps break a rule; ``index`` is the position of the step at fault."""

    def __init__(self, message: str, index: int) -> None:
        self.index = index
        super().__init__(message)


def check_steps(steps: Sequence[Any], spelled: Optional[Sequence[str]] = None) -> Tuple[Fraction, ...]:
    """Validate a rollout's steps: increasing percents above 0 with at most two decimals, ending at 100.

    ``spelled`` is how the user wrote each step, shown in messages as written.

    Raises:
        StepError: naming (``index``) and showing the step at fault.
    """
    if isinstance(steps, (str, bytes)) or not steps:
        raise StepError("steps must be a non-empty list of percents like 10, 25, 50, 100", 0)
    result: List[Fraction] = []
    for index, raw in enumerate(steps):
        try:
            percent = Fraction(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            percent = None
        if percent is None:
            raise StepError(f"step {raw!r} is not a percent", index)
        shown = spelled[index] if spelled is not None else str(raw)
        if percent == 0:
            raise StepError(f"step {shown} must be greater than 0: a step of 0 % sends the canary nothing", index)
        if not 0 < percent <= 100 or (percent * 100).denominator != 1:
            raise StepError(f"step {shown} must be above 0 and at most 100, with at most two decimals", index)
        if result and percent <= result[-1]:
            shown = spelled[index] if spelled is not None else percent_text(percent)
            raise StepError(f"steps must increase, but {shown} follows {percent_text(result[-1])}", index)
        result.append(percent)
    if result[-1] != 100:
        last = spelled[-1] if spelled is not None else percent_text(result[-1])
        raise StepError(f"the last step must be 100 (a rollout ends with all traffic on the canary), got {last}",
                        len(result) - 1)
    return tuple(result)


def check_step_interval(value: Any) -> float:
    """Return a step interval (bake time) in seconds: a number above 0 and at most 720h.

    Raises:
        BadInputError: anything else (a bool, a string, NaN, 0, more than 720h).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_DURATION_MS / 1000:
        raise BadInputError(f"step_interval must be a number of seconds above 0 and at most 720h, "
                            f"not {str(value)[:40]!r}")
    return float(value)
