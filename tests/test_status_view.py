"""Text rendering of status and history."""

from __future__ import annotations

from nginx_canary.status_view import format_history, format_status

STATUS = {
    "name": "app", "upstream": "backend", "state": "progressing", "step": 1, "steps": [10, 25, 50, 100],
    "canary_percent": 25, "time_left_in_step": 42.4, "failure_streak": 1, "failure_threshold": 2,
    "paused_reason": None, "window_seconds": 30.0, "message": "at step 2 of 4 (25 %)",
    "canary": {"requests": 120, "error_rate": 0.0083, "p99": 0.012},
    "stable": {"requests": 360, "error_rate": 0.0, "p99": None},
    "last_check": {"verdict": "fail", "reason": "error_rate: 0.8 % exceeds 0.5 %"},
}


def test_status_shows_steps_figures_and_the_last_check():
    text = format_status(STATUS)
    lines = text.splitlines()
    assert lines[0] == "app  progressing  upstream backend  canary 25 %  (42 s left in step)"
    assert lines[1] == "  steps: 10 -> [25] -> 50 -> 100"
    assert "canary: 120 req, 5xx 0.83 %, p99 12.0 ms" in text
    assert "stable: 360 req, 5xx 0.00 %, p99 -" in text and "(last 30 s)" in text
    assert "last check: fail: error_rate: 0.8 % exceeds 0.5 %  (failures in a row 1/2)" in text


def test_status_of_an_idle_rollout_has_no_figures_and_no_marked_step():
    text = format_status({"name": "app", "upstream": "backend", "state": "idle", "step": 0, "steps": [12.5, 100],
                          "canary_percent": 0, "time_left_in_step": None, "canary": None, "stable": None,
                          "last_check": None, "message": ""})
    assert "steps: 12.5 -> 100" in text and "[" not in text
    assert "canary: no data yet" in text
    assert "last check" not in text


def test_waiting_for_a_pass_after_the_bake_time():
    assert "bake time over, waiting for a passing check" in format_status({**STATUS, "time_left_in_step": 0.0})


def test_history_line_uses_the_verdict_or_the_message():
    check = {"time": 0, "rollout": "app", "event": "check", "state": "progressing", "canary_percent": "10",
             "detail": {"verdict": {"verdict": "fail", "reason": "too many 5xx"}, "message": "at step 1"}}
    assert format_history(check).endswith("app  check  progressing  10 %  fail: too many 5xx")
    step = {"time": 0, "rollout": "app", "event": "step", "state": "progressing", "canary_percent": "25",
            "detail": {"message": "at step 2 of 4 (25 %)"}}
    assert format_history(step).endswith("step  progressing  25 %  at step 2 of 4 (25 %)")
