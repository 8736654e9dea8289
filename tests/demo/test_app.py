"""The demo backend: version, deterministic errors, latency, runtime admin, keep-alive, CLI."""

from __future__ import annotations

import http.client
import json
import math
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from nginx_canary.demo.app import DemoApp
from tests.demo.conftest import admin_post, request

REPO = Path(__file__).resolve().parents[2]


def test_serves_version_in_body_and_header(make_app, connect):
    conn = connect(make_app("v2"))
    status, headers, body = request(conn)
    assert (status, body, headers["x-version"], headers["content-length"]) == (200, b"v2\n", "v2", "3")
    status, headers, body = request(conn, "HEAD", "/any/path?x=1")
    assert (status, body, headers["content-length"]) == (200, b"", "3")


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_error_rate_is_exact(make_app, connect, rate):
    conn = connect(make_app("v2", error_rate=rate))
    statuses = []
    for _ in range(300):
        status, headers, body = request(conn)
        statuses.append(status)
        assert headers["x-version"] == "v2"
        assert body == (b"v2 error\n" if status == 500 else b"v2\n")
    assert statuses.count(500) == math.floor(300 * rate)
    assert statuses.count(200) == 300 - math.floor(300 * rate)


def test_latency_is_added(make_app, connect):
    app = make_app("v1", latency=0.1)
    conn = connect(app)
    started = time.monotonic()
    assert request(conn)[0] == 200
    assert time.monotonic() - started >= 0.1
    app.update(latency=0.05, latency_jitter=0.05)
    for _ in range(3):
        started = time.monotonic()
        request(conn)
        assert time.monotonic() - started >= 0.05


def test_latency_scale_slows_every_answer_which_stays_200(make_app, connect):
    # A p99 equal to the median makes the lognormal part a constant 20 ms: lower bounds hold exactly.
    app = make_app("v1", latency_median=0.02, latency_p99=0.02, seed=3)
    conn = connect(app)

    def timings(n: int) -> list:
        took = []
        for _ in range(n):
            started = time.monotonic()
            assert request(conn)[0] == 200
            took.append(time.monotonic() - started)
        return took

    normal = timings(5)
    status, stats = admin_post(conn, {"latency_scale": 3})
    assert status == 200 and stats["settings"]["latency_scale"] == 3.0
    slow = timings(5)
    assert min(normal) >= 0.02 and statistics.median(normal) < 0.06 <= min(slow)


def test_runtime_update_through_admin(make_app, connect):
    app = make_app("v2")
    conn = connect(app)
    assert [request(conn)[0] for _ in range(10)] == [200] * 10
    status, stats = admin_post(conn, {"error_rate": 1.0, "latency": 0.05, "version": "v2.1"})
    assert status == 200
    assert stats["settings"] == {"version": "v2.1", "error_rate": 1.0, "latency": 0.05,
                                 "latency_jitter": 0.0, "latency_median": 0.0, "latency_p99": 0.0,
                                 "latency_scale": 1.0, "healthy": True}
    started = time.monotonic()
    answers = [request(conn) for _ in range(5)]
    assert time.monotonic() - started >= 5 * 0.05
    assert {(s, h["x-version"], b) for s, h, b in answers} == {(500, "v2.1", b"v2.1 error\n")}

    status, _, raw = request(conn, "GET", "/__admin")
    stats = json.loads(raw)
    assert status == 200
    assert (stats["requests"], stats["responses"]) == (15, {"200": 10, "500": 5})
    assert stats["admin_requests"] == 2 and stats["in_flight"] == 0

    status, stats = admin_post(conn, {"error_rate": 0, "latency": 0, "reset_counters": True})
    assert (status, stats["requests"], stats["responses"]) == (200, 0, {})
    assert request(conn)[0] == 200
    assert app.stats()["responses"] == {"200": 1}


@pytest.mark.parametrize("payload, content_type, expected", [
    ({"error_rate": 1.5}, "application/json", 400),
    ({"latency": -1}, "application/json", 400),
    ({"latency": "slow"}, "application/json", 400),
    ({"latency_scale": 101}, "application/json", 400),
    ({"latency_median": 0.1, "latency_p99": 0.05}, "application/json", 400),
    ({"healthy": 1}, "application/json", 400),
    ({"version": "v 2\r\nX-Evil: 1"}, "application/json", 400),
    ({"colour": "blue"}, "application/json", 400),
    ({"reset_counters": "yes"}, "application/json", 400),
    ([1, 2], "application/json", 400),
    (b"{not json", "application/json", 400),
    ({"error_rate": 1.0}, "text/plain", 415),
])
def test_admin_rejects_bad_updates_and_changes_nothing(make_app, connect, payload, content_type, expected):
    app = make_app("v1", latency=0.0)
    conn = connect(app)
    before = app.settings
    status, answer = admin_post(conn, payload, content_type)
    assert status == expected and answer["error"]
    assert app.settings == before
    assert request(conn)[:1] == (200,)  # the connection is still usable


def test_a_bad_update_is_all_or_nothing(make_app, connect):
    app = make_app("v1")
    status, _ = admin_post(connect(app), {"latency": 0.2, "error_rate": 7})
    assert status == 400 and app.settings.latency == 0.0
    with pytest.raises(ValueError, match="error_rate"):
        app.update(latency=0.2, error_rate=-0.1)
    assert app.settings.latency == 0.0


def test_constructor_validates():
    with pytest.raises(ValueError, match="error_rate"):
        DemoApp("v1", error_rate=2)
    with pytest.raises(ValueError, match="version"):
        DemoApp("")


def test_health_reflects_the_healthy_flag_only(make_app, connect):
    app = make_app("v3", error_rate=1.0, latency=5.0)
    conn = connect(app)
    assert request(conn, "GET", "/health")[::2] == (200, b"ok\n")  # not delayed, not an injected error
    status, _ = admin_post(conn, {"healthy": False})
    assert status == 200
    status, headers, body = request(conn, "GET", "/health")
    assert (status, headers["x-version"], body) == (503, "v3", b"unhealthy\n")
    stats = app.stats()
    assert (stats["health_checks"], stats["requests"]) == (2, 0)


def test_admin_answers_403_to_a_refused_peer_and_changes_nothing(make_app, connect):
    app = make_app("v1", admin_peer_allowed=lambda peer: False)
    conn = connect(app)
    status, answer = admin_post(conn, {"error_rate": 1.0})
    assert status == 403 and "loopback-only" in answer["error"]
    assert request(conn, "GET", "/__admin")[0] == 403
    assert app.settings.error_rate == 0.0
    assert request(conn)[0] == 200


def test_admin_answers_403_to_forwarded_requests(make_app, connect):
    app = make_app("v1")
    status, _, _ = request(connect(app), "POST", "/__admin", b'{"error_rate": 1}',
                           {"Content-Type": "application/json", "X-Forwarded-For": "192.0.2.7"})
    assert status == 403 and app.settings.error_rate == 0.0


def test_stop_closes_kept_alive_connections_and_the_port_is_reusable(make_app, connect):
    app = make_app("v1")
    conn = connect(app)
    request(conn)
    port = app.port
    app.stop()
    with pytest.raises((http.client.HTTPException, OSError)):
        request(conn)
    again = make_app("v1b", port=port)  # SO_REUSEADDR: no TIME_WAIT trouble
    assert request(connect(again))[1]["x-version"] == "v1b"


def test_stop_wakes_a_request_sleeping_out_its_latency(make_app):
    app = make_app("v1", latency=30.0)
    outcome: "queue.Queue[object]" = queue.Queue()

    def slow_request() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=20)
        try:
            outcome.put(request(conn)[0])
        except (OSError, http.client.HTTPException) as exc:
            outcome.put(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=slow_request, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while app.stats()["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    app.stop(timeout=10)
    thread.join(10)
    assert not thread.is_alive()
    assert outcome.get(timeout=1) is not None


def test_ipv6_loopback(make_app, connect):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        app = make_app("v6", host="::1")
    except OSError:
        pytest.skip("cannot bind ::1")
    assert app.url == f"http://[::1]:{app.port}/"
    conn = connect(app)
    assert request(conn)[::2] == (200, b"v6\n")
    status, stats = admin_post(conn, {"latency": 0.01})
    assert status == 200 and stats["settings"]["latency"] == 0.01


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_and_exits_zero_on_signal(signum):
    proc = subprocess.Popen([sys.executable, "-m", "nginx_canary.demo.app", "--port", "0", "--version", "v9",
                             "--error-rate", "0.5", "--latency", "0.01", "--latency-median", "0.002",
                             "--latency-p99", "0.01", "--latency-scale", "2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        ready = lines.get(timeout=20)
        assert "listening on http://127.0.0.1:" in ready, proc.stderr.read() if proc.poll() is not None else ready
        url = ready.split("listening on ", 1)[1].strip()
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert (resp.status, resp.read(), resp.headers["X-Version"]) == (200, b"v9\n", "v9")
        with urllib.request.urlopen(url + "__admin", timeout=10) as resp:
            settings = json.loads(resp.read())["settings"]
        assert (settings["error_rate"], settings["latency_median"], settings["latency_p99"],
                settings["latency_scale"]) == (0.5, 0.002, 0.01, 2.0)
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_cli_rejects_bad_settings():
    proc = subprocess.run([sys.executable, "-m", "nginx_canary.demo.app", "--error-rate", "3"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "error_rate" in proc.stderr


def test_the_daemon_package_does_not_import_the_demo():
    package = REPO / "nginx_canary"
    names = sorted(".".join(("nginx_canary",) + p.relative_to(package).with_suffix("").parts).removesuffix(".__init__")
                   for p in package.rglob("*.py")
                   if "demo" not in p.relative_to(package).parts and p.name != "__main__.py")
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(n for n in sys.modules if n.startswith('nginx_canary.demo')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
