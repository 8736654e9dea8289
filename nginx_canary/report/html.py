"""One self-contained HTML page telling what a rollout run did and why.

:func:`render_report` takes a rollout's history records (``StateStore.history``)
and its series points (:mod:`nginx_canary.report.series`) and returns one HTML
document: inline CSS, inline SVG charts, no script, no font, image or link
that would be fetched (a Content-Security-Policy forbids it in any case).
Every string taken from the records is escaped.

What it shows, for the *last run* in the history (the records from the last
``start`` on, and the points from that moment on):

* the outcome and why: the final state and message, the reason of the
  rollback / promotion / abort, and for a rollback how long after the start
  and after the first failed check of the deciding streak it came, and how
  long the restore took;
* three charts on one time axis: the canary's weight (the step timeline, each
  change marked, plus the share of requests the canary actually got), canary
  vs stable 5xx rate, canary vs stable p99. A long run is drawn from at most
  :data:`MAX_BINS` time bins (counts added, so rates stay exact; the largest
  p99 of each bin);
* every check verdict in the history (failed ones highlighted with each
  failed check's reason; runs of passing / inconclusive checks folded into a
  ``<details>`` element) and every other event.

Pure: no I/O, no clock (``generated_at`` is given).
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from nginx_canary.rollout.record import HistoryRecord, RecordedVerdict
from nginx_canary.domain import ACTIVE_STATES, State, percent_text

#: Most time bins a chart is drawn from.
MAX_BINS = 480
#: A run of this many passing / inconclusive checks or more is folded.
FOLD_AT = 4

CANARY_COLOUR = "#e8590c"
STABLE_COLOUR = "#1c7ed6"
WEIGHT_COLOUR = "#5f3dc4"

# Chart geometry (SVG user units; the SVG scales to the page width).
_W, _H = 1000, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 14, 36


def _e(value: Any) -> str:
    """Escaped text of anything taken from a record."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _pct_text(value: Any) -> str:
    number = _num(value)
    return "-" if number is None else percent_text(number) + " %"


def _rate_text(rate: Optional[float]) -> str:
    return "-" if rate is None else f"{rate * 100:.2f} %"


def _ms_text(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _duration(seconds: Optional[float]) -> str:
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


def _clock(stamp: Optional[float], *, date: bool = False) -> str:
    if stamp is None:
        return "-"
    local = time.localtime(stamp)
    text = time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", local)
    return text + (time.strftime(" %z", local) if date else "")


def _elapsed(seconds: float) -> str:
    """``+1:05``, ``+1:02:03``."""
    total = int(round(max(0.0, seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"+{hours}:{minutes:02d}:{secs:02d}" if hours else f"+{minutes}:{secs:02d}"


# -- the run ---------------------------------------------------------------------------


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
    records.sort(key=lambda r: _num(r.get("time")) or 0.0)
    for i in range(len(records) - 1, -1, -1):
        if records[i].get("event") == "start":
            return records[i:]
    return records


def _detail(record: Dict[str, Any]) -> Dict[str, Any]:
    detail = record.get("detail")
    return detail if isinstance(detail, dict) else {}


def _verdict(record: Dict[str, Any]) -> RecordedVerdict:
    return HistoryRecord.from_data(record).verdict


def summarize_run(records: List[Dict[str, Any]], points: Sequence[Dict[str, Any]] = ()) -> Run:
    """The facts of one run (see :func:`last_run`) for the outcome box."""
    times = [t for t in (_num(r.get("time")) for r in records) if t is not None]
    point_times = [t for t in (_num(p.get("time")) for p in points) if t is not None]
    start = times[0] if times else (point_times[0] if point_times else None)
    end = max(times + point_times) if (times or point_times) else None
    run = Run(records=records, start=start, end=end)
    if records and records[0].get("event") == "start":
        detail = _detail(records[0])
        run.steps = list(detail.get("steps") or [])
        run.step_interval = _num(detail.get("effective_step_interval") or detail.get("step_interval"))
        run.on_success = detail.get("on_success")
    if records:
        last = records[-1]
        run.state = last.get("state")
        run.message = str(_detail(last).get("message") or "")
    elif points:
        run.state = points[-1].get("state")
    for record in records:
        event = record.get("event")
        detail = _detail(record)
        stamp = _num(record.get("time"))
        if event == "check":
            run.checks += 1
            if _verdict(record).failed:
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
        stamp = _num(record.get("time"))
        if record.get("event") != "check" or stamp is None or stamp > until:
            continue
        verdict = _verdict(record).verdict
        if verdict == "pass":
            first = None
        elif verdict == "fail" and first is None:
            first = stamp
    return first


# -- series -> bins -----------------------------------------------------------------------


@dataclass
class Bin:
    """Points of one time slice added up: ``{group: [requests, errors_5xx, max p99 or None]}``."""

    time: float
    groups: Dict[str, List[Any]]

    def rate(self, group: str) -> Optional[float]:
        requests, errors, _ = self.groups[group]
        return errors / requests if requests else None

    def p99(self, group: str) -> Optional[float]:
        return self.groups[group][2]

    def share(self) -> Optional[float]:
        canary, stable = self.groups["canary"][0], self.groups["stable"][0]
        return canary / (canary + stable) if canary + stable else None


def bin_points(points: Sequence[Dict[str, Any]], start: float, end: float, max_bins: int = MAX_BINS) -> List[Bin]:
    """The points between ``start`` and ``end`` in at most ``max_bins`` equal time slices, empty ones left out."""
    usable = [p for p in points if _num(p.get("time")) is not None]
    if not usable:
        return []
    span = max(end - start, 1e-9)
    count = max(1, min(max_bins, len(usable)))
    width = span / count
    bins: Dict[int, Bin] = {}
    for point in usable:
        stamp = float(point["time"])
        index = min(count - 1, max(0, int((stamp - start) / width)))
        slot = bins.get(index)
        if slot is None:
            slot = bins[index] = Bin(start + (index + 0.5) * width,
                                     {"canary": [0, 0, None], "stable": [0, 0, None]})
        for group in ("canary", "stable"):
            figures = point.get(group) if isinstance(point.get(group), dict) else {}
            acc = slot.groups[group]
            requests = figures.get("requests")
            errors = figures.get("errors_5xx")
            acc[0] += requests if isinstance(requests, int) and not isinstance(requests, bool) else 0
            acc[1] += errors if isinstance(errors, int) and not isinstance(errors, bool) else 0
            p99 = _num(figures.get("p99"))
            if p99 is not None and (acc[2] is None or p99 > acc[2]):
                acc[2] = p99
    return [bins[i] for i in sorted(bins)]


# -- SVG ----------------------------------------------------------------------------------


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value``."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        candidate = factor * 10 ** exponent
        if candidate >= value * (1 - 1e-9):
            return float(candidate)
    return float(10 ** (exponent + 1))


def _time_step(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span / step <= 8:
            return float(step)
    return float(math.ceil(span / 8 / 86400) * 86400)


@dataclass
class Marker:
    """A vertical line across the charts: a step change, a pause, the rollback."""

    time: float
    label: str
    kind: str  # "step", "rollback", "event", "fail"


class Chart:
    """One SVG chart on the run's time axis. ``y_max`` is in the chart's own unit."""

    def __init__(self, title: str, start: float, end: float, y_max: float, y_format: Any) -> None:
        self.title = title
        self.start = start
        self.end = max(end, start + 1.0)
        self.y_max = y_max
        self.y_format = y_format
        self.parts: List[str] = []
        self.legend: List[Tuple[str, str, str]] = []  # (label, colour, dash)

    def x(self, stamp: float) -> float:
        return _LEFT + (stamp - self.start) / (self.end - self.start) * (_W - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        value = min(max(value, 0.0), self.y_max)
        return _H - _BOTTOM - value / self.y_max * (_H - _TOP - _BOTTOM)

    def line(self, values: Iterable[Tuple[float, Optional[float]]], colour: str, label: str, *,
             width: float = 2.0, dash: str = "", step: bool = False) -> None:
        """A polyline; a None value breaks it. ``step`` draws a staircase (the weight timeline)."""
        commands: List[str] = []
        pen_down = False
        last_y = None
        for stamp, value in values:
            if value is None:
                pen_down = False
                continue
            x, y = self.x(stamp), self.y(value)
            if not pen_down:
                commands.append(f"M{x:.1f},{y:.1f}")
                pen_down = True
            elif step and last_y is not None:
                commands.append(f"H{x:.1f}V{y:.1f}")
            else:
                commands.append(f"L{x:.1f},{y:.1f}")
            last_y = y
        if commands:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            self.parts.append(f'<path class="series" d="{"".join(commands)}" fill="none" stroke="{colour}" '
                              f'stroke-width="{width}" stroke-linejoin="round"{dash_attr}>'
                              f'<title>{_e(label)}</title></path>')
        self.legend.append((label, colour, dash))

    def threshold(self, value: float, label: str) -> None:
        """A dashed red line at ``value``; above the axis, only its label at the top says where it is."""
        if value > self.y_max:
            self.parts.append(f'<text x="{_W - _RIGHT - 4}" y="{_TOP + 12}" text-anchor="end" class="thr">'
                              f'{_e(label)} (above the chart)</text>')
            return
        y = self.y(value)
        self.parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c92a2a" '
                          f'stroke-width="1" stroke-dasharray="6 4"><title>{_e(label)}</title></line>'
                          f'<text x="{_W - _RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" class="thr">'
                          f'{_e(label)}</text>')

    def markers(self, markers: Sequence[Marker]) -> None:
        colours = {"step": "#868e96", "rollback": "#c92a2a", "event": "#f08c00", "fail": "#c92a2a"}
        for marker in markers:
            if not self.start <= marker.time <= self.end:
                continue
            x = self.x(marker.time)
            colour = colours.get(marker.kind, "#868e96")
            if marker.kind == "fail":
                base = _H - _BOTTOM
                self.parts.append(f'<path d="M{x:.1f},{base:.1f}l-4,7h8z" fill="{colour}" class="fail-mark">'
                                  f'<title>{_e(marker.label)}</title></path>')
                continue
            dash = "" if marker.kind == "rollback" else ' stroke-dasharray="3 3"'
            self.parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{_H - _BOTTOM}" stroke="{colour}" '
                              f'stroke-width="{2 if marker.kind == "rollback" else 1}"{dash}>'
                              f'<title>{_e(marker.label)}</title></line>')

    def labels(self, labels: Sequence[Tuple[float, float, str]]) -> None:
        """Small text labels at (time, value)."""
        for stamp, value, text in labels:
            x = min(self.x(stamp) + 3, _W - _RIGHT - 30)
            self.parts.append(f'<text x="{x:.1f}" y="{self.y(value) - 4:.1f}" class="lbl">{_e(text)}</text>')

    def svg(self, empty_note: str = "") -> str:
        plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
        out = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="100%" role="img" aria-label="{_e(self.title)}" '
               'preserveAspectRatio="xMidYMid meet">',
               f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fbfbfd" stroke="#ced4da"/>']
        for i in range(5):
            value = self.y_max * i / 4
            y = self.y(value)
            out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e9ecef"/>'
                       f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
                       f'{_e(self.y_format(value))}</text>')
        step = _time_step(self.end - self.start)
        tick = 0.0
        while tick <= self.end - self.start + 1e-9:
            x = self.x(self.start + tick)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" stroke="#868e96"/>'
                       f'<text x="{x:.1f}" y="{_H - _BOTTOM + 17}" text-anchor="middle" class="tick">'
                       f'{_elapsed(tick)}</text>')
            tick += step
        out.extend(self.parts)
        if empty_note:
            out.append(f'<text x="{_LEFT + plot_w / 2}" y="{_TOP + plot_h / 2}" text-anchor="middle" class="empty">'
                       f'{_e(empty_note)}</text>')
        out.append("</svg>")
        return "".join(out)

    def html(self, empty_note: str = "") -> str:
        keys = []
        for label, colour, dash in self.legend:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            keys.append(f'<span class="key"><svg width="26" height="10"><line x1="0" x2="26" y1="5" y2="5" '
                        f'stroke="{colour}" stroke-width="3"{dash_attr}/></svg>{_e(label)}</span>')
        legend = "".join(keys)
        return (f'<figure><figcaption><b>{_e(self.title)}</b> {legend}</figcaption>'
                f'{self.svg(empty_note)}</figure>')


# -- the page ------------------------------------------------------------------------------


def _threshold_of(records: Sequence[Dict[str, Any]], check: str) -> Optional[float]:
    """The threshold the last check record applied for ``check`` (a fraction, seconds)."""
    for record in reversed(records):
        for result in _verdict(record).checks:
            if result.name == check:
                value = _num(result.threshold)
                if value is not None:
                    return value
    return None


def _weights(records: Sequence[Dict[str, Any]], points: Sequence[Dict[str, Any]]) -> List[Tuple[float, float]]:
    """(time, canary percent) at each record (the series' points when there are no records)."""
    source = records if records else points
    result = []
    for item in source:
        stamp, percent = _num(item.get("time")), _num(item.get("canary_percent"))
        if stamp is not None and percent is not None:
            result.append((stamp, percent))
    return result


def _markers(records: Sequence[Dict[str, Any]]) -> Tuple[List[Marker], List[Tuple[float, float, str]]]:
    markers: List[Marker] = []
    labels: List[Tuple[float, float, str]] = []
    for record in records:
        stamp = _num(record.get("time"))
        if stamp is None:
            continue
        event = record.get("event")
        detail = _detail(record)
        if event == "step":
            to = detail.get("to_percent", record.get("canary_percent"))
            markers.append(Marker(stamp, f"{_clock(stamp)} step to {_pct_text(to)}", "step"))
            labels.append((stamp, _num(to) or 0.0, _pct_text(to)))
        elif event == "rollback":
            markers.append(Marker(stamp, f"{_clock(stamp)} rollback: {detail.get('reason', '')}", "rollback"))
        elif event in ("pause", "resume", "drift", "promote", "promoted", "abort", "apply_failed",
                       "restore_failed", "recovered"):
            why = detail.get("reason") or detail.get("message", "")
            markers.append(Marker(stamp, f"{_clock(stamp)} {event}: {why}", "event"))
        elif event == "check" and _verdict(record).failed:
            markers.append(Marker(stamp, f"{_clock(stamp)} failed check: {_verdict(record).reason}", "fail"))
    return markers, labels


def _scale(values: List[float], limit: Optional[float], floor: float, unit: float) -> float:
    """The top of a chart's y axis: the data with some headroom, and the limit if it is not far above the data."""
    top = max(values + [floor])
    if limit is not None and limit <= top * 3:
        top = max(top, limit)
    return _nice_ceiling(top * 1.1 * unit) / unit


def _charts(run: Run, points: Sequence[Dict[str, Any]]) -> str:
    start = run.start if run.start is not None else 0.0
    end = run.end if run.end is not None else start + 1.0
    bins = bin_points(points, start, end)
    markers, labels = _markers(run.records)
    no_series = "" if bins else "no traffic series recorded for this run"

    weight = Chart("Canary weight", start, end, 100.0, lambda v: f"{v:.0f} %")
    steps = _weights(run.records, points)
    if steps:
        steps.append((end, steps[-1][1]))
    weight.markers([m for m in markers if m.kind != "fail"])
    weight.line(steps, WEIGHT_COLOUR, "configured weight (steps)", width=2.5, step=True)
    if bins:
        weight.line([(b.time, None if b.share() is None else b.share() * 100) for b in bins], CANARY_COLOUR,
                    "canary share of requests seen", width=1.2, dash="2 2")
    weight.labels(labels)

    rates = [r for b in bins for r in (b.rate("canary"), b.rate("stable")) if r is not None]
    limit = _threshold_of(run.records, "error_rate")
    errors = Chart("5xx rate", start, end, _scale(rates, limit, 0.01, 100), lambda v: f"{v * 100:.3g} %")
    errors.markers(markers)
    if limit is not None:
        errors.threshold(limit, f"max_error_rate {limit * 100:.3g} %")
    errors.line([(b.time, b.rate("stable")) for b in bins], STABLE_COLOUR, "stable")
    errors.line([(b.time, b.rate("canary")) for b in bins], CANARY_COLOUR, "canary")

    p99s = [v for b in bins for v in (b.p99("canary"), b.p99("stable")) if v is not None]
    p99_limit = _threshold_of(run.records, "p99_latency")
    latency = Chart("p99 latency", start, end, _scale(p99s, p99_limit, 0.001, 1000), lambda v: f"{v * 1000:.4g} ms")
    latency.markers(markers)
    if p99_limit is not None:
        latency.threshold(p99_limit, f"max_p99_latency {p99_limit * 1000:.4g} ms")
    latency.line([(b.time, b.p99("stable")) for b in bins], STABLE_COLOUR, "stable")
    latency.line([(b.time, b.p99("canary")) for b in bins], CANARY_COLOUR, "canary")

    note = ""
    if bins:
        seconds = (end - start) / max(1, min(MAX_BINS, len(points)))
        note = (f'<p class="note">Drawn from {len(points)} points in {len(bins)} time slices of '
                f'{_duration(seconds)}: counts added per slice (rates exact), the largest p99 of each slice. '
                'Dashed grey lines: step changes; red: the rollback; amber: other events; '
                'red ticks: failed checks.</p>')
    return (weight.html(no_series if not steps else "") + errors.html(no_series) + latency.html(no_series) + note)


def _outcome(run: Run) -> str:
    state = run.state or "unknown"
    if state in ACTIVE_STATES + (State.IDLE,):
        css, title = "running", f"still {state}"
    elif state == State.PROMOTED:
        css, title = "good", "promoted"
    elif state == State.ABORTED:
        css, title = "warn", "aborted"
    else:
        css, title = "bad", state.replace("_", " ")
    lines = [f'<section class="outcome {css}" id="outcome"><h2>Outcome: {_e(title)}</h2>']
    if run.message:
        lines.append(f'<p class="message">{_e(run.message)}</p>')
    if run.reason and run.reason not in run.message:
        lines.append(f'<p><b>Why:</b> {_e(run.reason)}</p>')
    facts = []
    if run.rollback_at is not None and run.start is not None:
        facts.append(f"rolled back {_duration(run.rollback_at - run.start)} after the start "
                     f"({_e(_clock(run.rollback_at))})")
        if run.first_failure_at is not None:
            facts.append(f"the first failed check of the deciding streak was at {_e(_clock(run.first_failure_at))}, "
                         f"{_duration(run.rollback_at - run.first_failure_at)} before the rollback")
        if run.restored_at is not None:
            facts.append(f"original files restored {_duration(run.restored_at - run.rollback_at)} after the decision")
    if run.start is not None and run.end is not None:
        facts.append(f"run length {_duration(run.end - run.start)}")
    facts.append(f"{run.checks} check records, {run.failed_checks} failed")
    lines.append("<ul>" + "".join(f"<li>{f}</li>" for f in facts) + "</ul></section>")
    return "".join(lines)


_CHECK_COLUMNS = ('<colgroup><col style="width:9%"><col style="width:8%"><col style="width:7%"><col style="width:9%">'
                  '<col style="width:35%"><col style="width:13%"><col style="width:13%"><col style="width:6%">'
                  '</colgroup>')
_CHECK_HEAD = ("<thead><tr><th>time</th><th>run</th><th>weight</th><th>verdict</th><th>reason</th>"
               "<th>canary req / 5xx / p99</th><th>stable req / 5xx / p99</th><th>streak</th></tr></thead>")


def _figures(summary: Any) -> str:
    if not isinstance(summary, dict):
        return "-"
    requests = summary.get("requests")
    return (f"{_e(requests if requests is not None else '-')} / {_rate_text(_num(summary.get('error_rate')))} / "
            f"{_ms_text(_num(summary.get('p99')))}")


def _check_row(record: Dict[str, Any], start: float) -> str:
    verdict = _verdict(record)
    outcome = str(verdict.verdict or "?")
    stamp = _num(record.get("time")) or 0.0
    reason = _e(verdict.reason)
    failed = [c for c in verdict.checks if c.verdict == "fail"]
    if failed:
        reason += "<ul class=\"failed\">" + "".join(
            f"<li><b>{_e(c.name)}</b>: {_e(c.reason)}</li>" for c in failed) + "</ul>"
    detail = _detail(record)
    streak = detail.get("failure_streak")
    threshold = detail.get("failure_threshold")
    streak_text = "" if streak is None else (f"{_e(streak)}/{_e(threshold)}" if threshold is not None else _e(streak))
    css = outcome if outcome in ("pass", "fail", "inconclusive") else "other"
    return (f'<tr class="check {css}"><td>{_e(_clock(stamp))}</td><td>{_elapsed(stamp - start)}</td>'
            f'<td>{_e(_pct_text(record.get("canary_percent")))}</td><td class="verdict">{_e(outcome)}</td>'
            f'<td>{reason}</td><td>{_figures(verdict.canary)}</td><td>{_figures(verdict.stable)}</td>'
            f'<td>{streak_text}</td></tr>')


def _checks(run: Run) -> str:
    checks = [r for r in run.records if r.get("event") == "check"]
    start = run.start or 0.0
    if not checks:
        return '<section id="checks"><h2>Check verdicts</h2><p>No check was recorded in this run.</p></section>'
    groups: List[Tuple[bool, List[Dict[str, Any]]]] = []  # (quiet, records)
    for record in checks:
        quiet = not _verdict(record).failed
        if groups and groups[-1][0] == quiet:
            groups[-1][1].append(record)
        else:
            groups.append((quiet, [record]))
    blocks: List[str] = []
    pending_rows: List[str] = []

    def close_table() -> None:
        if pending_rows:
            head = _CHECK_HEAD if not blocks else ""
            blocks.append(f'<table class="checks">{_CHECK_COLUMNS}{head}<tbody>{"".join(pending_rows)}</tbody></table>')
            pending_rows.clear()

    for quiet, records in groups:
        if quiet and len(records) >= FOLD_AT:
            close_table()
            if not blocks:
                blocks.append(f'<table class="checks">{_CHECK_COLUMNS}{_CHECK_HEAD}</table>')
            counts: Dict[str, int] = {}
            for record in records:
                name = str(_verdict(record).verdict)
                counts[name] = counts.get(name, 0) + 1
            first, last = _num(records[0].get("time")) or 0.0, _num(records[-1].get("time")) or 0.0
            weights = sorted({_pct_text(r.get("canary_percent")) for r in records}, key=lambda t: _num(t[:-2]) or 0)
            what = ", ".join(f"{n} {_e(k)}" for k, n in sorted(counts.items()))
            rows = "".join(_check_row(r, start) for r in records)
            blocks.append(f'<details class="quiet"><summary>{len(records)} checks without a failure ({what}), '
                          f'{_e(_clock(first))} to {_e(_clock(last))} at {_e(", ".join(weights))}</summary>'
                          f'<table class="checks">{_CHECK_COLUMNS}<tbody>{rows}</tbody></table></details>')
        else:
            pending_rows.extend(_check_row(r, start) for r in records)
    close_table()
    return (f'<section id="checks"><h2>Check verdicts ({len(checks)})</h2>'
            '<p class="note">The history keeps every failed check and every change of verdict; passing and '
            'inconclusive checks at most once a minute. Runs of checks without a failure are folded: click to open.</p>'
            + "".join(blocks) + "</section>")


def _events(run: Run) -> str:
    start = run.start or 0.0
    rows = []
    for record in run.records:
        if record.get("event") == "check":
            continue
        detail = _detail(record)
        stamp = _num(record.get("time")) or 0.0
        text = detail.get("message") or ""
        extra = [f"{key}: {detail[key]}" for key in ("reason", "error", "outcome", "target")
                 if detail.get(key) and str(detail[key]) not in str(text)]
        if detail.get("changed_outside"):
            extra.append("changed outside nginx-canary: " + ", ".join(map(str, detail["changed_outside"])))
        css = "bad" if record.get("event") in ("rollback", "apply_failed", "restore_failed") else ""
        rows.append(f'<tr class="{css}"><td>{_e(_clock(stamp))}</td><td>{_elapsed(stamp - start)}</td>'
                    f'<td>{_e(record.get("event"))}</td><td>{_e(record.get("state"))}</td>'
                    f'<td>{_e(_pct_text(record.get("canary_percent")))}</td>'
                    f'<td>{_e(text)}{"".join(f"<br><small>{_e(x)}</small>" for x in extra)}</td></tr>')
    if not rows:
        return ""
    return ('<section id="events"><h2>Events</h2><table class="events"><colgroup><col style="width:9%">'
            '<col style="width:8%"><col style="width:10%"><col style="width:10%"><col style="width:7%"><col>'
            '</colgroup><thead><tr><th>time</th><th>run</th><th>event</th><th>state</th><th>weight</th>'
            '<th>message</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table></section>")


_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1140px;
       padding: 16px 24px 40px; color: #212529; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 22px 0 8px; }
.meta { color: #495057; margin: 0 0 10px; }
.outcome { border-left: 6px solid #868e96; background: #f8f9fa; padding: 8px 14px; margin: 10px 0; }
.outcome h2 { margin: 4px 0; } .outcome ul { margin: 4px 0; padding-left: 20px; }
.outcome.good { border-color: #2b8a3e; background: #ebfbee; }
.outcome.bad { border-color: #c92a2a; background: #fff5f5; }
.outcome.warn { border-color: #f08c00; background: #fff9db; }
.outcome.running { border-color: #1c7ed6; background: #e7f5ff; }
.message { font-weight: 600; }
figure { margin: 8px 0 4px; } figcaption { margin: 0 0 2px; } .key { margin-left: 14px; color: #495057; }
.key svg { vertical-align: middle; margin-right: 4px; }
svg.chart { display: block; } svg text { font: 11px system-ui, sans-serif; fill: #495057; }
svg text.lbl { fill: #5f3dc4; font-weight: 600; } svg text.thr { fill: #c92a2a; }
svg text.empty { font-size: 14px; fill: #868e96; }
.note { color: #6c757d; font-size: 12px; margin: 2px 0 8px; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 13px; }
th, td { text-align: left; vertical-align: top; padding: 3px 6px; border-bottom: 1px solid #e9ecef;
         overflow-wrap: anywhere; }
th { background: #f1f3f5; font-weight: 600; }
tr.fail td { background: #ffe3e3; } tr.fail td.verdict { color: #c92a2a; font-weight: 700; }
tr.inconclusive td.verdict { color: #868e96; } tr.pass td.verdict { color: #2b8a3e; }
tr.bad td { background: #fff5f5; }
ul.failed { margin: 2px 0 0; padding-left: 18px; color: #c92a2a; }
details.quiet { border-bottom: 1px solid #e9ecef; }
details.quiet summary { padding: 4px 6px; color: #495057; cursor: pointer; background: #f8f9fa; }
footer { margin-top: 24px; color: #868e96; font-size: 12px; }
"""


def render_report(name: str, history: Sequence[Dict[str, Any]], points: Sequence[Dict[str, Any]], *,
                  generated_at: float, source: Optional[str] = None) -> str:
    """The HTML report of rollout ``name``'s last run. Never raises on odd records: what cannot be read is left out.

    ``history`` are history records (any order, several runs: only the last
    run is shown), ``points`` series points (those before the run's start are
    left out), ``generated_at`` seconds since the epoch, ``source`` a line
    saying where the data came from.
    """
    records = last_run(history)
    run_start = _num(records[0].get("time")) if records and records[0].get("event") == "start" else None
    usable = [p for p in points if isinstance(p, dict) and _num(p.get("time")) is not None]
    if run_start is not None:
        usable = [p for p in usable if float(p["time"]) >= run_start - 1.0]
    usable.sort(key=lambda p: float(p["time"]))
    run = summarize_run(records, usable)
    title = f"nginx-canary rollout {name}"
    meta = []
    if run.start is not None:
        meta.append(f"run started {_e(_clock(run.start, date=True))}")
    if run.end is not None and run.start is not None:
        meta.append(f"last record {_e(_clock(run.end, date=True))} ({_duration(run.end - run.start)})")
    if run.steps:
        meta.append("steps " + " → ".join(_e(_pct_text(s)) for s in run.steps))
    if run.step_interval is not None:
        meta.append(f"bake time {_duration(run.step_interval)} per step")
    if run.on_success:
        meta.append(f"on success: {_e(run.on_success)}")
    if not records and not usable:
        body = '<section class="outcome"><h2>No data</h2><p>Nothing was recorded for this rollout yet.</p></section>'
    else:
        body = (_outcome(run) + '<section id="charts"><h2>Weight, 5xx rate and p99 over the run</h2>'
                + _charts(run, usable) + "</section>" + _checks(run) + _events(run))
    footer = [f"generated {_e(_clock(generated_at, date=True))} by nginx-canary"]
    if source:
        footer.append(f"data: {_e(source)}")
    footer.append(f"{len(records)} history records, {len(usable)} series points")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Rollout <code>{_e(name)}</code></h1><p class=\"meta\">{' · '.join(meta)}</p>"
            f"{body}<footer>{' · '.join(footer)}</footer></body></html>\n")
