"""`nginx-canary replay` as a user runs it: the daemon's YAML, the nginx config, a recorded log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from nginx_canary.logs.format import CANARY_FORMAT
from tests.rollout.test_replay import CANARY, STABLE, synthetic_log

NGINX_CONF = f"""\
events {{}}
http {{
    log_format canary '{CANARY_FORMAT}';
    log_format bare '$upstream_addr $status $request_time';
    access_log {{logs}}/access.log canary;
    upstream backend {{
        server {STABLE} weight=9;
        server {CANARY} weight=1;
    }}
    server {{ listen 127.0.0.1:8080; location / {{ proxy_pass http://backend; }} }}
}}
"""

CONFIG = """\
nginx: {{conf: {conf}}}
state_dir: {state}
rollouts:
  web:
    upstream: backend
    canary: ["{canary}"]
    steps: [10, 50, 100]
    step_interval: 5s
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir()
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.replace("{logs}", str(logs)))
    state = tmp_path / "state"
    (tmp_path / "config.yaml").write_text(CONFIG.format(conf=tmp_path / "nginx.conf", state=state, canary=CANARY))
    return tmp_path


def replay(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NGINX_CANARY_CONFIG=str(site / "config.yaml"))
    return subprocess.run([sys.executable, "-m", "nginx_canary", "replay", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def record(path: Path, lines: List[str]) -> str:
    path.write_text("".join(lines))
    return str(path)


def test_healthy_log_prints_the_timeline_to_promotion(site: Path) -> None:
    log = record(site / "logs" / "access.log", synthetic_log(120, 100, 0.3))
    done = replay(site, log, "--rollout", "web")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("(")[1].split()[0] for line in lines if " step: " in line] == ["10", "50", "100"]
    assert lines[-1].startswith("replay: promoted at step 3/3") and "promoted at +" in lines[-1]
    assert done.stderr == ""
    assert not (site / "state").exists()  # nothing written


def test_json_gives_one_object_per_event_and_a_summary(site: Path) -> None:
    # A copy elsewhere: its format is that of the rollout's own log.
    log = record(site / "copy.log", synthetic_log(30, 100, 0.3, canary_5xx_from=0.0))
    done = replay(site, log, "--rollout", "web", "--json", "--instant")
    assert done.returncode == 0, done.stderr
    objects = [json.loads(line) for line in done.stdout.splitlines()]
    summary = objects[-1]
    assert summary["summary"] is True and summary["state"] == "rolled_back" and summary["step"] == 1
    assert summary["decision"] == "rollback" and summary["decided_at"] <= 3.0
    events = [o["event"] for o in objects[:-1]]
    assert events[:2] == ["start", "step"] and "rollback" in events
    assert {"offset", "time", "state", "step", "verdict", "reason"} <= set(objects[2])


def test_speed_plays_in_log_time(site: Path) -> None:
    log = record(site / "logs" / "access.log", synthetic_log(2, 100, 0.3))
    done = replay(site, log, "--rollout", "web", "--speed", "4")
    assert done.returncode == 0, done.stderr
    assert "undecided when the log ended" in done.stdout.splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["{log}", "--rollout", "nope"], "no rollout 'nope' in"),
    (["{dir}/absent.log", "--rollout", "web"], "cannot read log file"),
    (["{empty}", "--rollout", "web"], "no request with a usable time"),
    (["{log}", "--rollout", "web", "--format", "bare"], "has no $msec, $time_iso8601 or $time_local"),
    (["{log}", "--rollout", "web", "--speed", "0"], "--speed must be a positive number"),
    (["{log}", "--rollout", "web", "--speed", "2", "--instant"], "give --speed or --instant, not both"),
    (["{log}"], "Missing option '--rollout'"),
    (["--rollout", "web"], "Missing argument"),
])
def test_bad_input_is_one_line_and_exit_2(site: Path, args: List[str], message: str) -> None:
    log = record(site / "logs" / "access.log", synthetic_log(3, 100, 0.3))
    empty = record(site / "logs" / "empty.log", [])
    before = sorted(p.name for p in site.rglob("*"))
    done = replay(site, *(a.format(log=log, dir=site, empty=empty) for a in args))
    assert done.returncode == 2
    assert message in done.stderr and done.stdout == ""
    if "Missing" not in message and "not both" not in message:  # click's usage errors show the usage too
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("nginx-canary: error: ")
    assert sorted(p.name for p in site.rglob("*")) == before
