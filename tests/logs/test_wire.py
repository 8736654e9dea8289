"""Stats and latency sketches as JSON data and back: another host's figures, merged as if they were ours."""

from __future__ import annotations

import json
import random

import pytest

from nginx_canary.logs.sketch import LatencySketch
from nginx_canary.logs.window import Stats


def _stats(seed: int, n: int = 3000) -> Stats:
    rng = random.Random(seed)
    stats = Stats()
    for _ in range(n):
        stats.add(rng.choice([200, 500, 404, 301, None]), rng.choice([0.0, rng.expovariate(20), None]))
    return stats


def _through_json(data: object) -> object:
    return json.loads(json.dumps(data))


def test_stats_survive_a_trip_through_json_with_every_quantile():
    stats = _stats(1)
    again = Stats.from_wire(_through_json(stats.to_wire()))
    assert again.summary() == stats.summary()
    assert again.to_wire() == stats.to_wire()
    assert [again.latency.count_above(b, surely=True) for b in (0.01, 0.05, 0.2)] == \
        [stats.latency.count_above(b, surely=True) for b in (0.01, 0.05, 0.2)]


def test_merging_two_hosts_figures_read_from_json_equals_merging_the_originals():
    one, two = _stats(2), _stats(3)
    pooled = Stats.from_wire(_through_json(one.to_wire()))
    pooled.merge(Stats.from_wire(_through_json(two.to_wire())))
    direct = one.copy()
    direct.merge(two)
    assert pooled.to_wire() == direct.to_wire()


def test_empty_stats_and_a_collapsed_sketch_round_trip():
    assert Stats.from_wire(_through_json(Stats().to_wire())).requests == 0
    sketch = LatencySketch(max_bins=4)
    for i in range(1, 60):
        sketch.add(0.001 * i)
    assert sketch.collapsed
    again = LatencySketch.from_wire(_through_json(sketch.to_wire()))
    assert again.to_wire() == sketch.to_wire() and again.quantile(0.99) == sketch.quantile(0.99)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(requests=-1), "requests"),
    (lambda d: d.update(errors_5xx=10 ** 9), "more responses"),
    (lambda d: d.update(requests=True), "requests"),
    (lambda d: d["latency"].update(bins=[[5, 1], [3, 1]]), "ascending"),
    (lambda d: d["latency"].update(bins=[[5, 0]]), "count > 0"),
    (lambda d: d["latency"].update(min=None), "min, max"),
    (lambda d: d["latency"].update(accuracy="x"), "bad field"),
    (lambda d: d.update(latency=[]), "JSON object"),
])
def test_figures_that_are_not_a_sketch_are_refused_with_what_is_wrong(change, words):
    data = _through_json(_stats(4, 200).to_wire())
    change(data)
    with pytest.raises(ValueError, match=words):
        Stats.from_wire(data)


def test_more_latency_samples_than_requests_are_refused():
    data = _through_json(_stats(5, 200).to_wire())
    data["requests"] = data["errors_5xx"] + data["errors_4xx"] + data["responses_2xx"] + data["responses_3xx"]
    data["latency"]["zero"] += 10 ** 6
    with pytest.raises(ValueError):
        Stats.from_wire(data)
