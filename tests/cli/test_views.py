"""Text rendering of status and history, and the frames of `status --watch`."""

from __future__ import annotations

import pytest

from nginx_canary.cli.views import (format_history, format_status, format_watch_line, is_final, progress_bar,
                                      render_watch)

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


def test_status_says_when_the_access_log_reader_is_or_was_behind():
    keeping_up = {"backlog_bytes": 4096, "skipped_bytes": 0, "skips": 0}
    assert "access log" not in format_status({**STATUS, "access_log": keeping_up})
    skipped = {"backlog_bytes": 0, "skipped_bytes": 80 << 20, "skips": 2}
    assert ("  access log: 0.0 MiB unread; 80.0 MiB skipped in 2 skip(s) because the reader fell behind"
            in format_status({**STATUS, "access_log": skipped}).splitlines())
    assert "access log" not in format_status({**STATUS, "access_log": {"skips": "x"}})


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


# --- the live view (status --watch) ------------------------------------------------------------------

WATCHED = {**STATUS, "step_interval": 60.0, "time_left_in_step": 30.0, "snapshot_id": "app-1",
           "last_check": {"verdict": "fail", "reason": "error_rate: canary 5xx rate 0.8 % exceeds 0.5 %"}}


def test_progress_bar_marks_the_current_step_and_fills_it_with_the_bake_time():
    labels, bar = progress_bar(WATCHED, 60)
    assert bar.startswith("[") and bar.endswith("]") and bar.count("|") == 3
    done, current, later, last = bar[1:-1].split("|")
    assert set(done) == {"="} and set(later) == set(last) == {"."}
    # Half the bake time has passed: the head is half-way through the segment.
    assert abs(current.index(">") - (len(current) - 1) / 2) <= 1 and set(current[:current.index(">")]) == {"="}
    assert "[25 %]" in labels and "10 %" in labels and "100 %" in labels
    # The current step's label sits over its segment.
    assert labels.index("[25 %]") == bar.index("|") + 1


def test_progress_bar_for_paused_idle_promoted_and_rolled_back():
    assert "|" in progress_bar({**WATCHED, "state": "paused"}, 60)[1].split("|", 1)[1][:14]
    assert set(progress_bar({**WATCHED, "state": "idle"}, 60)[1][1:-1]) == {".", "|"}
    assert set(progress_bar({**WATCHED, "state": "promoted", "step": 3}, 60)[1][1:-1]) == {"=", "|"}
    rolled = progress_bar({**WATCHED, "state": "rolled_back", "step": 2}, 60)[1][1:-1].split("|")
    assert set(rolled[2]) == {"X"} and set(rolled[3]) == {"."}
    assert "[" not in progress_bar({**WATCHED, "state": "rolled_back"}, 60)[0]
    assert progress_bar({**WATCHED, "steps": []}, 60)[1] == "[no steps]"


def test_progress_bar_of_many_steps_in_a_narrow_terminal_keeps_the_current_label():
    many = {**WATCHED, "steps": [1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100], "step": 6}
    labels, bar = progress_bar(many, 56)
    assert len(bar) <= 56 and "[40 %]" in labels and "100 %" in labels


def test_watch_frame_shows_rates_verdict_and_time_left_within_the_width():
    for width in (40, 60, 80, 132):
        lines = render_watch(WATCHED, width=width, now=1_700_000_000.0)
        assert all(len(line) <= width - 1 for line in lines), (width, lines)
    lines = render_watch(WATCHED, width=100, now=1_700_000_000.0)
    text = "\n".join(lines)
    assert lines[0].startswith("app  PROGRESSING  upstream backend  canary 25 %")
    assert "30 s left in step 2 of 4" in text
    # 120 and 360 requests in a 30 s window: 4 and 12 requests per second.
    canary = [line for line in lines if line.strip().startswith("canary ")][0].split()
    stable = [line for line in lines if line.strip().startswith("stable ")][0].split()
    assert canary == ["canary", "4.00", "0.83", "%", "12.0", "ms"]
    assert stable == ["stable", "12.00", "0.00", "%", "-"]
    assert "last check: FAIL: error_rate: canary 5xx rate 0.8 % exceeds 0.5 %  (failures in a row 1/2)" in text
    assert "at step 2 of 4 (25 %)" in text


def test_watch_frame_wraps_a_long_reason_and_shows_a_daemon_error():
    long = {**WATCHED, "last_check": {"verdict": "fail", "reason": "word " * 60}}
    lines = render_watch(long, width=60, error="the daemon is not running")
    check = [i for i, line in enumerate(lines) if "last check" in line][0]
    assert lines[check + 2].endswith("...")  # at most three lines
    assert lines[-1] == "  ! the daemon is not running"


def test_watch_frame_of_states_without_figures():
    idle = {"name": "app", "upstream": "backend", "state": "idle", "step": 0, "steps": [10, 100],
            "canary_percent": 0, "canary": None, "stable": None, "last_check": None, "message": ""}
    text = "\n".join(render_watch(idle, width=80))
    assert "not started" in text and "last check: none yet" in text
    canary = [line.split() for line in text.splitlines() if line.strip().startswith("canary ")]
    assert canary == [["canary", "-", "-", "-"]]
    paused = "\n".join(render_watch({**WATCHED, "state": "paused", "paused_reason": "by hand"}, width=80))
    assert "paused at step 2 of 4" in paused and "paused: by hand" in paused
    done = "\n".join(render_watch({**WATCHED, "state": "rolled_back", "time_left_in_step": None}, width=80))
    assert "ROLLED BACK" in done and "rolled back" in done


def test_watch_line_is_one_compact_line():
    line = format_watch_line(WATCHED, now=1_700_000_000.0)
    assert "\n" not in line and "\x1b" not in line
    assert " app progressing 25 % step 2/4 30s left | canary 4.00 req/s 5xx 0.83 % p99 12.0 ms" in line
    assert "| stable 12.00 req/s 5xx 0.00 % p99 - | fail: error_rate: canary 5xx rate 0.8 % exceeds 0.5 %" in line
    assert format_watch_line(WATCHED, error="gone").endswith("| ! gone")


@pytest.mark.parametrize("state, snapshot, final", [
    ("progressing", "s", False), ("paused", "s", False), ("idle", None, False),
    ("promoted", None, True), ("rolled_back", None, True), ("aborted", None, True), ("failed", "s", True),
    ("rolled_back", "s", False),  # the restore is still owed
])
def test_is_final(state, snapshot, final):
    assert is_final({"state": state, "snapshot_id": snapshot}) is final
