"""Attribute one logged request to the upstream servers nginx tried for it.

``$upstream_addr``, ``$upstream_status`` and ``$upstream_response_time`` hold
one entry per try, in the same order: ``, `` between tries within one upstream
(``proxy_next_upstream``), `` : `` between upstreams reached through internal
redirects (``X-Accel-Redirect``, ``error_page`` to a named location). nginx
writes ``-`` for an entry it has no value for, and for the whole variable when
no upstream was involved; under ``escape=json`` the latter is an empty string.
"""

from __future__ import annotations

import re
from typing import List, Optional

from nginx_canary.logs.records import Attempt

REDIRECT = " : "
RETRY = ", "
_NO_VALUE = ("-", "")
#: What a try that nginx moved on from counts as when only ``$status`` is logged.
RETRIED_STATUS = 502
_STATUS = re.compile(r"[0-9]{3}\Z")
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")


def entries(value: Optional[str]) -> List[str]:
    """The entries of an ``$upstream_*`` value, stripped, in order; none for ``""`` or None."""
    if not value:
        return []
    return [entry.strip() for group in value.split(REDIRECT) for entry in group.split(RETRY)]


def group_ends(value: str) -> List[bool]:
    """For each entry of ``value``, whether it is the last try before a redirect (or the end)."""
    ends: List[bool] = []
    for group in value.split(REDIRECT):
        tries = len(group.split(RETRY))
        ends.extend([False] * (tries - 1) + [True])
    return ends


def parse_status(entry: Optional[str]) -> Optional[int]:
    """``entry`` as a status: three digits, else None."""
    return int(entry) if entry is not None and _STATUS.match(entry) else None


def parse_seconds(entry: Optional[str]) -> Optional[float]:
    """``entry`` as seconds: a non-negative decimal, else None."""
    return float(entry) if entry is not None and _SECONDS.match(entry) else None


def split_attempts(
    addr: str,
    status: Optional[str],
    seconds: Optional[str],
    *,
    retried_status: int = RETRIED_STATUS,
    single_status: bool = False,
    single_seconds: bool = False,
) -> List[Attempt]:
    """Every upstream try of one request, in order, with its status and time.

    ``addr`` is the ``$upstream_addr`` value; ``status`` and ``seconds`` are
    aligned with it entry by entry. An entry that is missing, ``-`` or not a
    number gives None (a status must be three digits, seconds a non-negative
    decimal). An ``addr`` of ``-`` or ``""`` gives no attempts: nginx answered
    the request itself.

    With ``single_status``, ``status`` is the client-facing ``$status``: it
    belongs to the last try only. A try followed by another try of the same
    upstream (``, ``) gets ``retried_status``, since nginx moves on to the next
    server only after an error, a timeout or a status listed in
    ``proxy_next_upstream``. The last try before an internal redirect (`` : ``)
    gets None: an ``error_page`` redirect follows a failure, but an
    ``X-Accel-Redirect`` follows a success, and the log cannot tell them apart.
    With ``single_seconds``, ``seconds`` is ``$request_time``: the last try
    gets it, earlier tries None.

    Pure and total: never raises, whatever the strings hold.
    """
    addresses = entries(addr)
    count = len(addresses)
    if count == 0:
        return []
    statuses: List[Optional[int]]
    times: List[Optional[float]]
    if single_status:
        statuses = [None if last_of_group else retried_status for last_of_group in group_ends(addr)]
        statuses[-1] = parse_status(status.strip() if status else None)
    else:
        given = entries(status)
        statuses = [parse_status(given[i] if i < len(given) else None) for i in range(count)]
    if single_seconds:
        times = [None] * (count - 1) + [parse_seconds(seconds.strip() if seconds else None)]
    else:
        given = entries(seconds)
        times = [parse_seconds(given[i] if i < len(given) else None) for i in range(count)]
    return [
        Attempt(address, code, spent)
        for address, code, spent in zip(addresses, statuses, times)
        if address not in _NO_VALUE
    ]
