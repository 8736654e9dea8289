"""Series points added up into equal time slices for drawing: counts added (so rates stay exact), the largest
p99 of each slice. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from nginx_canary.report.formatting import finite_number

#: Most time bins a chart is drawn from.
MAX_BINS = 480


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
    usable = [p for p in points if finite_number(p.get("time")) is not None]
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
            p99 = finite_number(figures.get("p99"))
            if p99 is not None and (acc[2] is None or p99 > acc[2]):
                acc[2] = p99
    return [bins[i] for i in sorted(bins)]
