"""Replaying a rollout over synthetic recorded logs: the real state machine on the log's clock, no nginx."""

from __future__ import annotations

import gzip
import random
import time
from fractions import Fraction
from pathlib import Path
from typing import List, Optional

import pytest

from nginx_canary.config.model import AnalysisSettings, GateSettings, RolloutSettings
from nginx_canary.errors import BadInputError
from nginx_canary.logs.format import CANARY_FORMAT, FormatSpec
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.model import NginxConfig
from nginx_canary.rollout.replay import ReplayEvent, replay
from nginx_canary.rollout.replay_inputs import SimulatedApplier, parse_stamp

T0 = 1_700_000_000.0
STABLE, CANARY = "127.0.0.1:8081", "127.0.0.1:8082"
SPEC = FormatSpec("canary", CANARY_FORMAT)

NGINX_CONF = f"""\
events {{}}
http {{
    upstream backend {{
        server {STABLE} weight=9;
        server {CANARY} weight=1;
    }}
    server {{ listen 127.0.0.1:8080; location / {{ proxy_pass http://backend; }} }}
}}
"""


def canary_line(at: float, addr: str, status: int, seconds: float = 0.012) -> str:
    """One line in the shipped canary format."""
    return "\t".join([f"{at:.3f}", addr, str(status), str(status), f"{seconds:.3f}", f"{seconds:.3f}",
                      "10.0.0.1", "GET", "example.test", "/", "0.001", "abc", "backend"]) + "\n"


def synthetic_log(seconds: float, rate: float, canary_share: float, canary_5xx_from: Optional[float] = None,
                  seed: int = 1) -> List[str]:
    """``rate`` req/s for ``seconds``; the canary answers 500 from ``canary_5xx_from`` seconds on (never if None)."""
    rng = random.Random(seed)
    lines = []
    for i in range(int(seconds * rate)):
        at = T0 + i / rate
        canary = rng.random() < canary_share
        failing = canary and canary_5xx_from is not None and at - T0 >= canary_5xx_from
        lines.append(canary_line(at, CANARY if canary else STABLE, 500 if failing else 200,
                                 rng.uniform(0.005, 0.030)))
    return lines


@pytest.fixture
def config(tmp_path: Path) -> NginxConfig:
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF)
    return load_config(str(conf), save_cache=False)


def rollout(**analysis: object) -> RolloutSettings:
    return RolloutSettings(name="web", upstream="backend", canary=(CANARY,),
                           steps=(Fraction(10), Fraction(50), Fraction(100)), step_interval=5.0,
                           analysis=AnalysisSettings(**analysis))  # type: ignore[arg-type]


def write(tmp_path: Path, lines: List[str], name: str = "access.log") -> str:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.writelines(lines)
    else:
        path.write_text("".join(lines))
    return str(path)


def test_healthy_canary_is_promoted_through_every_step(tmp_path: Path, config: NginxConfig) -> None:
    path = write(tmp_path, synthetic_log(120, 100, 0.3))
    events: List[ReplayEvent] = []
    result = replay(rollout(), config, SPEC, [path], emit=events.append)
    assert (result.state, result.step, result.decision) == ("promoted", 3, "promoted")
    steps = [e for e in events if e.event == "step"]
    assert [e.canary_percent for e in steps] == ["10", "50", "100"]
    # Each step waits at least its bake time of 5 s (and for the judge's evidence) before the next.
    taken = [e.offset for e in steps] + [result.decided_at]
    assert all(later - earlier >= 5.0 for earlier, later in zip(taken, taken[1:]))
    assert result.events == events and 0 < result.lines < 12000 and result.unstamped == 0
    assert events[-1].event == "promoted" and events[-1].offset == result.decided_at


def test_canary_failing_from_the_start_is_rolled_back_when_its_failures_begin(tmp_path: Path,
                                                                                config: NginxConfig) -> None:
    path = write(tmp_path, synthetic_log(60, 100, 0.3, canary_5xx_from=0.0))
    result = replay(rollout(), config, SPEC, [path])
    assert (result.state, result.step, result.decision) == ("rolled_back", 1, "rollback")
    # A handful of canary requests (30 req/s), then at most failure_threshold checks 1 s apart.
    assert result.decided_at is not None and result.decided_at <= 1.0 + rollout().analysis.failure_threshold
    rollback = next(e for e in result.events if e.event == "rollback")
    assert "error_rate" in rollback.reason and rollback.state == "rolled_back"


def test_canary_failing_later_is_rolled_back_at_about_that_time(tmp_path: Path, config: NginxConfig) -> None:
    path = write(tmp_path, synthetic_log(60, 100, 0.3, canary_5xx_from=7.0))
    result = replay(rollout(), config, SPEC, [path])
    assert result.decision == "rollback" and result.decided_at is not None and 7.0 <= result.decided_at <= 10.0


def test_log_ending_before_a_decision_leaves_the_run_undecided(tmp_path: Path, config: NginxConfig) -> None:
    path = write(tmp_path, synthetic_log(7, 100, 0.3))
    result = replay(rollout(), config, SPEC, [path])
    assert result.state == "progressing" and result.decision is None and result.decided_at is None
    assert "undecided" in result.line()


def test_several_files_are_merged_by_time_and_gzip_is_read(tmp_path: Path, config: NginxConfig) -> None:
    lines = synthetic_log(120, 100, 0.3)
    first = write(tmp_path, lines[1::2], "access.log.1.gz")
    second = write(tmp_path, lines[::2], "access.log")
    whole = replay(rollout(), config, SPEC, [write(tmp_path, lines, "whole.log")])
    result = replay(rollout(), config, SPEC, [second, first])
    assert (result.state, result.lines, result.decided_at) == ("promoted", whole.lines, whole.decided_at)


def test_time_local_drives_the_clock_when_there_is_no_msec(tmp_path: Path, config: NginxConfig) -> None:
    spec = FormatSpec("local", "[$time_local] $upstream_addr $status $request_time")
    lines = []
    for i in range(12000):
        at = T0 + i / 100
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(at))
        lines.append(f"[{stamp}] {CANARY if i % 3 == 0 else STABLE} 200 0.010\n")
    result = replay(rollout(), config, spec, [write(tmp_path, lines)])
    assert result.state == "promoted" and result.log_start == T0


def test_speed_paces_the_replay_on_log_time(tmp_path: Path, config: NginxConfig) -> None:
    path = write(tmp_path, synthetic_log(4, 100, 0.3))
    slept: List[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    replay(rollout(), config, SPEC, [path], speed=2.0, sleep=sleep, clock=lambda: now[0])
    assert now[0] == pytest.approx(2.0, abs=0.6)  # 4 s of log at twice real time


def test_parse_stamp() -> None:
    assert parse_stamp("msec", "1700000000.123") == pytest.approx(1700000000.123)
    assert parse_stamp("time_local", "14/Nov/2023:22:13:20 +0000") == T0
    assert parse_stamp("time_local", "14/Nov/2023:23:13:20 +0100") == T0
    assert parse_stamp("time_iso8601", "2023-11-14T22:13:20+00:00") == T0
    for name, junk in (("msec", "nan"), ("msec", "-"), ("time_local", "14/Foo/2023:22:13:20 +0000"),
                       ("time_iso8601", "yesterday")):
        assert parse_stamp(name, junk) is None


def test_simulated_applier_changes_nothing_but_its_pretend_file() -> None:
    applier = SimulatedApplier("backend")
    snapshot = applier.begin("web")
    before = applier.files_now()
    assert applier.plan(Fraction(10)) == applier.apply(Fraction(10)) == applier.files_now() != before
    assert applier.restore(snapshot) == before == applier.snapshot_files(snapshot)


@pytest.mark.parametrize("content, spec, message", [
    (None, SPEC, "cannot read log file"),
    ("", SPEC, "no request with a usable time"),
    ("garbage\n", SPEC, "no request with a usable time"),
    (canary_line(T0, STABLE, 200), FormatSpec("plain", "$upstream_addr $status $request_time"),
     "has no $msec, $time_iso8601 or $time_local"),
])
def test_bad_input_is_one_clear_error(tmp_path: Path, config: NginxConfig, content: Optional[str],
                                      spec: FormatSpec, message: str) -> None:
    path = tmp_path / "access.log"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInputError, match=message.replace("$", r"\$")):
        replay(rollout(), config, spec, [str(path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["nginx.conf"] + (["access.log"] if content is not None else []))


def test_not_gzip_is_refused(tmp_path: Path, config: NginxConfig) -> None:
    bogus = tmp_path / "access.log.gz"
    bogus.write_text("plain text\n")
    with pytest.raises(BadInputError, match="not a gzip file"):
        replay(rollout(), config, SPEC, [str(bogus)])


def test_warns_of_what_it_cannot_replay(tmp_path: Path, config: NginxConfig) -> None:
    settings = RolloutSettings(name="web", upstream="backend", canary=(CANARY,), step_interval=5.0,
                               gates=GateSettings(pre_rollout="https://gate.test/ok"))
    result = replay(settings, config, SPEC, [write(tmp_path, synthetic_log(3, 100, 0.3))])
    assert any("pre_rollout" in w for w in result.warnings)
