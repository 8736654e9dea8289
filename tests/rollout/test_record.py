"""History records read back as typed data; damaged or older lines read as empty, never raise."""

from __future__ import annotations

import pytest

from nginx_canary.rollout.record import HistoryRecord, RecordedVerdict

CHECK = {
    "time": 1700000000.5, "event": "check", "state": "progressing", "step": 0, "canary_percent": "10",
    "detail": {"message": "at step 1", "failure_streak": 1, "verdict": {
        "verdict": "fail", "reason": "1 of 2 checks failed",
        "checks": [{"name": "error_rate", "verdict": "fail", "reason": "5xx 50 %", "threshold": 0.05},
                   {"name": "p99_latency", "verdict": "pass", "reason": "ok", "threshold": 1.0}],
        "canary": {"requests": 20}, "stable": {"requests": 80}}},
}


def test_a_failed_check_reads_with_its_failed_checks() -> None:
    record = HistoryRecord.from_data(CHECK)
    assert (record.time, record.event, record.state, record.canary_percent) == (1700000000.5, "check", "progressing", "10")
    assert record.detail["failure_streak"] == 1
    verdict = record.verdict
    assert verdict.failed and verdict.reason == "1 of 2 checks failed"
    assert [c.name for c in verdict.failed_checks()] == ["error_rate"] and verdict.checks[0].threshold == 0.05
    assert verdict.canary == {"requests": 20} and verdict.stable == {"requests": 80}


def test_a_passing_verdict_has_no_failed_checks_even_if_one_check_says_fail() -> None:
    data = {**CHECK, "detail": {"verdict": {**CHECK["detail"]["verdict"], "verdict": "pass"}}}
    verdict = HistoryRecord.from_data(data).verdict
    assert not verdict.failed and verdict.failed_checks() == [] and len(verdict.checks) == 2


@pytest.mark.parametrize("data", [
    {}, {"event": "step"}, {"detail": None}, {"detail": "text"}, {"detail": {"verdict": "fail"}},
    {"detail": {"verdict": {"verdict": 3, "checks": "x", "canary": [1]}}}, {"time": "soon", "event": 5},
    {"time": True}, {"detail": {"verdict": {"checks": [None, 1, {"name": "x"}]}}},
])
def test_damaged_or_other_records_read_as_empty(data) -> None:
    record = HistoryRecord.from_data(data)
    assert record.verdict.verdict is None and not record.verdict.failed and record.verdict.failed_checks() == []
    assert record.verdict.canary is None and record.verdict.stable is None
    assert record.time is None or isinstance(record.time, float)
    assert record.event is None or isinstance(record.event, str)


def test_an_empty_verdict_is_the_default() -> None:
    assert HistoryRecord.from_data({"event": "pause"}).verdict == RecordedVerdict()
