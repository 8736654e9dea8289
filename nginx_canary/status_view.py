"""Plain-text rendering of a rollout's status and history records for the CLI."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional


def _percent(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _group(label: str, figures: Optional[Dict[str, Any]]) -> str:
    if not figures:
        return f"{label}: no data yet"
    return (f"{label}: {figures.get('requests', 0)} req, 5xx {figures.get('error_rate', 0.0) * 100:.2f} %, "
            f"p99 {_ms(figures.get('p99'))}")


def _steps(status: Dict[str, Any]) -> str:
    marks: List[str] = []
    for i, step in enumerate(status.get("steps") or []):
        text = _percent(step)
        if i == status.get("step") and status.get("state") in ("progressing", "paused"):
            text = f"[{text}]"
        marks.append(text)
    return " -> ".join(marks)


def format_status(status: Dict[str, Any]) -> str:
    """A few lines: the rollout, its steps, canary vs stable in the window, the last check, the message."""
    state = status.get("state")
    head = f"{status.get('name')}  {state}  upstream {status.get('upstream')}  canary {_percent(status.get('canary_percent'))} %"
    left = status.get("time_left_in_step")
    if left is not None:
        head += f"  ({left:.0f} s left in step)" if left > 0 else "  (bake time over, waiting for a passing check)"
    lines = [head, f"  steps: {_steps(status)}"]
    if status.get("paused_reason"):
        lines.append(f"  paused: {status['paused_reason']}")
    window = status.get("window_seconds")
    suffix = f" (last {window:g} s)" if isinstance(window, (int, float)) else ""
    lines.append(f"  {_group('canary', status.get('canary'))}  |  {_group('stable', status.get('stable'))}{suffix}")
    check = status.get("last_check")
    if check:
        lines.append(f"  last check: {check.get('verdict')}: {check.get('reason')}"
                     f"  (failures in a row {status.get('failure_streak', 0)}/{status.get('failure_threshold')})")
    if status.get("message"):
        lines.append(f"  {status['message']}")
    return "\n".join(lines)


def format_history(record: Dict[str, Any]) -> str:
    """One line: time, rollout, event, state, canary percent and the record's message or reason."""
    stamp = record.get("time")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if isinstance(stamp, (int, float)) else "-"
    detail = record.get("detail") or {}
    text = detail.get("message") or detail.get("reason") or ""
    verdict = detail.get("verdict")
    if isinstance(verdict, dict):
        text = f"{verdict.get('verdict')}: {verdict.get('reason')}"
    percent = record.get("canary_percent")
    return (f"{when}  {record.get('rollout', '')}  {record.get('event')}  {record.get('state')}  "
            f"{'-' if percent is None else _percent(percent) + ' %'}  {text}").rstrip()
