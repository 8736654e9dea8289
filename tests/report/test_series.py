"""The per-run time series: points, batching, bounds (downsampling), the file and its torn lines."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import pytest

from nginx_canary import fsutil
from nginx_canary.errors import BadInputError, StateError
from nginx_canary.report.series import SeriesRecorder, read_series, series_path

T0 = 1_700_000_000.0


def group(requests: int, errors: int = 0, p99=0.05):
    return {"requests": requests, "errors_5xx": errors, "errors_4xx": 0, "error_rate": errors / requests if requests
            else 0.0, "p50": 0.01, "p90": 0.02, "p95": 0.03, "p99": p99, "max": 0.1}


def record(rec: SeriesRecorder, t: float, canary_requests: int = 10, errors: int = 0, p99=0.05, percent="10",
           state="progressing") -> None:
    rec.record(t, canary=group(canary_requests, errors, p99), stable=group(90, 1, 0.04), canary_percent=percent,
               state=state)


def file_lines(state_dir: Path) -> list:
    return Path(series_path(str(state_dir), "app")).read_text().splitlines()


def test_points_round_trip_through_the_file(tmp_path):
    rec = SeriesRecorder(str(tmp_path), "app")
    rec.start_run(T0)
    record(rec, T0 + 1, canary_requests=10, errors=2, p99=0.012, percent="12.5")
    record(rec, T0 + 2, canary_requests=0, p99=None, percent=Fraction(25), state="paused")
    rec.flush()
    expected = [
        {"time": T0 + 1, "canary_percent": 12.5, "state": "progressing",
         "canary": {"requests": 10, "errors_5xx": 2, "error_rate": 0.2, "p99": 0.012},
         "stable": {"requests": 90, "errors_5xx": 1, "error_rate": 1 / 90, "p99": 0.04}},
        {"time": T0 + 2, "canary_percent": 25, "state": "paused",
         "canary": {"requests": 0, "errors_5xx": 0, "error_rate": 0.0, "p99": None},
         "stable": {"requests": 90, "errors_5xx": 1, "error_rate": 1 / 90, "p99": 0.04}},
    ]
    assert rec.points() == expected
    assert rec.points(limit=1) == expected[1:] and rec.points(limit=0) == []
    header, points = read_series(str(tmp_path), "app")
    assert header == {"series": 1, "name": "app", "run_started": T0, "resolution": 1}
    assert points == expected
    assert SeriesRecorder(str(tmp_path), "app").points() == expected
    path = series_path(str(tmp_path), "app")
    assert path == str(tmp_path / "rollouts" / "app.series.jsonl")
    assert os.stat(path).st_mode & 0o777 == 0o600
    # Compact: well under 100 bytes a point.
    assert all(len(line) < 100 for line in file_lines(tmp_path)[1:])


def test_record_batches_appends_without_fsync_and_flush_syncs(tmp_path, monkeypatch):
    syncs, writes = [], []
    real_fsync, real_write_all = os.fsync, fsutil.write_all
    monkeypatch.setattr(os, "fsync", lambda fd: (syncs.append(fd), real_fsync(fd)))
    monkeypatch.setattr(fsutil, "write_all", lambda fd, data: (writes.append(data), real_write_all(fd, data)))
    rec = SeriesRecorder(str(tmp_path), "app", flush_every=5)
    rec.start_run(T0)  # a new file: written atomically, with fsync
    synced_at_start = len(syncs)
    for i in range(1, 101):
        record(rec, T0 + i)
    assert 15 <= len(writes) <= 21, len(writes)  # one append every 5 s, not 100
    assert len(syncs) == synced_at_start  # on the daemon's loop: no disk flush for the report's points
    # What the file lacks is at most the last flush_every seconds (plus the open point).
    on_disk = read_series(str(tmp_path), "app")[1]
    assert len(rec.points()) == 100 and 100 - len(on_disk) <= 6
    rec.flush()  # the end of a run: written and synced
    assert len(syncs) == synced_at_start + 1 and len(read_series(str(tmp_path), "app")[1]) == 100


def test_a_crash_loses_at_most_the_unflushed_seconds_and_a_restart_goes_on(tmp_path):
    rec = SeriesRecorder(str(tmp_path), "app", flush_every=5)
    rec.start_run(T0)
    for i in range(1, 13):
        record(rec, T0 + i)
    del rec  # SIGKILL: no flush
    again = SeriesRecorder(str(tmp_path), "app", flush_every=5)
    kept = again.points()
    assert 12 - 6 <= len(kept) < 12
    assert [p["time"] for p in kept] == [T0 + i for i in range(1, len(kept) + 1)]
    for i in range(13, 20):
        record(again, T0 + i)
    again.flush()
    times = [p["time"] for p in read_series(str(tmp_path), "app")[1]]
    assert times == sorted(times) and times[-1] == T0 + 19 and len(times) == len(set(times))


def test_a_second_recorded_twice_is_replaced_not_added(tmp_path):
    rec = SeriesRecorder(str(tmp_path), "app")
    rec.start_run(T0)
    record(rec, T0 + 1.1, canary_requests=3)
    record(rec, T0 + 1.9, canary_requests=7)  # the same second, seen later: 7 in all
    record(rec, T0 + 2.0, canary_requests=5)
    assert [p["canary"]["requests"] for p in rec.points()] == [7, 5]


def test_start_run_starts_a_new_series(tmp_path):
    rec = SeriesRecorder(str(tmp_path), "app")
    rec.start_run(T0)
    for i in range(1, 4):
        record(rec, T0 + i)
    rec.flush()
    rec.start_run(T0 + 100)
    assert rec.points() == []
    assert read_series(str(tmp_path), "app") == ({"series": 1, "name": "app", "run_started": T0 + 100,
                                                  "resolution": 1}, [])
    record(rec, T0 + 101)
    rec.flush()
    assert [p["time"] for p in read_series(str(tmp_path), "app")[1]] == [T0 + 101]


def test_record_without_a_started_run_starts_one(tmp_path):
    rec = SeriesRecorder(str(tmp_path / "new"), "app")
    record(rec, T0 + 5)
    rec.flush()
    header, points = read_series(str(tmp_path / "new"), "app")
    assert header["run_started"] == T0 + 5 and len(points) == 1


def test_a_long_run_is_downsampled_within_the_bound_keeping_its_totals(tmp_path):
    rec = SeriesRecorder(str(tmp_path), "app", max_points=100, flush_every=5)
    rec.start_run(T0)
    for i in range(1, 1001):
        record(rec, T0 + i, canary_requests=10, errors=1 if i == 500 else 0, p99=0.9 if i == 700 else 0.05,
               percent="10" if i < 600 else "50")
    rec.flush()
    points = rec.points()
    assert len(points) <= 100
    assert rec.resolution == 16
    assert sum(p["canary"]["requests"] for p in points) == 10_000
    assert sum(p["canary"]["errors_5xx"] for p in points) == 1
    assert max(p["canary"]["p99"] for p in points) == 0.9  # the worse p99 survives the merge
    failing = [p for p in points if p["canary"]["errors_5xx"]][0]
    assert failing["canary"]["error_rate"] == 1 / failing["canary"]["requests"]
    assert points[0]["time"] < T0 + 20 and points[-1]["time"] == T0 + 1000  # the whole run, not its end
    assert points[-1]["canary_percent"] == 50
    # The file holds the same, within the bound.
    assert len(file_lines(tmp_path)) <= 101
    header, on_disk = read_series(str(tmp_path), "app")
    assert header["resolution"] == 16 and on_disk == points
    # A recorder started on that file keeps the resolution.
    assert SeriesRecorder(str(tmp_path), "app", max_points=100).resolution == 16


def test_an_oversized_file_is_downsampled_when_loaded(tmp_path):
    rec = SeriesRecorder(str(tmp_path), "app")
    rec.start_run(T0)
    for i in range(1, 301):
        record(rec, T0 + i)
    rec.flush()
    small = SeriesRecorder(str(tmp_path), "app", max_points=50)
    assert len(small.points()) <= 50
    assert sum(p["canary"]["requests"] for p in small.points()) == 3000


def test_torn_lines_are_skipped_and_cut_before_the_next_append(tmp_path):
    rec = SeriesRecorder(str(tmp_path), "app", flush_every=0)
    rec.start_run(T0)
    record(rec, T0 + 1)
    record(rec, T0 + 2)
    path = series_path(str(tmp_path), "app")
    with open(path, "ab") as fh:
        fh.write(b'{"t": 1700000003, "p": 10, "s": "progr')  # a torn append
    assert [p["time"] for p in read_series(str(tmp_path), "app")[1]] == [T0 + 1]
    record(rec, T0 + 3)
    record(rec, T0 + 4)
    rec.flush()
    text = Path(path).read_text()
    assert "progr\n" not in text and text.endswith("\n")
    assert [p["time"] for p in read_series(str(tmp_path), "app")[1]] == [T0 + 1, T0 + 2, T0 + 3, T0 + 4]
    # A line of junk in the middle is skipped too.
    with open(path, "ab") as fh:
        fh.write(b"\xff\xfe not json\n")
    assert len(read_series(str(tmp_path), "app")[1]) == 4


def test_disk_errors_never_reach_record_but_flush_reports_them(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rec = SeriesRecorder(str(blocker / "state"), "app", flush_every=1)
    with pytest.raises(StateError):
        rec.start_run(T0)
    for i in range(1, 10):
        record(rec, T0 + i)  # logs, does not raise
    assert len(rec.points()) == 9
    assert sum("series" in r.getMessage() for r in caplog.records) == 1  # once, not per point
    with pytest.raises(StateError) as info:
        rec.flush()
    assert "\n" not in str(info.value)


def test_a_file_of_another_format_is_refused(tmp_path):
    path = Path(series_path(str(tmp_path), "app"))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"series": 2, "name": "app"}) + "\n")
    with pytest.raises(StateError, match="format 2"):
        read_series(str(tmp_path), "app")
    # The daemon's recorder is not stopped by it: it starts afresh and replaces the file.
    rec = SeriesRecorder(str(tmp_path), "app")
    assert rec.points() == []
    record(rec, T0 + 1)
    rec.flush()
    header, points = read_series(str(tmp_path), "app")
    assert header["series"] == 1 and len(points) == 1


def test_missing_file_is_an_empty_series(tmp_path):
    assert read_series(str(tmp_path), "app") == ({}, [])
    assert SeriesRecorder(str(tmp_path), "app").points() == []


@pytest.mark.parametrize("call", [
    lambda r: r.record(float("nan"), canary=group(1), stable=group(1), canary_percent="10", state="progressing"),
    lambda r: r.record(T0, canary=group(-1), stable=group(1), canary_percent="10", state="progressing"),
    lambda r: r.record(T0, canary=group(1, p99=-1.0), stable=group(1), canary_percent="10", state="progressing"),
    lambda r: r.record(T0, canary=[1], stable=group(1), canary_percent="10", state="progressing"),
    lambda r: r.record(T0, canary=group(1), stable=group(1), canary_percent="ten", state="progressing"),
    lambda r: r.points(limit=-1),
])
def test_bad_figures_are_refused_with_value_error(tmp_path, call):
    rec = SeriesRecorder(str(tmp_path), "app")
    with pytest.raises(ValueError):
        call(rec)
    assert rec.points() == []


def test_bad_names_and_bounds_are_refused(tmp_path):
    with pytest.raises(BadInputError):
        SeriesRecorder(str(tmp_path), "../etc")
    with pytest.raises(ValueError):
        SeriesRecorder(str(tmp_path), "app", max_points=1)
    with pytest.raises(ValueError):
        SeriesRecorder(str(tmp_path), "app", flush_every=-1)
