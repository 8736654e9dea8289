"""What the history records of one rollout run say: which records are the last run, and the facts of its outcome
(state, message, why, when it rolled back and after which failed checks, how long the restore took). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from nginx_canary.report.formatting import finite_number
from nginx_canary.rollout.record import HistoryRecord, RecordedVerdict


@dataclass
class Run:
    """What the records of one run say, for the outcome box."""

    records: List[Dict[str, Any]]
    start: Optional[float]
    end: Optional[float]
    steps: List[Any] = field(default_factory=list)
    step_interval: Optional[float] = None
    on_success: Optional[str] = None
    state: Optional[str] = None
    message: str = ""
    reason: str = ""
    rollback_at: Optional[float] = None
    first_failure_at: Optional[float] = None
    restored_at: Optional[float] = None
    checks: int = 0
    failed_checks: int = 0


def last_run(history: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The records of the last run: from the last ``start`` on (all of them without one), in time order."""
    records = [r for r in history if isinstance(r, dict)]
    records.sort(key=lambda r: finite_number(r.get("time")) or 0.0)
    for i in range(len(records) - 1, -1, -1):
        if records[i].get("event") == "start":
            return records[i:]
    return records


def detail_of(record: Dict[str, Any]) -> Dict[str, Any]:
    """A record's ``detail``; {} when it is not a mapping."""
    detail = record.get("detail")
    return detail if isinstance(detail, dict) else {}


def verdict_of(record: Dict[str, Any]) -> RecordedVerdict:
    """A record's check verdict as typed data (empty for any other record)."""
    return HistoryRecord.from_data(record).verdict


def summarize_run(records: List[Dict[str, Any]], points: Sequence[Dict[str, Any]] = ()) -> Run:
    """The facts of one run (see :func:`last_run`) for the outcome box."""
    times = [t for t in (finite_number(r.get("time")) for r in records) if t is not None]
    point_times = [t for t in (finite_number(p.get("time")) for p in points) if t is not None]
    start = times[0] if times else (point_times[0] if point_times else None)
    end = max(times + point_times) if (times or point_times) else None
    run = Run(records=records, start=start, end=end)
    if records and records[0].get("event") == "start":
        detail = detail_of(records[0])
        run.steps = list(detail.get("steps") or [])
        run.step_interval = finite_number(detail.get("effective_step_interval") or detail.get("step_interval"))
        run.on_success = detail.get("on_success")
    if records:
        last = records[-1]
        run.state = last.get("state")
        run.message = str(detail_of(last).get("message") or "")
    elif points:
        run.state = points[-1].get("state")
    for record in records:
        event = record.get("event")
        detail = detail_of(record)
        stamp = finite_number(record.get("time"))
        if event == "check":
            run.checks += 1
            if verdict_of(record).failed:
                run.failed_checks += 1
        elif event in ("rollback", "promoted", "abort") and detail.get("reason"):
            run.reason = str(detail["reason"])
        elif event == "apply_failed" and not run.reason:
            run.reason = f"could not apply {detail.get('target')}: {detail.get('error')}"
        elif event == "restore_failed":
            run.reason = f"the restore failed: {detail.get('error')}"
        if event == "rollback" and run.rollback_at is None:
            run.rollback_at = stamp
        elif event == "restored" and run.rollback_at is not None and run.restored_at is None:
            run.restored_at = stamp
    if run.rollback_at is not None:
        run.first_failure_at = _first_failure_of_streak(records, run.rollback_at)
    return run


def _first_failure_of_streak(records: List[Dict[str, Any]], until: float) -> Optional[float]:
    """The first failed check of the streak that ended in the rollback at ``until`` (a pass breaks a streak)."""
    first = None
    for record in records:
        stamp = finite_number(record.get("time"))
        if record.get("event") != "check" or stamp is None or stamp > until:
            continue
        verdict = verdict_of(record).verdict
        if verdict == "pass":
            first = None
        elif verdict == "fail" and first is None:
            first = stamp
    return first
