"""A verdict's JSON form: a round trip, and a strict reading."""

from __future__ import annotations

import json

import pytest

from nginx_canary.logs.window import Stats
from nginx_canary.rollout.analysis import evaluate
from nginx_canary.rollout.checks import Thresholds
from nginx_canary.rollout.verdict import Verdict
from tests.rollout.figures import stats

DEFAULT = Thresholds()
AT = 1_700_000_000.0


@pytest.mark.parametrize("canary, stable", [
    (stats(240, errors_5xx=29), stats(2000)),
    (stats(3), Stats()),
    (stats(100, latency=None), stats(100, latency=0.0)),
    (stats(100, latency=0.3, slow=5), stats(1000, latency=0.1)),
])
def test_verdict_round_trips_through_json(canary, stable):
    verdict = evaluate(canary, stable, DEFAULT, AT)
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data == verdict.to_dict()
    again = Verdict.from_dict(data)
    assert again == verdict
    assert again.to_dict() == verdict.to_dict()


def test_verdict_from_dict_is_strict():
    data = evaluate(stats(100), stats(100), DEFAULT, AT).to_dict()
    with pytest.raises(ValueError, match="unknown 'extra'"):
        Verdict.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match="missing 'at'"):
        Verdict.from_dict({k: v for k, v in data.items() if k != "at"})
    with pytest.raises(ValueError, match="unknown verdict 'maybe'"):
        Verdict.from_dict({**data, "verdict": "maybe"})
    bad_check = dict(data["checks"][0], canary_requests=-1)
    with pytest.raises(ValueError, match="canary_requests"):
        Verdict.from_dict({**data, "checks": [bad_check]})
    with pytest.raises(ValueError, match="'canary' must be an object of numbers"):
        Verdict.from_dict({**data, "canary": {"requests": "many"}})
