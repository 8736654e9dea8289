"""The HTML report: parsed as HTML and checked for content, escaping and self-containment, then rendered in
headless Chromium (Debian package ``chromium``; a missing one fails the test) and its screenshot's charts
checked for ink.

The data is realistic: a real :class:`nginx_canary.rollout.machine.Rollout` driven with the fakes of
``tests/rollout/test_machine.py`` through three steps and a rollback, and a series recorded the way the daemon
records it (once per second, by :class:`nginx_canary.report.series.SeriesRecorder`).
"""

from __future__ import annotations

import html.parser
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from nginx_canary.rollout.verdict import FAIL, INCONCLUSIVE, PASS
from nginx_canary.report.bins import MAX_BINS
from nginx_canary.report.charts import CANARY_COLOUR, STABLE_COLOUR, WEIGHT_COLOUR
from nginx_canary.report.html import render_report
from nginx_canary.report.series import SeriesRecorder
from tests.rollout.test_machine import T0, Env

GENERATED = T0 + 3600


# --- a realistic run -------------------------------------------------------------------------


def run_scenario(tmp_path: Path, *, fail_at: Optional[float] = 150, seconds_after: int = 10) -> Env:
    """Start, 20 s of too little canary traffic, steps 10 -> 25 -> 50 %, the canary breaks at ``fail_at`` s:
    two failed checks roll it back. A check every 5 s, a series point every second."""
    env = Env(tmp_path)
    rollout = env.rollout()
    recorder = SeriesRecorder(str(tmp_path / "state"), "app")
    rng = random.Random(5)
    env.traffic.mode = INCONCLUSIVE
    rollout.start(T0)
    recorder.start_run(T0)
    t = T0
    tail = None
    while tail is None or t < tail:
        t += 1
        elapsed = t - T0
        if elapsed == 20:
            env.traffic.mode = PASS
        if fail_at is not None and elapsed == fail_at:
            env.traffic.mode = FAIL
        percent = float(rollout.state.canary_percent)
        total = 40 + rng.randint(-5, 5)
        canary = round(total * percent / 100)
        broken = fail_at is not None and elapsed >= fail_at and rollout.state.state == "progressing"
        canary_errors = canary // 2 if broken else (1 if canary and rng.random() < 0.03 else 0)
        recorder.record(
            t,
            canary={"requests": canary, "errors_5xx": canary_errors,
                    "p99": (0.31 if broken else 0.045 + rng.random() * 0.01) if canary else None},
            stable={"requests": total - canary, "errors_5xx": 1 if rng.random() < 0.02 else 0,
                    "p99": 0.040 + rng.random() * 0.01},
            canary_percent=rollout.state.canary_percent, state=rollout.state.state)
        if elapsed % 5 == 0:
            rollout.tick(t)
        if tail is None and rollout.state.state not in ("progressing", "paused"):
            tail = t + seconds_after
        if elapsed > 3600:
            raise AssertionError("the scenario did not end")
    recorder.flush()
    env.recorder = recorder  # type: ignore[attr-defined]
    return env


@pytest.fixture
def scenario(tmp_path) -> Env:
    return run_scenario(tmp_path)


def report_of(env: Env, **kwargs: Any) -> str:
    return render_report("app", env.store.history("app"), env.recorder.points(), generated_at=GENERATED, **kwargs)


# --- HTML parsing ----------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(html.parser.HTMLParser):
    """Elements (tag, attrs, text inside), checking that every element is closed in order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: List[Tuple[str, Dict[str, str], List[str]]] = []
        self.elements: List[Tuple[str, Dict[str, str], str]] = []
        self.text: List[str] = []
        self.errors: List[str] = []
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {[t for t, _, _ in self.stack]}")

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        if tag in VOID:
            self.elements.append((tag, attributes, ""))
        else:
            self.stack.append((tag, attributes, []))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}, ""))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1][0] if self.stack else 'nothing'}")
            return
        name, attrs, parts = self.stack.pop()
        inner = "".join(parts)
        self.elements.append((name, attrs, inner))
        if self.stack:
            self.stack[-1][2].append(inner)

    def handle_data(self, data):
        self.text.append(data)
        if self.stack:
            self.stack[-1][2].append(data)

    def find(self, tag: str, cls: Optional[str] = None) -> List[Tuple[str, Dict[str, str], str]]:
        return [e for e in self.elements if e[0] == tag and (cls is None or cls in e[1].get("class", "").split())]

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def squash(text: str) -> str:
    return " ".join(text.split())


# --- content ------------------------------------------------------------------------------------------------


def test_report_is_well_formed_and_self_contained(scenario):
    text = report_of(scenario)
    page = Page(text)
    assert page.errors == []
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text and "https://" not in text
    assert not page.find("script") and not page.find("link") and not page.find("img") and not page.find("iframe")
    for tag, attrs, _ in page.elements:
        for name, value in attrs.items():
            assert name not in ("src", "href") and "url(" not in value, (tag, name, value)
    assert "@import" not in text and "url(" not in text
    csp = [a for t, a, _ in page.find("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]
    assert len(page.find("svg", "chart")) == 3


def test_every_check_verdict_is_in_the_report_failed_ones_highlighted_with_reasons(scenario):
    history = scenario.store.history("app")
    checks = [r for r in history if r["event"] == "check"]
    verdicts = [r["detail"]["verdict"]["verdict"] for r in checks]
    assert verdicts.count(FAIL) == 2 and PASS in verdicts and INCONCLUSIVE in verdicts
    page = Page(report_of(scenario))
    rows = page.find("tr", "check")
    assert len(rows) == len(checks)
    for record, (_, attrs, inner) in zip(checks, rows):
        verdict = record["detail"]["verdict"]
        assert verdict["verdict"] in attrs["class"].split()
        assert squash(verdict["reason"]) in squash(inner)
        assert time.strftime("%H:%M:%S", time.localtime(record["time"])) in inner
    failed_rows = page.find("tr", "fail")
    assert len(failed_rows) == 2
    for _, _, inner in failed_rows:
        assert "error_rate:" in inner and "error_rate_increase:" in inner


def test_outcome_says_what_happened_and_why_with_the_time_to_rollback(scenario):
    page = Page(report_of(scenario))
    (_, _, outcome), = [e for e in page.elements if e[0] == "section" and e[1].get("id") == "outcome"]
    outcome = squash(outcome)
    assert "Outcome: rolled back" in outcome
    assert "2 consecutive failed checks (failure_threshold 2)" in outcome
    assert "original files restored (snapshot snap-1)" in outcome
    # The canary broke at +2:30: failed checks at +2:30 and +2:35, rolled back at +2:35.
    assert "rolled back 2 min 35 s after the start" in outcome
    assert "5 s before the rollback" in outcome
    assert "steps 10 % → 25 % → 50 % → 100 %" in page.all_text
    assert "bake time 1 min per step" in page.all_text
    events = [inner for tag, attrs, inner in page.elements if tag == "td"]
    for event in ("start", "step", "rollback", "restored"):
        assert event in events


def test_charts_are_drawn_from_the_series_with_step_markers(scenario):
    text = report_of(scenario)
    page = Page(text)
    paths = page.find("path", "series")
    colours = [attrs["stroke"] for _, attrs, _ in paths]
    assert colours.count(CANARY_COLOUR) == 3 and colours.count(STABLE_COLOUR) == 2 and WEIGHT_COLOUR in colours
    # Steps labelled on the weight chart, thresholds from the checks drawn.
    labels = [inner for _, attrs, inner in page.find("text", "lbl")]
    assert labels == ["10 %", "25 %", "50 %"]
    assert "max_error_rate 5 %" in text and "max_p99_latency 1000 ms" in text


def test_a_long_run_is_downsampled_for_drawing(tmp_path):
    env = Env(tmp_path)
    rollout = env.rollout()
    rollout.start(T0)
    points = [{"time": T0 + i, "canary_percent": 10, "state": "progressing",
               "canary": {"requests": 10, "errors_5xx": i % 7 == 0, "error_rate": 0.1 * (i % 7 == 0), "p99": 0.05},
               "stable": {"requests": 90, "errors_5xx": 0, "error_rate": 0.0, "p99": 0.04}}
              for i in range(1, 20_001)]
    started = time.perf_counter()
    text = render_report("app", env.store.history("app"), points, generated_at=GENERATED)
    assert time.perf_counter() - started < 5
    page = Page(text)
    for _, attrs, _ in page.find("path", "series"):
        assert attrs["d"].count("L") + attrs["d"].count("H") <= MAX_BINS
    assert len(text) < 400_000
    assert "Drawn from 20000 points" in page.all_text


def test_only_the_last_run_is_reported(tmp_path):
    first = run_scenario(tmp_path)
    first.traffic.mode = PASS
    rollout = first.rollout()
    later = T0 + 10_000
    rollout.start(later)
    first.recorder.start_run(later)
    first.recorder.record(later + 1, canary={"requests": 5, "errors_5xx": 0, "p99": 0.01},
                          stable={"requests": 45, "errors_5xx": 0, "p99": 0.01}, canary_percent="10",
                          state="progressing")
    page = Page(report_of(first))
    assert "Outcome: still progressing" in page.all_text
    assert "consecutive failed checks" not in page.all_text
    assert len(page.find("tr", "check")) == 0


def test_runs_of_passing_checks_are_folded(tmp_path):
    env = Env(tmp_path)
    rollout = env.rollout()
    rollout.journal.history_every = 0.0  # record every check
    rollout.start(T0)
    for i in range(1, 40):
        rollout.tick(T0 + 5 * i)
    env.recorder = SeriesRecorder(str(tmp_path / "state"), "app")  # type: ignore[attr-defined]
    page = Page(report_of(env))
    folded = page.find("details", "quiet")
    assert folded and "checks without a failure" in folded[0][2]
    assert len(page.find("tr", "check")) == len([r for r in env.store.history("app") if r["event"] == "check"])
    assert "no traffic series recorded for this run" in page.all_text


def test_every_string_from_the_records_is_escaped(tmp_path):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    history = [
        {"time": T0, "event": "start", "state": "progressing", "step": 0, "canary_percent": "0",
         "detail": {"message": evil, "steps": [evil], "on_success": evil}},
        {"time": T0 + 5, "event": "check", "state": evil, "step": 0, "canary_percent": evil,
         "detail": {"failure_streak": evil, "failure_threshold": 2, "message": evil,
                    "verdict": {"verdict": "fail", "reason": evil, "canary": {"requests": evil}, "stable": {},
                                "checks": [{"name": evil, "verdict": "fail", "reason": evil, "threshold": evil}]}}},
        {"time": T0 + 6, "event": evil, "state": "rolled_back", "canary_percent": "0",
         "detail": {"message": evil, "reason": evil, "error": evil}},
    ]
    points = [{"time": T0 + 1, "canary_percent": evil, "state": evil, "canary": {"requests": evil}, "stable": evil}]
    text = render_report(evil, history, points, generated_at=GENERATED, source=evil)
    page = Page(text)
    assert page.errors == []
    assert "<script" not in text and "<img" not in text
    assert not page.find("script") and not page.find("img")
    assert "&lt;script&gt;" in text


def test_odd_records_and_no_data_do_not_break_the_report(tmp_path):
    text = render_report("app", [], [], generated_at=GENERATED)
    assert "Nothing was recorded for this rollout yet" in text and Page(text).errors == []
    odd = [{"time": None, "event": None}, "not a record", {"event": "check", "detail": "x"},
           {"time": T0, "event": "check", "detail": {"verdict": "fail"}}]
    text = render_report("app", odd, [{"time": "x"}, {"time": T0 + 1}], generated_at=GENERATED)
    assert Page(text).errors == []


# --- the page, byte for byte -------------------------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def utc(monkeypatch):
    """Clock times in the page in UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def golden_points(start: float) -> List[Dict[str, Any]]:
    """A second-by-second series without randomness: the canary's 5xx climb from 150 s on, gaps in its p99."""
    points = []
    for i in range(1, 166):
        percent = 10 if i < 60 else 25 if i < 120 else 50
        canary = 40 * percent // 100
        errors = canary // 2 if i >= 150 else int(i % 37 == 0)
        points.append({"time": start + i, "canary_percent": percent, "state": "progressing",
                       "canary": {"requests": canary, "errors_5xx": errors, "p99": None if i % 23 == 0 else
                                  (0.31 if i >= 150 else 0.045 + (i % 7) / 1000)},
                       "stable": {"requests": 40 - canary, "errors_5xx": int(i % 53 == 0),
                                  "p99": 0.04 + (i % 5) / 1000}})
    return points


def test_the_page_is_byte_for_byte_the_pinned_one(utc):
    """Pins the whole page for a fixed run (a rollback, folded passing checks) and for hostile strings; when the
    page changes on purpose, write the new golden files with ``NGINX_CANARY_WRITE_GOLDEN=1``."""
    history = json.loads((GOLDEN / "run.json").read_text())
    evil = '<script>alert("x")</script>'
    pages = {
        "run.html": render_report("app", history, golden_points(history[0]["time"]), generated_at=GENERATED,
                                  source="the files in /var/lib/nginx-canary/rollouts"),
        "escaped.html": render_report(evil, [dict(r, detail=dict(r["detail"], message=evil, reason=evil))
                                             for r in history[:3]],
                                      [], generated_at=GENERATED, source=evil),
    }
    for name, page in pages.items():
        if os.environ.get("NGINX_CANARY_WRITE_GOLDEN"):
            (GOLDEN / name).write_text(page, encoding="utf-8")
        assert page == (GOLDEN / name).read_text(encoding="utf-8"), name


def test_points_from_before_the_run_are_left_out(scenario):
    stale = {"time": T0 - 500, "canary_percent": 50, "state": "rolled_back",
             "canary": {"requests": 1, "errors_5xx": 1, "error_rate": 1.0, "p99": 9.0}, "stable": {}}
    text = render_report("app", scenario.store.history("app"), [stale] + scenario.recorder.points(),
                         generated_at=GENERATED)
    assert f"{len(scenario.recorder.points())} series points" in text


# --- the CLI, offline, and Chromium ---------------------------------------------------------------------


def decode_png(data: bytes) -> Tuple[int, int, List[bytes], int]:
    """(width, height, rows, bytes per pixel) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    rows: List[bytes] = []
    previous = bytearray(stride)
    offset = 0
    for _ in range(height):
        kind = raw[offset]
        line = bytearray(raw[offset + 1:offset + 1 + stride])
        offset += 1 + stride
        if kind == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous))
        elif kind == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((left + previous[x]) >> 1)) & 0xFF
        elif kind == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b = previous[x]
                c = previous[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows, bpp


_COARSE = bytes(v >> 4 for v in range(256))


def pixels_like(rows: List[bytes], bpp: int, colour: str) -> List[Tuple[int, int]]:
    """Pixels whose channels are each in the same 16-wide band as ``colour``'s (C-speed search per row)."""
    pattern = bytes(int(colour[i:i + 2], 16) >> 4 for i in (1, 3, 5))
    found = []
    for y, row in enumerate(rows):
        coarse = row.translate(_COARSE)
        at = coarse.find(pattern)
        while at >= 0:
            if at % bpp == 0:
                found.append((at // bpp, y))
            at = coarse.find(pattern, at + 1)
    return found


def cli(*args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nginx_canary", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_report_command_reads_the_state_dir_when_the_daemon_is_not_running(scenario, tmp_path):
    state_dir = tmp_path / "state"
    out = tmp_path / "out"
    out.mkdir()
    result = cli("--state-dir", str(state_dir), "--socket", str(tmp_path / "none.sock"), "report", "app", cwd=out)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.parent == out and path.name.startswith("nginx-canary-report-app-") and path.suffix == ".html"
    assert f"report from the files in {state_dir / 'rollouts'} (the daemon is not running)" in result.stderr
    text = path.read_text()
    assert "the daemon is not running" in text and "Outcome: rolled back" in text
    unknown = cli("--state-dir", str(state_dir), "--socket", str(tmp_path / "none.sock"), "report", "other")
    assert unknown.returncode == 2 and "no rollout named 'other'" in unknown.stderr


def test_report_renders_in_headless_chromium_with_charts_that_are_not_blank(scenario, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is missing: install the Debian package `chromium` (make test-tools does)")
    output = tmp_path / "report.html"
    result = cli("--state-dir", str(tmp_path / "state"), "--socket", str(tmp_path / "none.sock"), "report", "app",
                 "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == output
    screenshot = tmp_path / "report.png"
    run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}",
                          "--window-size=1200,1600", output.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert screenshot.exists(), f"chromium wrote no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"
    width, height, rows, bpp = decode_png(screenshot.read_bytes())
    assert (width, height) == (1200, 1600)
    # The series lines: each colour drawn across most of the chart width.
    spans = {}
    for name, colour in (("canary", CANARY_COLOUR), ("stable", STABLE_COLOUR), ("weight", WEIGHT_COLOUR)):
        found = pixels_like(rows, bpp, colour)
        assert len(found) > 200, f"{name}: only {len(found)} pixels of {colour}"
        xs = [x for x, _ in found]
        spans[name] = (min(xs), max(xs), min(y for _, y in found), max(y for _, y in found))
        assert max(xs) - min(xs) > width * 0.6, (name, spans[name])
    # The chart area (where the lines are) is not one flat colour.
    left = min(s[0] for s in spans.values())
    right = max(s[1] for s in spans.values())
    top = min(s[2] for s in spans.values())
    bottom = max(s[3] for s in spans.values())
    assert bottom - top > 300, spans
    colours = set()
    for y in range(top, bottom + 1, 3):
        row = rows[y]
        for x in range(left, right + 1, 3):
            colours.add(row[x * bpp:x * bpp + 3])
    assert len(colours) > 20, f"the chart area holds {len(colours)} colours"


def test_report_command_never_follows_a_symlink_planted_at_its_default_name(scenario, tmp_path):
    # The attack: the default name is predictable to the second; plant a link at the next few seconds' names.
    state_dir = tmp_path / "state"
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    now = int(time.time())
    for second in range(now, now + 30):
        name = f"nginx-canary-report-app-{time.strftime('%Y%m%d-%H%M%S', time.localtime(second))}.html"
        (out / name).symlink_to(victim)
    result = cli("--state-dir", str(state_dir), "--socket", str(tmp_path / "none.sock"), "report", "app", cwd=out)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.parent == out and path.name.endswith("-2.html") and not path.is_symlink()
    assert "Outcome: rolled back" in path.read_text()
    assert victim.read_text() == "precious\n"
    refused = cli("--state-dir", str(state_dir), "--socket", str(tmp_path / "none.sock"), "report", "app",
                  "--output", str(out / name))
    assert refused.returncode == 2 and victim.read_text() == "precious\n"
    assert refused.stderr.strip().splitlines() == [f"nginx-canary: error: {out / name} is a symbolic link: the report is "
                                                   "not written through one (remove it or give another --output)"]
