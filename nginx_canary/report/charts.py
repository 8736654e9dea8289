"""The three charts of a run on one time axis: the canary's weight (the step timeline, each change marked, plus
the share of requests the canary actually got), canary vs stable 5xx rate, canary vs stable p99, each with the
threshold its check applied. A long run is drawn from at most :data:`nginx_canary.report.bins.MAX_BINS` time
slices. Pure."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from nginx_canary.report.bins import MAX_BINS, Bin, bin_points
from nginx_canary.report.formatting import clock_text, duration_text, finite_number, percent_label
from nginx_canary.report.run import Run, detail_of, verdict_of
from nginx_canary.report.svg import Chart, Marker, nice_ceiling

CANARY_COLOUR = "#e8590c"
STABLE_COLOUR = "#1c7ed6"
WEIGHT_COLOUR = "#5f3dc4"


def _threshold_of(records: Sequence[Dict[str, Any]], check: str) -> Optional[float]:
    """The threshold the last check record applied for ``check`` (a fraction, seconds)."""
    for record in reversed(records):
        for result in verdict_of(record).checks:
            if result.name == check:
                value = finite_number(result.threshold)
                if value is not None:
                    return value
    return None


def _weights(records: Sequence[Dict[str, Any]], points: Sequence[Dict[str, Any]]) -> List[Tuple[float, float]]:
    """(time, canary percent) at each record (the series' points when there are no records)."""
    source = records if records else points
    result = []
    for item in source:
        stamp, percent = finite_number(item.get("time")), finite_number(item.get("canary_percent"))
        if stamp is not None and percent is not None:
            result.append((stamp, percent))
    return result


def _markers(records: Sequence[Dict[str, Any]]) -> Tuple[List[Marker], List[Tuple[float, float, str]]]:
    """The markers across the charts (steps, the rollback, other events, failed checks) and the step labels."""
    markers: List[Marker] = []
    labels: List[Tuple[float, float, str]] = []
    for record in records:
        stamp = finite_number(record.get("time"))
        if stamp is None:
            continue
        event = record.get("event")
        detail = detail_of(record)
        if event == "step":
            to = detail.get("to_percent", record.get("canary_percent"))
            markers.append(Marker(stamp, f"{clock_text(stamp)} step to {percent_label(to)}", "step"))
            labels.append((stamp, finite_number(to) or 0.0, percent_label(to)))
        elif event == "rollback":
            markers.append(Marker(stamp, f"{clock_text(stamp)} rollback: {detail.get('reason', '')}", "rollback"))
        elif event in ("pause", "resume", "drift", "log_unparsed", "promote", "promoted", "abort", "apply_failed",
                       "restore_failed", "recovered"):
            why = detail.get("reason") or detail.get("message", "")
            markers.append(Marker(stamp, f"{clock_text(stamp)} {event}: {why}", "event"))
        elif event == "check" and verdict_of(record).failed:
            markers.append(Marker(stamp, f"{clock_text(stamp)} failed check: {verdict_of(record).reason}", "fail"))
    return markers, labels


def _scale(values: List[float], limit: Optional[float], floor: float, unit: float) -> float:
    """The top of a chart's y axis: the data with some headroom, and the limit if it is not far above the data."""
    top = max(values + [floor])
    if limit is not None and limit <= top * 3:
        top = max(top, limit)
    return nice_ceiling(top * 1.1 * unit) / unit


class _Figure(NamedTuple):
    """One figure of both groups drawn canary vs stable, with the threshold its check applied."""

    title: str
    value: Callable[[Bin, str], Optional[float]]
    check: str  # the check whose threshold is drawn
    setting: str  # the threshold's setting, for its label
    floor: float  # the lowest top of the y axis
    unit: float  # the y axis' unit per value, its top rounded in that unit
    y_format: Callable[[float], str]


_FIGURES = (
    _Figure("5xx rate", Bin.rate, "error_rate", "max_error_rate", 0.01, 100, lambda v: f"{v * 100:.3g} %"),
    _Figure("p99 latency", Bin.p99, "p99_latency", "max_p99_latency", 0.001, 1000, lambda v: f"{v * 1000:.4g} ms"),
)


def _weight_chart(run: Run, points: Sequence[Dict[str, Any]], bins: List[Bin], start: float, end: float,
                  markers: List[Marker], labels: List[Tuple[float, float, str]]) -> Tuple[Chart, bool]:
    """The weight chart, and whether it has a step timeline to draw."""
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
    return weight, bool(steps)


def _group_chart(figure: _Figure, run: Run, bins: List[Bin], start: float, end: float,
                 markers: List[Marker]) -> Chart:
    values = [v for b in bins for v in (figure.value(b, "canary"), figure.value(b, "stable")) if v is not None]
    limit = _threshold_of(run.records, figure.check)
    chart = Chart(figure.title, start, end, _scale(values, limit, figure.floor, figure.unit), figure.y_format)
    chart.markers(markers)
    if limit is not None:
        chart.threshold(limit, f"{figure.setting} {figure.y_format(limit)}")
    for group, colour in (("stable", STABLE_COLOUR), ("canary", CANARY_COLOUR)):
        chart.line([(b.time, figure.value(b, group)) for b in bins], colour, group)
    return chart


def run_charts(run: Run, points: Sequence[Dict[str, Any]]) -> str:
    """The charts of ``run`` drawn from its series ``points`` (in time order), and a note on how they were drawn."""
    start = run.start if run.start is not None else 0.0
    end = run.end if run.end is not None else start + 1.0
    bins = bin_points(points, start, end)
    markers, labels = _markers(run.records)
    no_series = "" if bins else "no traffic series recorded for this run"
    weight, has_steps = _weight_chart(run, points, bins, start, end, markers, labels)
    charts = [weight.html(no_series if not has_steps else "")]
    charts += [_group_chart(figure, run, bins, start, end, markers).html(no_series) for figure in _FIGURES]
    note = ""
    if bins:
        seconds = (end - start) / max(1, min(MAX_BINS, len(points)))
        note = (f'<p class="note">Drawn from {len(points)} points in {len(bins)} time slices of '
                f'{duration_text(seconds)}: counts added per slice (rates exact), the largest p99 of each slice. '
                'Dashed grey lines: step changes; red: the rollback; amber: other events; '
                'red ticks: failed checks.</p>')
    return "".join(charts) + note
