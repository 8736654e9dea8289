"""The report's text of values."""

from __future__ import annotations

import math

from nginx_canary.report.formatting import duration_text, elapsed_text, esc, finite_number, percent_label


def test_durations_and_elapsed_times():
    assert [duration_text(s) for s in (None, -1, 0.85, 12.0, 12.5, 192, 180, 7500)] == [
        "-", "0 ms", "850 ms", "12 s", "12.5 s", "3 min 12 s", "3 min", "2 h 5 min"]
    assert [elapsed_text(s) for s in (-3, 65, 3723)] == ["+0:00", "+1:05", "+1:02:03"]


def test_numbers_are_read_leniently_and_strings_escaped():
    assert [finite_number(v) for v in ("12.5", 3, True, math.inf, "x", None)] == [12.5, 3.0, None, None, None, None]
    assert percent_label("12.5") == "12.5 %" and percent_label("x") == "-"
    assert esc('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;" and esc(None) == ""
