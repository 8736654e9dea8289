"""The rollout CLI's errors and machine-readable output, and set-weight's guard against steering a rollout's upstream."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.daemon.conftest import non_check_events, one_line_error, records

STATUS_KEYS = {"name", "state", "step", "canary_percent", "canary", "stable", "last_check"}


def test_daemon_not_running_exits_3_with_one_line(make_harness):
    h = make_harness(daemon=False)
    for args in (["status"], ["start", "app"], ["promote", "app", "--full"], ["history", "app", "--json"]):
        result = h.cli(*args)
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        line = one_line_error(result)
        assert line.startswith("nginx-canary: error: the nginx-canary daemon is not running "
                               f"(nothing listens on {h.site.socket_path})"), line
    # Nothing was started behind our back.
    assert h.site.config_files() == h.originals
    assert not (h.site.state_dir / "rollouts" / "app.json").exists()


def test_unknown_names_status_json_and_history_json(make_harness):
    h = make_harness(steps=(10, 50, 100), step_interval="1s")
    for args in (["status", "nope"], ["start", "nope"], ["abort", "nope"]):
        result = h.cli(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert one_line_error(result).endswith(f"no rollout named 'nope' in {h.site.daemon_config} (configured: app)")
    bad = h.cli("start", "app", "--steps", "10,abc,100")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr

    idle = json.loads(h.cli("status", "app", "--json").stdout)
    assert STATUS_KEYS <= set(idle)
    assert (idle["name"], idle["state"], idle["step"], idle["canary_percent"], idle["last_check"]) == \
        ("app", "idle", 0, 0, None)
    assert h.site.config_files() == h.originals  # none of the refused commands touched anything

    load = h.load(rate=150)
    started = h.cli("start", "app", "--json", "--step-interval", "60s")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["state"] == "progressing"
    h.wait_status(lambda s: (s["last_check"] or {}).get("verdict") == "pass", "a passing check")
    result = h.cli("status", "app", "--json")
    assert result.returncode == 0 and result.stderr == ""
    status = json.loads(result.stdout)
    assert STATUS_KEYS <= set(status)
    assert (status["name"], status["state"], status["step"], status["canary_percent"]) == ("app", "progressing", 0, 10)
    assert status["canary"]["requests"] >= 10 and status["stable"]["requests"] > status["canary"]["requests"]
    assert status["last_check"]["verdict"] == "pass" and len(status["last_check"]["checks"]) == 5
    everything = json.loads(h.cli("status", "--json").stdout)
    assert isinstance(everything, list) and [s["name"] for s in everything] == ["app"]
    text = h.cli("status", "app").stdout
    assert text.startswith("app  progressing  upstream backend  canary 10 %")
    assert "\n  last check: pass: " in text and "(failures in a row 0/2)" in text

    result = h.cli("history", "app", "--json")
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    parsed = [json.loads(line) for line in lines]
    assert [r["event"] for r in parsed if r["event"] != "check"] == ["start", "step"]
    assert all(r["rollout"] == "app" and {"time", "event", "state", "step", "canary_percent", "detail"} <= set(r)
               for r in parsed)
    assert parsed == [{"rollout": "app", **r} for r in h.history()]  # the file, as the daemon reads it
    assert load.finish().status_5xx == 0


def test_set_weight_on_a_rollout_upstream_is_refused_unless_forced(make_harness):
    h = make_harness(steps=(10, 50, 100), step_interval="1s")
    load = h.load(rate=150)
    h.start_rollout(step_interval=60.0)
    at_step = h.site.config_files()
    assert at_step != h.originals

    # Refused, whichever way the CLI finds the state dir: the nginx options, or the daemon's config.
    for global_options, config in ((h.nginx_options(), False), ([], True)):
        refused = h.cli(*global_options, "set-weight", "backend", "50", "--canary", h.site.v2, config=config)
        assert refused.returncode == 2, (global_options, refused.stdout, refused.stderr)
        assert refused.stdout == ""
        assert one_line_error(refused) == (
            "nginx-canary: error: upstream 'backend' is under rollout 'app' (progressing at 10 %); use "
            "`nginx-canary pause app`, `abort app`, or set-weight --force to pause it first")
        assert h.site.config_files() == at_step
    assert h.status()["state"] == "progressing"
    # A dry run changes nothing and is not refused.
    dry = h.cli("set-weight", "backend", "50", "--canary", h.site.v2, "--dry-run")
    assert dry.returncode == 0 and "dry run" in dry.stdout
    assert h.site.config_files() == at_step

    forced = h.cli("set-weight", "backend", "50", "--canary", h.site.v2, "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr == "nginx-canary: rollout 'app' paused (--force); resume re-applies its step\n"
    assert "reloaded: canary 50 % of upstream backend" in forced.stdout
    status = h.status()
    assert (status["state"], status["step"], status["paused_reason"]) == ("paused", 0, "paused for set-weight --force")
    assert h.site.config_files() != at_step
    share = h.probe(100).versions
    assert share.get("v2", 0) >= 30, share  # 50 %, give or take the round robin's phase
    pause = records(h, "pause")[0]
    assert pause["detail"]["reason"] == "paused for set-weight --force"
    # The rollout was paused before the files changed: its state still names the step's files.
    assert h.saved_state()["expected_files"] != h.file_hashes(list(h.saved_state()["expected_files"]))

    resumed = h.cli("resume", "app")
    assert resumed.returncode == 0, resumed.stderr
    status = h.status()
    assert (status["state"], status["step"], status["canary_percent"]) == ("progressing", 0, 10)
    assert h.site.config_files() == at_step
    h.assert_state_matches_files()
    assert records(h, "resume")[0]["detail"]["changed_outside"] == [str(h.site.upstream_conf)]
    assert non_check_events(h) == ["start", "step", "pause", "resume", "step"]
    seen = load.finish()
    assert seen.status_5xx == 0 and seen.socket_errors == 0, seen.summary()


def test_a_second_daemon_on_the_same_state_dir_is_refused_before_touching_anything(make_harness):
    h = make_harness(steps=(10, 50, 100), step_interval="60s")
    h.start_rollout()
    h.wait_status(lambda s: s["state"] == "progressing" and s["step_started_at"] is not None, "the first step")
    files = h.site.config_files()
    state_file = h.site.state_dir / "rollouts" / "app.json"
    kept = ("state", "step_index", "canary_percent", "snapshot_id", "started_at", "step_started_at", "expected_files")
    state = {k: json.loads(state_file.read_text())[k] for k in kept}  # (the first daemon saves its checks too)
    second = subprocess.run(h.site.daemon_command(sys.executable), capture_output=True, text=True, env=h.env,
                            cwd=str(h.tmp_path), timeout=60)
    assert second.returncode != 0
    line = one_line_error(second)
    assert line.endswith(f"another nginx-canary daemon (pid {h.daemon.pid}) is running on state dir "
                         f"{h.site.state_dir}"), line
    # Refused before any recovery, write or reload: the first daemon's run goes on untouched.
    assert h.site.config_files() == files
    assert {k: json.loads(state_file.read_text())[k] for k in kept} == state
    assert h.daemon.poll() is None and h.status()["state"] == "progressing"
