"""The daemon's /metrics on a real run: a canary answering 5xx is rolled back, and the metrics say so."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Tuple

from prometheus_client.parser import text_string_to_metric_families

from nginx_canary.daemon.control_socket import call
from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.load import run_load
from nginx_canary.demo.nginx_harness import free_port
from nginx_canary.demo.site import DemoSite
from nginx_canary.errors import CanaryError

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_follow_a_rollback(nginx_bin: str, tmp_path: Path):
    site = DemoSite(tmp_path, nginx_bin)
    site.write(steps=(10, 100), step_interval="30s")
    port = free_port()
    site.daemon_config.write_text(site.daemon_config.read_text() + f"metrics_listen: 127.0.0.1:{port}\n")
    v1 = DemoApp("v1", port=site.ports["v1"])
    v2 = DemoApp("v2", port=site.ports["v2"], error_rate=1.0)
    for app in (v1, v2):
        app.start()
    site.start_nginx()
    env = dict(os.environ, PATH="/usr/sbin:" + os.environ.get("PATH", ""))
    daemon = subprocess.Popen(site.daemon_command(sys.executable), env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                url = call(site.socket_path, "ping", timeout=5)["metrics"]
                break
            except CanaryError:
                assert time.monotonic() < deadline and daemon.poll() is None
                time.sleep(0.1)
        assert url == f"http://127.0.0.1:{port}/metrics"
        before = scrape(url)
        assert value(before, "nginx_canary_rollout_state", rollout="app", state="idle") == 1
        assert value(before, "nginx_canary_rollbacks_total", rollout="app") == 0
        call(site.socket_path, "start", {"name": "app"})
        state = "progressing"
        deadline = time.monotonic() + 40
        while state == "progressing" and time.monotonic() < deadline:
            run_load(site.url, rate=200, duration=1.0, max_requests=200, concurrency=4)
            state = call(site.socket_path, "status", {"name": "app"})["rollouts"][0]["state"]
        assert state == "rolled_back"
        time.sleep(1.5)  # the loop hands the metrics fresh copies once a second
        after = scrape(url)
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
        site.stop_nginx()
        site.cleanup()
        for app in (v1, v2):
            app.stop()
    assert value(after, "nginx_canary_rollout_state", rollout="app", state="rolled_back") == 1
    assert value(after, "nginx_canary_rollout_state", rollout="app", state="progressing") == 0
    assert value(after, "nginx_canary_rollbacks_total", rollout="app") == 1
    assert value(after, "nginx_canary_check_failures_total", rollout="app", check="error_rate") >= 2
    assert value(after, "nginx_canary_canary_weight_percent", rollout="app") == 0
    canary_5xx = value(after, "nginx_canary_upstream_requests_total", rollout="app", group="canary", code="5xx")
    stable_2xx = value(after, "nginx_canary_upstream_requests_total", rollout="app", group="stable", code="2xx")
    assert canary_5xx > 0 and stable_2xx > 0
    assert value(after, "nginx_canary_upstream_requests_total", rollout="app", group="canary", code="2xx") == 0
    assert value(after, "nginx_canary_upstream_response_seconds_count", rollout="app", group="stable") > 0
    assert value(after, "nginx_canary_reload_seconds_count") >= 2  # the first step and the restore
    assert value(after, "nginx_canary_log_lines_total", result="parsed") >= canary_5xx + stable_2xx
