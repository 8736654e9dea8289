"""Plain-text rendering of a rollout's status and history records for the CLI, and the frames of ``status --watch``."""

from __future__ import annotations

import textwrap
import time
from typing import Any, Dict, List, Optional, Tuple

from nginx_canary.rollout.record import HistoryRecord
from nginx_canary.domain import ACTIVE_STATES, FINAL_STATES, State, percent_text
from nginx_canary.text import printable, printable_lines


def _percent(value: Any) -> str:
    # Ints and the history's percent strings are shown as they are.
    return percent_text(value) if isinstance(value, float) else str(value)


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
        if i == status.get("step") and status.get("state") in ACTIVE_STATES:
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
    reading = _reading(status.get("access_log"))
    if reading:
        lines.append(f"  {reading}")
    if status.get("message"):
        lines.append(f"  {status['message']}")
    fleet = status.get("fleet")
    if isinstance(fleet, dict):
        lines.extend(_fleet_lines(fleet))
    return printable_lines("\n".join(lines))


def _fleet_lines(fleet: Dict[str, Any]) -> List[str]:
    """The fleet's part of ``status``: who coordinates, and what each host applied."""
    if fleet.get("error"):
        return [f"  fleet: this host ({fleet.get('host')}) cannot reach etcd: {fleet['error']}"]
    lines = [f"  fleet: this host {fleet.get('host')}, coordinator {fleet.get('coordinator') or '(none yet)'}"]
    if fleet.get("cut_off_since"):
        lines.append("  fleet: etcd unreachable since " + _when(fleet["cut_off_since"]) + ": no step is taken")
    if fleet.get("refused"):
        lines.append(f"  fleet: this host does not take part, its settings differ: {fleet['refused']}")
    for host, report in sorted((fleet.get("hosts") or {}).items()):
        if not isinstance(report, dict):
            continue
        detail = f": {report['detail']}" if report.get("detail") else ""
        percent = f" {_percent(report.get('percent'))} %" if report.get("percent") else ""
        lines.append(f"    {host}: {report.get('status')}{percent}{detail}")
    return lines


def _reading(figures: Any) -> str:
    """A line when the access log reader is or was behind (1 MiB or more unread, or a skip), else ""."""
    if not isinstance(figures, dict):
        return ""
    backlog, skipped, skips = (figures.get(k) for k in ("backlog_bytes", "skipped_bytes", "skips"))
    if not all(isinstance(v, int) for v in (backlog, skipped, skips)) or (backlog < 1 << 20 and not skips):
        return ""
    return (f"access log: {backlog / 2**20:.1f} MiB unread; {skipped / 2**20:.1f} MiB skipped in {skips} skip(s) "
            "because the reader fell behind")


def format_history(record: Dict[str, Any]) -> str:
    """One line: time, rollout, event, state, canary percent and the record's message or reason."""
    stamp = record.get("time")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if isinstance(stamp, (int, float)) else "-"
    detail = record.get("detail") or {}
    text = detail.get("message") or detail.get("reason") or ""
    verdict = detail.get("verdict")
    if isinstance(verdict, dict):
        checked = HistoryRecord.from_data(record).verdict
        text = f"{checked.verdict}: {checked.reason}"
    percent = record.get("canary_percent")
    return printable(f"{when}  {record.get('rollout', '')}  {record.get('event')}  {record.get('state')}  "
                     f"{'-' if percent is None else _percent(percent) + ' %'}  {text}").rstrip()


# -- the live view (`status NAME --watch`) ------------------------------------------------

def is_final(status: Dict[str, Any]) -> bool:
    """True when the rollout has finished: ``failed``, or promoted / rolled back / aborted with no restore owed."""
    state = status.get("state")
    return state == State.FAILED or (state in FINAL_STATES and not status.get("snapshot_id"))


def _rate_per_second(figures: Optional[Dict[str, Any]], window: Any) -> Optional[float]:
    if not figures or not isinstance(window, (int, float)) or window <= 0:
        return None
    return (figures.get("requests") or 0) / window


def _step_fraction(status: Dict[str, Any]) -> float:
    """How much of the current step's bake time has passed, 0..1."""
    left, interval = status.get("time_left_in_step"), status.get("step_interval")
    if not isinstance(left, (int, float)) or not isinstance(interval, (int, float)) or interval <= 0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - left / interval))


def progress_bar(status: Dict[str, Any], width: int) -> Tuple[str, str]:
    """Two lines: the step labels (the current one in brackets) and the bar under them.

    Steps before the current one are full (``=``); the current one fills with
    its bake time and ends in ``>`` (``|`` paused, ``X`` rolled back, aborted
    or failed there); later ones are dots. ASCII only.
    """
    steps = status.get("steps") or []
    if not steps:
        return "", "[no steps]"
    state = status.get("state")
    current = status.get("step") if isinstance(status.get("step"), int) else 0
    count = len(steps)
    segment = max(3, min(12, (width - 2 - (count + 1)) // count))
    cells: List[str] = []
    for i in range(count):
        if state == State.IDLE:
            cells.append("." * segment)
        elif state == State.PROMOTED or i < current:
            cells.append("=" * segment)
        elif i == current:
            if state in FINAL_STATES:
                cells.append("X" * segment)
            else:
                filled = int(round(_step_fraction(status) * (segment - 1)))
                head = "|" if state == State.PAUSED else ">"
                cells.append(("=" * filled + head).ljust(segment, "."))
        else:
            cells.append("." * segment)
    bar = "[" + "|".join(cells) + "]"
    labels = [" "] * (len(bar) + 8)
    # Where labels would collide, the current step's wins, then the last and the first.
    order = sorted(range(count), key=lambda i: (i != current, i != count - 1, i != 0, i))
    for i in order:
        step = steps[i]
        text = f"{_percent(step)} %"
        if i == current and state in ACTIVE_STATES:
            text = f"[{text}]"
        start = 1 + i * (segment + 1)
        if start + len(text) <= len(labels) and all(c == " " for c in labels[max(0, start - 1):start + len(text) + 1]):
            labels[start:start + len(text)] = list(text)
    return "".join(labels).rstrip(), bar


def _wrap(text: str, width: int, indent: str, max_lines: int = 3) -> List[str]:
    lines = textwrap.wrap(text, max(10, width - len(indent)), break_long_words=True, break_on_hyphens=False) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, width - len(indent) - 3)] + "..."
    return [indent + line for line in lines]


def _when(stamp: Optional[float]) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if isinstance(stamp, (int, float)) else ""


def render_watch(status: Dict[str, Any], *, width: int = 80, now: Optional[float] = None,
                 error: Optional[str] = None) -> List[str]:
    """The lines of one frame of the live view, none longer than ``width`` - 1 (so none wraps).

    ``now`` is shown as the time of the frame; ``error`` (the daemon could
    not be asked this time) is shown under the last figures received.
    """
    width = max(40, width)
    state = str(status.get("state"))
    steps = status.get("steps") or []
    step = status.get("step") if isinstance(status.get("step"), int) else 0
    head = (f"{status.get('name')}  {state.replace('_', ' ').upper()}  upstream {status.get('upstream')}  "
            f"canary {_percent(status.get('canary_percent'))} %")
    stamp = _when(now)
    if stamp and len(head) + 2 + len(stamp) < width:
        head = head.ljust(width - 1 - len(stamp)) + stamp
    lines = [head]
    where = f"step {step + 1} of {len(steps)}" if steps else "no steps"
    left = status.get("time_left_in_step")
    if state == State.PROGRESSING and isinstance(left, (int, float)):
        note = f"{left:.0f} s left in {where}" if left > 0 else f"{where}: bake time over, waiting for a pass"
    elif state == State.PAUSED:
        note = f"paused at {where}"
    elif state == State.IDLE:
        note = "not started"
    else:
        note = state.replace("_", " ")
    room = width - 1 - 2 - 2 - len(note)
    beside = room >= 4 * max(1, len(steps)) + 1
    labels, bar = progress_bar(status, room if beside else width - 3)
    lines.append("  " + labels)
    lines.extend([f"  {bar}  {note}"] if beside else [f"  {bar}", f"  {note}"])
    window = status.get("window_seconds")
    lines.append(f"  {'':8}{'req/s':>9}{'5xx rate':>11}{'p99':>11}"
                 + (f"   (last {window:g} s)" if isinstance(window, (int, float)) else ""))
    for group in ("canary", "stable"):
        figures = status.get(group)
        rate = _rate_per_second(figures, window)
        if not figures:
            lines.append(f"  {group:8}{'-':>9}{'-':>11}{'-':>11}")
            continue
        lines.append(f"  {group:8}{'-' if rate is None else f'{rate:.2f}':>9}"
                     f"{(figures.get('error_rate') or 0.0) * 100:>9.2f} %{_ms(figures.get('p99')):>11}")
    check = status.get("last_check")
    if check:
        streak = f"  (failures in a row {status.get('failure_streak', 0)}/{status.get('failure_threshold')})"
        lines.extend(_wrap(f"last check: {str(check.get('verdict')).upper()}: {check.get('reason')}{streak}",
                           width - 1, "  "))
    else:
        lines.append("  last check: none yet")
    if status.get("paused_reason"):
        lines.extend(_wrap(f"paused: {status['paused_reason']}", width - 1, "  "))
    if status.get("message"):
        lines.extend(_wrap(str(status["message"]), width - 1, "  "))
    if error:
        lines.extend(_wrap(f"! {error}", width - 1, "  ", max_lines=2))
    return [printable(line)[: width - 1] for line in lines]


def format_watch_line(status: Dict[str, Any], *, now: Optional[float] = None, error: Optional[str] = None) -> str:
    """One compact line per refresh, for a watch whose output is not a terminal."""
    steps = status.get("steps") or []
    step = status.get("step") if isinstance(status.get("step"), int) else 0
    parts = [_when(now), str(status.get("name")), str(status.get("state")),
             f"{_percent(status.get('canary_percent'))} %"]
    if steps:
        parts.append(f"step {step + 1}/{len(steps)}")
    left = status.get("time_left_in_step")
    if status.get("state") == State.PROGRESSING and isinstance(left, (int, float)):
        parts.append(f"{left:.0f}s left")
    window = status.get("window_seconds")
    for group in ("canary", "stable"):
        figures = status.get(group)
        rate = _rate_per_second(figures, window)
        if figures:
            parts.append(f"| {group} {'-' if rate is None else f'{rate:.2f}'} req/s "
                         f"5xx {(figures.get('error_rate') or 0.0) * 100:.2f} % p99 {_ms(figures.get('p99'))}")
        else:
            parts.append(f"| {group} -")
    check = status.get("last_check")
    if check:
        parts.append(f"| {check.get('verdict')}: {check.get('reason')}")
    if error:
        parts.append(f"| ! {error}")
    return printable(" ".join(p for p in parts if p))
