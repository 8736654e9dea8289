"""The figures every log consumer shares: what one upstream attempt looked like."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Attempt:
    """One try of one upstream server within a request, as nginx logged it.

    ``address`` is what ``$upstream_addr`` holds for the try (``127.0.0.1:8081``,
    ``unix:/run/app.sock``, or an upstream name when no server was available);
    ``status`` is the HTTP status of that try (None when nginx logged ``-`` or
    nothing usable); ``seconds`` its response time (None when unknown).
    """

    address: str
    status: Optional[int]
    seconds: Optional[float]
