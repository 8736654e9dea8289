"""Fault injection for the reliability suite: named points on the write path, armed by an environment variable.

``NGINX_CANARY_FAULTS`` holds comma-separated ``POINT=ACTION[@N]`` items, for
example ``after_write=kill`` or ``write_config=enospc@2``:

``kill``
    SIGKILL this process at the point (a crash at the worst moment).
``enospc`` / ``eio``
    raise ``OSError`` (ENOSPC / EIO) there, as a full or failing disk would.
``stall`` / ``stall:SECONDS``
    sleep there (1 s, or SECONDS, at most 60) and go on, as a slow disk or an
    nginx slow to start its workers would.

``@N`` fires at the N-th time the point is reached (default 1, once); ``@*``
every time. Points: ``write_config`` / ``write_state`` / ``write_snapshot``
(inside :func:`nginx_canary.fsutil.atomic_write`, after part of the data is
written to the temporary file), ``after_write`` (config files written, before
``nginx -t``), ``after_test`` (before the reload signal), ``after_reload``
(before the journal is cleared), ``during_restore`` (between two restored
files), ``history_append``.

Without the variable (production) a point costs one dict lookup. The
variable is read once, when this module is imported.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from typing import Dict, Optional, Tuple

ENV = "NGINX_CANARY_FAULTS"
ACTIONS = ("kill", "enospc", "eio", "stall")
STALL_SECONDS = 1.0
MAX_STALL_SECONDS = 60.0


def _stall_seconds(action: str) -> Optional[float]:
    """Seconds of a ``stall[:SECONDS]`` action; None for another action. Raises ValueError."""
    name, colon, arg = action.partition(":")
    if name != "stall":
        return None
    if not colon:
        return STALL_SECONDS
    try:
        seconds = float(arg)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_STALL_SECONDS:
        raise ValueError(f"{ENV}: {action!r}: SECONDS must be a number above 0 and at most {MAX_STALL_SECONDS:g}")
    return seconds


def parse(spec: str) -> Dict[str, Tuple[str, Optional[int]]]:
    """``{point: (action, nth)}`` from the variable's text; nth None means every time. Raises ValueError."""
    armed: Dict[str, Tuple[str, Optional[int]]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, rest = item.partition("=")
        action, _, nth = rest.partition("@")
        if not point or (action not in ACTIONS and _stall_seconds(action) is None):
            raise ValueError(f"{ENV}: {item!r} is not POINT=ACTION[@N] with ACTION one of {', '.join(ACTIONS)}")
        if nth == "*":
            armed[point] = (action, None)
        elif nth == "" or (nth.isdigit() and int(nth) >= 1):
            armed[point] = (action, int(nth) if nth else 1)
        else:
            raise ValueError(f"{ENV}: {item!r}: N must be a whole number >= 1 or *")
    return armed


_ARMED = parse(os.environ.get(ENV, ""))
_SEEN: Dict[str, int] = {}


def point(name: str) -> None:
    """Act on the fault armed at ``name``, if any. Raises OSError for enospc/eio; kill does not return."""
    if not _ARMED:
        return
    armed = _ARMED.get(name)
    if armed is None:
        return
    action, nth = armed
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if nth is not None and _SEEN[name] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    stall = _stall_seconds(action)
    if stall is not None:
        time.sleep(stall)
        return
    code = errno.ENOSPC if action == "enospc" else errno.EIO
    raise OSError(code, os.strerror(code))


def arm(spec: str) -> None:
    """Replace the armed faults (for tests in this process). Raises ValueError for a bad spec."""
    global _ARMED
    _ARMED = parse(spec)
    _SEEN.clear()
