"""Webhooks, gates and HTTP checks through the real daemon, against real local HTTP endpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from nginx_canary.daemon.control_socket import call
from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.load import run_load
from nginx_canary.demo.site import DemoSite
from nginx_canary.errors import CanaryError


class Endpoints:
    """One loopback HTTP server: POST /hook records JSON, GET /gate answers gate_status, /health health_status,
    /hang never answers."""

    def __init__(self) -> None:
        self.posts: List[Dict[str, Any]] = []
        self.gate_status = 403
        self.health_status = 200
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/hang":
                    owner.release.wait(30)
                    return
                owner.posts.append(json.loads(body))
                self._answer(200)

            def do_GET(self) -> None:  # noqa: N802
                status = {"/gate": owner.gate_status, "/health": owner.health_status}.get(self.path, 404)
                self._answer(status)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    found = Endpoints()
    yield found
    found.close()


@pytest.fixture
def site(nginx_bin: str, tmp_path: Path) -> Iterator[DemoSite]:
    site = DemoSite(tmp_path, nginx_bin)
    site.write(steps=(10, 100), step_interval="1s")
    apps = [DemoApp("v1", port=site.ports["v1"]), DemoApp("v2", port=site.ports["v2"])]
    for app in apps:
        app.start()
    site.apps = apps  # type: ignore[attr-defined]
    site.start_nginx()
    yield site
    site.stop_nginx()
    site.cleanup()
    for app in apps:
        app.stop()


class Daemon:
    def __init__(self, site: DemoSite, extra_rollout_yaml: str) -> None:
        self.site = site
        site.daemon_config.write_text(site.daemon_config.read_text() + extra_rollout_yaml)
        env = dict(os.environ, PATH="/usr/sbin:" + os.environ.get("PATH", ""))
        self.proc = subprocess.Popen(site.daemon_command(sys.executable), env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                call(site.socket_path, "ping", timeout=5)
                return
            except CanaryError:
                assert time.monotonic() < deadline and self.proc.poll() is None, "the daemon did not start"
                time.sleep(0.1)

    def status(self) -> Dict[str, Any]:
        return call(self.site.socket_path, "status", {"name": "app"})["rollouts"][0]

    def drive(self, until, timeout: float = 40.0) -> Dict[str, Any]:
        """Send load in 1 s slices until ``until(status)`` holds; returns that status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if until(status):
                return status
            assert time.monotonic() < deadline, status
            run_load(self.site.url, rate=150, duration=1.0, max_requests=150, concurrency=4)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_a_step_waits_for_its_gate_and_webhooks_report_the_run(site, endpoints):
    daemon = Daemon(site, f"""\
    webhooks:
      - {endpoints.url("/hook")}
      - {{url: "{endpoints.url("/hang")}", timeout: 1s, retries: 0}}
    gates:
      confirm_step: {endpoints.url("/gate")}
""")
    try:
        call(site.socket_path, "start", {"name": "app"})
        waiting = daemon.drive(lambda s: s["waiting_for_gate"] == "confirm_step" and "answered 403" in s["message"])
        assert waiting["canary_percent"] == 10 and waiting["state"] == "progressing"
        run_load(site.url, rate=150, duration=3.0, max_requests=450, concurrency=4)
        assert daemon.status()["canary_percent"] == 10  # held at the gate, bake time long over
        endpoints.gate_status = 200
        final = daemon.drive(lambda s: s["state"] != "progressing")
        assert final["state"] == "promoted" and final["canary_percent"] == 100
        history = call(site.socket_path, "history", {"name": "app"})["records"]
        gate_records = [r["detail"]["gate_state"] for r in history if r["event"] == "gate"]
        assert gate_records[0] in ("pending", "closed") and gate_records[-1] == "open"
        deadline = time.monotonic() + 15
        while len(endpoints.posts) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        daemon.stop()
    events = [p["event"] for p in endpoints.posts]
    assert events == ["started", "step", "step", "promoted"]
    assert {p["rollout"] for p in endpoints.posts} == {"app"}
    assert [p["canary_percent"] for p in endpoints.posts if p["event"] == "step"] == [10, 100]


def test_a_failing_http_check_rolls_the_canary_back(site, endpoints):
    endpoints.health_status = 500
    text = site.daemon_config.read_text().replace(
        "    analysis:\n", f"    analysis:\n      http_checks: [{endpoints.url('/health')}]\n")
    site.daemon_config.write_text(text)
    daemon = Daemon(site, f"    webhooks: [{endpoints.url('/hook')}]\n")
    try:
        before = site.config_files()
        call(site.socket_path, "start", {"name": "app"})
        final = daemon.drive(lambda s: s["state"] != "progressing", timeout=30)
        assert final["state"] == "rolled_back"
        assert "http_checks" in final["message"] and "500" in final["message"]
        assert site.config_files() == before
        deadline = time.monotonic() + 15
        while "rolled_back" not in [p["event"] for p in endpoints.posts] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        daemon.stop()
    events = [p["event"] for p in endpoints.posts]
    assert events[0] == "started" and "check_failed" in events and events[-1] == "rolled_back"
