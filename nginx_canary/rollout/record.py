"""A history record read back as typed data: the one reading of ``detail`` and ``detail.verdict``.

The history file, the records handed to listeners (metrics, webhooks) and
the report all hold the same JSON (see :meth:`StateStore.append_history`).
Every reader goes through :class:`HistoryRecord` instead of picking
``record["detail"]["verdict"]`` apart on its own; a field that is missing or
of the wrong type (a damaged or older line) reads as empty, never raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple

_EMPTY: Mapping[str, Any] = {}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


@dataclass(frozen=True)
class CheckResult:
    """One check of a verdict (``error_rate``, ``p99_latency``, an HTTP check, ...)."""

    name: str
    verdict: Optional[str]
    reason: str
    threshold: Any = None


@dataclass(frozen=True)
class RecordedVerdict:
    """A ``check`` record's verdict; empty (``verdict`` None) for any other record."""

    verdict: Optional[str] = None
    reason: str = ""
    checks: Tuple[CheckResult, ...] = ()
    canary: Optional[Mapping[str, Any]] = None
    stable: Optional[Mapping[str, Any]] = None

    @classmethod
    def from_data(cls, data: Any) -> "RecordedVerdict":
        data = _mapping(data)
        checks = tuple(CheckResult(str(c.get("name")), c.get("verdict"), str(c.get("reason") or ""), c.get("threshold"))
                       for c in data.get("checks") or () if isinstance(c, Mapping))
        canary, stable = data.get("canary"), data.get("stable")
        return cls(data.get("verdict") if isinstance(data.get("verdict"), str) else None, str(data.get("reason") or ""),
                   checks, canary if isinstance(canary, Mapping) else None,
                   stable if isinstance(stable, Mapping) else None)

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    def failed_checks(self) -> List[CheckResult]:
        """The checks that failed, when the verdict failed (none otherwise)."""
        return [c for c in self.checks if c.verdict == "fail"] if self.failed else []


@dataclass(frozen=True)
class HistoryRecord:
    """One history record: when, what, the rollout's state then, and its detail."""

    time: Optional[float]
    event: Optional[str]
    state: Optional[str]
    canary_percent: Any
    detail: Mapping[str, Any] = field(default_factory=dict)
    verdict: RecordedVerdict = field(default_factory=RecordedVerdict)

    @classmethod
    def from_data(cls, record: Mapping[str, Any]) -> "HistoryRecord":
        """Never raises: what is not there, or not of its type, reads as empty."""
        record = _mapping(record)
        stamp = record.get("time")
        detail = _mapping(record.get("detail"))
        return cls(float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None,
                   record.get("event") if isinstance(record.get("event"), str) else None,
                   record.get("state") if isinstance(record.get("state"), str) else None,
                   record.get("canary_percent"), detail, RecordedVerdict.from_data(detail.get("verdict")))
