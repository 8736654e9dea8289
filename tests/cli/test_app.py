"""The nginx-canary command as a user runs it, against a real nginx with real traffic."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nginx_canary.statedir import StateDir

INJECTIONS = [
    "x;", "x y", "x{", "x}", "x#", 'x"', "x'", "$x", "x\ny", "x\x01", "x\\", "ｘ", "bаckend", "a" * 300, "",
]


def run(inst, *args: str, env: dict = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "nginx_canary", *inst.cli_args(), *args],
                          capture_output=True, text=True, timeout=60, env=full_env)


def canary_share(counts: dict) -> float:
    return 100.0 * counts.get("v2", 0) / sum(counts.values())


def test_stepped_rollout_splits_real_traffic(nginx):
    """10 -> 25 -> 50 -> 100 -> 0: measured split within 6 points, same master, new workers each time."""
    master = nginx.master().pid
    for percent in (10, 25, 50, 100, 0):
        workers = nginx.workers()
        result = run(nginx, "set-weight", "backend", str(percent), "--canary", nginx.v2)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1].startswith(f"reloaded: canary {percent} % of upstream backend")
        assert nginx.master().pid == master
        assert not set(nginx.workers()) & set(workers)
        measured = canary_share(nginx.count_versions(400))
        assert abs(measured - percent) <= 6, (percent, measured)


def test_only_weight_and_down_bytes_change(nginx):
    before = nginx.upstream_conf.read_text()
    assert run(nginx, "set-weight", "backend", "25", "--canary", nginx.v2).returncode == 0
    after = nginx.upstream_conf.read_text()
    assert after == before.replace(f"server {nginx.v1};", f"server {nginx.v1} weight=3;").replace(
        f"server {nginx.v2} down;", f"server {nginx.v2};")
    assert nginx.conf.read_text().startswith("worker_processes 2;")


def test_output_shows_diff_and_verification(nginx):
    result = run(nginx, "set-weight", "backend", "10", "--canary", nginx.v2)
    assert f"-    server {nginx.v2} down;" in result.stdout
    assert f"+    server {nginx.v2};" in result.stdout
    assert f"+    server {nginx.v1} weight=9;" in result.stdout
    assert f"master {nginx.master().pid}" in result.stdout and " ms" in result.stdout


def test_json_output(nginx):
    result = run(nginx, "set-weight", "backend", "50", "--canary", nginx.v2, "--json")
    data = json.loads(result.stdout)
    assert data["canary_percent"] == 50.0
    assert data["changed_files"] == [str(nginx.upstream_conf)]
    assert data["reload"]["master_pid"] == nginx.master().pid
    assert sorted(data["reload"]["new_workers"]) == nginx.workers()
    assert data["reload"]["milliseconds"] > 0


def test_dry_run_touches_nothing(nginx):
    before = nginx.config_files()
    workers = nginx.workers()
    result = run(nginx, "set-weight", "backend", "10", "--canary", nginx.v2, "--dry-run")
    assert result.returncode == 0
    assert "+    server" in result.stdout and "dry run" in result.stdout
    assert nginx.config_files() == before
    assert nginx.workers() == workers


def test_broken_include_exits_1_and_restores_everything(nginx):
    (nginx.prefix / "conf.d" / "zz-broken.conf").write_text("upstream other {\n  server 127.0.0.1:1 weight=0;\n}\n")
    before = nginx.config_files()
    workers = nginx.workers()
    result = run(nginx, "set-weight", "backend", "50", "--canary", nginx.v2)
    assert result.returncode == 1
    assert "zz-broken.conf:2" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert nginx.config_files() == before
    assert nginx.workers() == workers
    assert nginx.count_versions(20) == {"v1": 20}


@pytest.mark.parametrize("field", ["upstream", "canary", "percent"])
@pytest.mark.parametrize("bad", INJECTIONS)
def test_hostile_input_is_refused_before_any_file_changes(nginx_stopped, field, bad):
    args = {"upstream": "backend", "canary": nginx_stopped.v2, "percent": "10"}
    args[field] = bad
    before = nginx_stopped.config_files()
    result = run(nginx_stopped, "set-weight", args["upstream"], args["percent"], "--canary", args["canary"], "--no-reload")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().count("\n") <= 1 and "Traceback" not in result.stderr
    assert nginx_stopped.config_files() == before
    assert not (nginx_stopped.state_dir / "snapshots").exists()


@pytest.mark.parametrize("args, message", [
    (["set-weight", "nope", "10", "--canary", "127.0.0.1:1"], "no upstream named 'nope'"),
    (["set-weight", "backend", "10", "--canary", "127.0.0.1:1"], "is not a server of upstream 'backend'"),
    (["set-weight", "backend", "101", "--canary", "127.0.0.1:1"], "PERCENT must be"),
    (["set-weight", "backend", "-5", "--canary", "127.0.0.1:1"], "No such option"),
    (["set-weight", "backend", "10"], "Missing option '--canary'"),
])
def test_bad_usage_exits_2(nginx, args, message):
    before = nginx.config_files()
    result = run(nginx, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert nginx.config_files() == before


def test_not_running_exits_3_and_no_reload_writes_and_tests(nginx_stopped):
    before = nginx_stopped.config_files()
    result = run(nginx_stopped, "set-weight", "backend", "10", "--canary", nginx_stopped.v2)
    assert result.returncode == 3
    assert "nginx is not running" in result.stderr
    assert nginx_stopped.config_files() == before
    result = run(nginx_stopped, "set-weight", "backend", "10", "--canary", nginx_stopped.v2, "--no-reload")
    assert result.returncode == 0, result.stderr
    assert "not reloaded" in result.stdout
    assert "weight=9" in nginx_stopped.upstream_conf.read_text()


def test_second_writer_exits_4(nginx):
    before = nginx.config_files()
    with StateDir(str(nginx.state_dir)).writer_lock():
        result = run(nginx, "set-weight", "backend", "10", "--canary", nginx.v2)
    assert result.returncode == 4
    assert "busy" in result.stderr
    assert nginx.config_files() == before


def test_same_split_twice_changes_nothing(nginx):
    assert run(nginx, "set-weight", "backend", "25", "--canary", nginx.v2).returncode == 0
    workers = nginx.workers()
    result = run(nginx, "set-weight", "backend", "25", "--canary", nginx.v2)
    assert result.returncode == 0 and "nothing to change" in result.stdout
    assert nginx.workers() == workers


def test_upstreams_lists_servers_with_shares(nginx):
    assert run(nginx, "set-weight", "backend", "25", "--canary", nginx.v2).returncode == 0
    data = json.loads(run(nginx, "upstreams", "--json").stdout)
    (backend,) = data["upstreams"]
    assert (backend["name"], backend["file"], backend["line"]) == ("backend", str(nginx.upstream_conf), 2)
    servers = {s["address"]: s for s in backend["servers"]}
    assert servers[nginx.v1]["weight"] == 3 and servers[nginx.v1]["share_percent"] == 75.0
    assert servers[nginx.v2]["share_percent"] == 25.0 and servers[nginx.v2]["line"] == 4
    text = run(nginx, "upstreams").stdout
    assert f"upstream backend  ({nginx.upstream_conf}:2)" in text and "75%" in text


def test_validate(nginx):
    before = nginx.config_files()
    result = run(nginx, "validate", "backend", "33.33", "--canary", nginx.v2)
    assert result.returncode == 0, result.stderr
    assert "nginx -t ok" in result.stdout and f"master {nginx.master().pid}" in result.stdout
    assert "canary 33.33 %" in result.stdout
    assert nginx.config_files() == before


def test_validate_reports_broken_config_and_stopped_nginx(nginx_stopped):
    assert run(nginx_stopped, "validate").returncode == 3
    assert run(nginx_stopped, "validate", "--offline").returncode == 0
    (nginx_stopped.prefix / "conf.d" / "bad.conf").write_text("nonsense;\n")
    result = run(nginx_stopped, "validate", "--offline")
    assert result.returncode == 1 and 'unknown directive "nonsense"' in result.stderr


def test_environment_variables_configure_the_tool(nginx):
    env = {"NGINX_CANARY_NGINX_CONF": str(nginx.conf), "NGINX_CANARY_NGINX_PREFIX": str(nginx.prefix),
           "NGINX_CANARY_STATE_DIR": str(nginx.state_dir), "NGINX_CANARY_NGINX_BIN": nginx.binary}
    result = subprocess.run([sys.executable, "-m", "nginx_canary", "set-weight", "backend", "10", "--canary", nginx.v2],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, **env))
    assert result.returncode == 0, result.stderr
    assert "weight=9" in nginx.upstream_conf.read_text()


def test_traceback_only_with_debug(nginx_stopped):
    (nginx_stopped.prefix / "conf.d" / "bad.conf").write_text("upstream x {\n")
    plain = run(nginx_stopped, "upstreams")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    debug = run(nginx_stopped, "--debug", "upstreams")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_help_documents_exit_codes():
    result = subprocess.run([sys.executable, "-m", "nginx_canary", "set-weight", "--help"], capture_output=True, text=True)
    for line in ("0  ok", "2  bad usage", "3  nginx is not running", "4  another nginx-canary holds the lock"):
        assert line in result.stdout


def test_nginx_messages_reach_the_terminal_without_control_characters(nginx):
    """A file name with an escape sequence, quoted by `nginx -t`, is shown escaped."""
    before = nginx.config_files()
    name = "x\x1b]0;owned\x07\x1b[2J.conf"
    (nginx.prefix / "conf.d" / name).write_text("upstream broken {\n  server 127.0.0.1:1 weight=0;\n}\n")
    result = run(nginx, "set-weight", "backend", "10", "--canary", nginx.v2)
    (nginx.prefix / "conf.d" / name).unlink()
    assert result.returncode != 0
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr, result.stderr
    assert "x\\x1b]0;owned\\x07\\x1b[2J.conf" in result.stderr and len(result.stderr.splitlines()) == 1
    assert nginx.config_files() == before
