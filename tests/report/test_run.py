"""What the report reads from the history records of a run: the last run only, and the facts of its outcome."""

from __future__ import annotations

import json
from pathlib import Path

from nginx_canary.report.run import last_run, summarize_run

HISTORY = json.loads((Path(__file__).parent / "golden" / "run.json").read_text())
T0 = HISTORY[0]["time"]


def test_last_run_is_from_the_last_start_on_in_time_order():
    earlier = [dict(r, time=r["time"] - 10_000) for r in HISTORY]
    assert last_run(HISTORY + earlier + ["not a record"]) == HISTORY  # sorted by time, ties kept in order
    assert last_run(HISTORY[1:]) == HISTORY[1:]  # no start: all of them


def test_a_rollback_is_summed_up_with_the_first_failure_of_its_streak():
    run = summarize_run(last_run(HISTORY))
    assert (run.start, run.end, run.state) == (T0, T0 + 155, "rolled_back")
    assert run.steps == ["10", "25", "50", "100"] and run.step_interval == 60.0 and run.on_success == "keep"
    assert run.reason.startswith("2 consecutive failed checks") and run.reason in run.message
    assert (run.rollback_at, run.first_failure_at, run.restored_at) == (T0 + 155, T0 + 150, T0 + 155)
    assert (run.checks, run.failed_checks) == (6, 2)


def test_a_pass_breaks_the_streak_of_failures():
    fail = next(r for r in HISTORY if r["event"] == "check" and r["detail"]["verdict"]["verdict"] == "fail")
    passed = next(r for r in HISTORY if r["event"] == "check" and r["detail"]["verdict"]["verdict"] == "pass")
    rollback = next(r for r in HISTORY if r["event"] == "rollback")
    records = [HISTORY[0], dict(fail, time=T0 + 10), dict(passed, time=T0 + 20), dict(fail, time=T0 + 30),
               dict(rollback, time=T0 + 40)]
    assert summarize_run(records).first_failure_at == T0 + 30


def test_no_records_take_the_run_from_the_points():
    run = summarize_run([], [{"time": T0 + 1, "state": "progressing"}, {"time": T0 + 9, "state": "paused"}])
    assert (run.start, run.end, run.state, run.checks) == (T0 + 1, T0 + 9, "paused", 0)
