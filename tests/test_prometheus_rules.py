"""The shipped Prometheus alert rules: valid for promtool, each alert unit-tested, and written against real metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Set

import pytest
import yaml

from nginx_canary.rollout.verdict import FAIL
from nginx_canary.logs.window import Stats
from nginx_canary.integrations.metrics import DaemonMetrics

RULES_DIR = Path(__file__).resolve().parent.parent / "conf.d" / "prometheus"
RULES = RULES_DIR / "nginx-canary-rules.yml"
RULES_TEST = RULES_DIR / "nginx-canary-rules.test.yml"
ALERTS = {"NginxCanaryHighErrorRate", "NginxCanaryRolledBack", "NginxCanaryRestoreFailed", "NginxCanaryDaemonDown",
          "NginxCanaryDaemonAbsent", "NginxCanaryUnparsedLogLines"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing (Debian package prometheus): run `make test-tools`, "
                    "or `sudo apt-get install -y prometheus`")
    return found


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120)


def alerts_in(path: Path) -> Set[str]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {rule["alert"] for group in data["groups"] for rule in group["rules"] if "alert" in rule}


def test_promtool_check_rules_is_clean():
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_promtool_unit_tests_of_every_alert_pass():
    result = run("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing():
    assert alerts_in(RULES) == ALERTS
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [RULES.name]
    firing: Set[str] = set()
    quiet: Set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == ALERTS
    assert quiet == ALERTS


def test_a_broken_unit_test_is_caught(tmp_path):
    """The unit tests have teeth: a 2 % threshold instead of 5 % fails them."""
    rules = RULES.read_text(encoding="utf-8")
    assert rules.count("> 0.05") == 1
    (tmp_path / RULES.name).write_text(rules.replace("> 0.05", "> 0.02"), encoding="utf-8")
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = subprocess.run([promtool(), "test", "rules", RULES_TEST.name], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "NginxCanaryHighErrorRate" in result.stdout + result.stderr


def test_the_rules_use_only_metrics_the_daemon_exports():
    metrics = DaemonMetrics()
    canary = Stats()
    canary.add(200, 0.01)
    canary.add(502, 0.01)
    metrics.update_rollout("app", state="failed", canary_percent=10, canary=canary, stable=Stats())
    metrics.listener("app")("check", {"detail": {"verdict": {"verdict": FAIL, "checks": [
        {"name": "error_rate", "verdict": FAIL}]}}})
    metrics.set_log_lines(10, 1)
    exported = set(re.findall(r"^(nginx_canary_\w+)[{ ]", metrics.render().decode(), re.MULTILINE))
    used = set(re.findall(r"\bnginx_canary_\w+", RULES.read_text(encoding="utf-8")))
    assert used, "the rules name no nginx-canary metric"
    assert used <= exported, used - exported
    text = metrics.render().decode()
    # The label values the rules select on exist.
    for needle in ('group="canary"', 'code="5xx"', 'state="failed"', 'result="unparsed"'):
        assert needle in text, needle
