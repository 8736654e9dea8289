"""One inline SVG chart on a run's time axis: grid and ticks, polylines (a staircase for the weight timeline),
threshold lines, event markers and labels, and its legend as HTML. Every label is escaped. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from nginx_canary.report.formatting import elapsed_text, esc

# Chart geometry (SVG user units; the SVG scales to the page width).
_W, _H = 1000, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 14, 36


def nice_ceiling(value: float) -> float:
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
    """The time axis' tick spacing: a round number of seconds giving at most 8 ticks over ``span``."""
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
                              f'<title>{esc(label)}</title></path>')
        self.legend.append((label, colour, dash))

    def threshold(self, value: float, label: str) -> None:
        """A dashed red line at ``value``; above the axis, only its label at the top says where it is."""
        if value > self.y_max:
            self.parts.append(f'<text x="{_W - _RIGHT - 4}" y="{_TOP + 12}" text-anchor="end" class="thr">'
                              f'{esc(label)} (above the chart)</text>')
            return
        y = self.y(value)
        self.parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c92a2a" '
                          f'stroke-width="1" stroke-dasharray="6 4"><title>{esc(label)}</title></line>'
                          f'<text x="{_W - _RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" class="thr">'
                          f'{esc(label)}</text>')

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
                                  f'<title>{esc(marker.label)}</title></path>')
                continue
            dash = "" if marker.kind == "rollback" else ' stroke-dasharray="3 3"'
            self.parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{_H - _BOTTOM}" stroke="{colour}" '
                              f'stroke-width="{2 if marker.kind == "rollback" else 1}"{dash}>'
                              f'<title>{esc(marker.label)}</title></line>')

    def labels(self, labels: Sequence[Tuple[float, float, str]]) -> None:
        """Small text labels at (time, value)."""
        for stamp, value, text in labels:
            x = min(self.x(stamp) + 3, _W - _RIGHT - 30)
            self.parts.append(f'<text x="{x:.1f}" y="{self.y(value) - 4:.1f}" class="lbl">{esc(text)}</text>')

    def svg(self, empty_note: str = "") -> str:
        """The ``<svg>`` element; ``empty_note`` is written across the plot when there is nothing to draw."""
        plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
        out = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="100%" role="img" aria-label="{esc(self.title)}" '
               'preserveAspectRatio="xMidYMid meet">',
               f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fbfbfd" stroke="#ced4da"/>']
        for i in range(5):
            value = self.y_max * i / 4
            y = self.y(value)
            out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e9ecef"/>'
                       f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
                       f'{esc(self.y_format(value))}</text>')
        step = _time_step(self.end - self.start)
        tick = 0.0
        while tick <= self.end - self.start + 1e-9:
            x = self.x(self.start + tick)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" stroke="#868e96"/>'
                       f'<text x="{x:.1f}" y="{_H - _BOTTOM + 17}" text-anchor="middle" class="tick">'
                       f'{elapsed_text(tick)}</text>')
            tick += step
        out.extend(self.parts)
        if empty_note:
            out.append(f'<text x="{_LEFT + plot_w / 2}" y="{_TOP + plot_h / 2}" text-anchor="middle" class="empty">'
                       f'{esc(empty_note)}</text>')
        out.append("</svg>")
        return "".join(out)

    def html(self, empty_note: str = "") -> str:
        """The chart as a ``<figure>`` with its title and legend."""
        keys = []
        for label, colour, dash in self.legend:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            keys.append(f'<span class="key"><svg width="26" height="10"><line x1="0" x2="26" y1="5" y2="5" '
                        f'stroke="{colour}" stroke-width="3"{dash_attr}/></svg>{esc(label)}</span>')
        legend = "".join(keys)
        return (f'<figure><figcaption><b>{esc(self.title)}</b> {legend}</figcaption>'
                f'{self.svg(empty_note)}</figure>')
