"""The load generator: exact counts, bounds, loopback-only, keep-alive; and one run through a real nginx."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from nginx_canary.demo.app import DemoApp
from nginx_canary.demo.load import LoadResult, parse_loopback_url, run_load
from nginx_canary.demo.nginx_harness import PrivateNginx, free_port

REPO = Path(__file__).resolve().parents[2]


def test_counts_match_the_apps_own_counters_exactly(make_app):
    app = make_app("v2", error_rate=0.3)
    result = run_load(app.url, rate=0, duration=60, max_requests=300, concurrency=4, timeout=10)
    stats = app.stats()
    assert result.stopped_by == "max_requests"
    assert result.requests == result.responses == stats["requests"] == 300
    assert result.status_5xx == stats["responses"]["500"] == 90
    assert result.status_2xx == stats["responses"]["200"] == 210
    assert (result.status_3xx, result.status_4xx, result.status_other, result.socket_errors) == (0, 0, 0, 0)
    assert result.statuses == {200: 210, 500: 90}
    assert result.versions == {"v2": 300} and result.versions_5xx == {"v2": 90}
    assert result.connections == stats["connections_total"] == 4  # one persistent connection per worker
    assert len(result.latencies) == 300 and result.latencies == sorted(result.latencies)


def test_split_between_two_apps_is_counted_by_version(make_app):
    v1, v2 = make_app("v1"), make_app("v2", error_rate=1.0)
    first = run_load(v1.url, max_requests=40, concurrency=2)
    second = run_load(v2.url, max_requests=10, concurrency=2)
    assert (first.versions, first.versions_5xx) == ({"v1": 40}, {})
    assert (second.versions, second.versions_5xx, second.status_5xx) == ({"v2": 10}, {"v2": 10}, 10)
    assert first.share("v1") == 1.0 and first.share("v2") == 0.0


def test_bounded_by_max_requests(make_app):
    app = make_app("v1")
    result = run_load(app.url, rate=0, duration=60, max_requests=50, concurrency=8)
    assert result.stopped_by == "max_requests"
    assert result.requests == 50 == app.stats()["requests"]


def test_bounded_by_duration_on_a_schedule(make_app):
    app = make_app("v1")
    result = run_load(app.url, rate=20, duration=0.5, max_requests=10**6, concurrency=2)
    assert result.stopped_by == "duration"
    assert 1 <= result.requests <= 10  # slots are due at 0, 0.05, ..., 0.45 s
    assert result.requests == app.stats()["requests"]


def test_bounded_by_duration_flat_out(make_app):
    app = make_app("v1", latency=0.02)
    result = run_load(app.url, rate=0, duration=0.3, max_requests=10**6, concurrency=2)
    assert result.stopped_by == "duration"
    assert 1 <= result.requests < 10**6
    assert result.percentile(0.5) >= 0.02


def test_stop_event_ends_the_run_early(make_app):
    app = make_app("v1", latency=0.01)
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        result = run_load(app.url, rate=0, duration=60, max_requests=10**6, concurrency=2, stop_event=stop)
    finally:
        timer.cancel()
    assert result.stopped_by == "stop_event"
    assert result.requests == result.responses == app.stats()["requests"]


def test_stop_event_interrupts_a_paced_wait(make_app):
    app = make_app("v1")
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        result = run_load(app.url, rate=0.5, duration=60, max_requests=100, concurrency=1, stop_event=stop)
    finally:
        timer.cancel()
    assert result.stopped_by == "stop_event" and result.requests == 1


@pytest.mark.parametrize("url", [
    "http://10.1.2.3/", "http://192.0.2.2:8080/", "http://example.com/", "http://[2001:db8::1]/",
    "http://[::ffff:10.0.0.1]/", "http://0.0.0.0:80/", "https://127.0.0.1/", "ftp://127.0.0.1/",
    "http:///nohost", "http://127.0.0.1:99999/",
])
def test_refuses_non_loopback_or_bad_urls(url):
    with pytest.raises(ValueError):
        run_load(url, max_requests=1)


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:8080/a?b=1", ("127.0.0.1", 8080, "/a?b=1")),
    ("http://127.9.9.9", ("127.9.9.9", 80, "/")),
    ("http://[::1]:81/x", ("::1", 81, "/x")),
    ("http://localhost:82/", ("localhost", 82, "/")),
])
def test_accepts_loopback_urls(url, expected):
    assert parse_loopback_url(url) == expected


@pytest.mark.parametrize("kwargs", [
    {"rate": -1}, {"rate": float("inf")}, {"duration": 0}, {"timeout": 0}, {"max_requests": 0},
    {"max_requests": 1.5}, {"concurrency": 0}, {"concurrency": 10_000}, {"concurrency": True},
])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        run_load("http://127.0.0.1:1/", **kwargs)


def test_socket_errors_are_counted_by_kind():
    result = run_load(f"http://127.0.0.1:{free_port()}/", max_requests=5, concurrency=1, timeout=2)
    assert (result.requests, result.responses, result.socket_errors) == (5, 0, 5)
    assert result.error_kinds == {"ConnectionRefusedError": 5}
    assert result.percentile(0.5) is None and result.rate == 0.0


class _ClosingHandler(http.server.BaseHTTPRequestHandler):
    """Answers "plain" with no X-Version header, then drops the connection without saying so."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"plain\n")
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def closing_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ClosingHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_dropped_keep_alive_connections_are_retried_and_body_names_the_version(closing_server):
    result = run_load(closing_server, max_requests=20, concurrency=1)
    assert (result.responses, result.socket_errors) == (20, 0)
    assert result.versions == {"plain": 20}
    assert result.retries >= 1 and result.connections == 20


def test_result_percentiles_summary_and_json():
    result = LoadResult("http://127.0.0.1:1/", requests=4, responses=4, status_2xx=3, status_5xx=1,
                        versions={"v1": 2, "v2": 2}, versions_5xx={"v2": 1}, elapsed=2.0,
                        stopped_by="max_requests", latencies=[0.001, 0.002, 0.003, 0.010])
    assert [result.percentile(q) for q in (0.0, 0.25, 0.5, 0.75, 0.99, 1.0)] == \
        [0.001, 0.001, 0.002, 0.003, 0.010, 0.010]
    assert result.rate == 2.0 and result.share("v2") == 0.5
    text = result.summary()
    assert "4 requests" in text and "v2 2 (50.0%)" in text and "p99 10.0" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["latency"]["max"] == 0.010 and "latencies" not in data
    with pytest.raises(ValueError):
        result.percentile(1.5)


def test_cli_prints_a_summary_and_json(make_app):
    app = make_app("v5", error_rate=0.5)
    cmd = [sys.executable, "-m", "nginx_canary.demo.load", app.url, "--rate", "0", "--duration", "30",
           "--max-requests", "20", "--concurrency", "2"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "20 requests" in out.stdout and "5xx by version: v5 10 (50.0%)" in out.stdout
    out = subprocess.run(cmd + ["--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["versions"] == {"v5": 20}
    out = subprocess.run([sys.executable, "-m", "nginx_canary.demo.load", "http://192.0.2.2/"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "non-loopback" in out.stderr


# -- through a real nginx ----------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream app {{
        server 127.0.0.1:{v1};
        server 127.0.0.1:{v2};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{front};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""


@pytest.fixture
def nginx_two_apps(nginx_bin: str, tmp_path: Path) -> Iterator[Tuple[str, DemoApp, DemoApp]]:
    """nginx on a free port balancing round-robin over DemoApps v1 and v2 with keep-alive upstreams."""
    v1, v2 = DemoApp("v1"), DemoApp("v2")
    v1.start()
    v2.start()
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    (prefix / "tmp").mkdir()
    for d in (tmp_path, prefix, prefix / "logs", prefix / "tmp"):
        d.chmod(0o755)
    front = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, v1=v1.port, v2=v2.port, front=front))
    nginx = PrivateNginx(nginx_bin, prefix, {"front": front})
    try:
        nginx.start()
        yield f"http://127.0.0.1:{front}/", v1, v2
    finally:
        nginx.stop()
        v1.stop()
        v2.stop()


@pytest.mark.nginx
def test_through_nginx_both_versions_answer_about_half(nginx_two_apps):
    url, v1, v2 = nginx_two_apps
    run_load(url, max_requests=20, concurrency=4)  # warm up: workers and upstream connections
    v1.reset_counters()
    v2.reset_counters()
    result = run_load(url, rate=0, duration=60, max_requests=600, concurrency=8, timeout=10)
    print(f"\nthrough nginx: {result.rate:.0f} req/s (concurrency 8, keep-alive upstreams)\n{result.summary()}")
    assert (result.responses, result.status_2xx, result.socket_errors) == (600, 600, 0)
    assert set(result.versions) == {"v1", "v2"}
    assert 0.4 <= result.share("v1") <= 0.6
    assert v1.stats()["requests"] + v2.stats()["requests"] == 600
    assert v1.stats()["responses"] == {"200": result.versions["v1"]}
    # The proxy's peer address is loopback; Host and X-Forwarded-For still keep the admin endpoint shut.
    admin = run_load(url + "__admin", max_requests=2, concurrency=1)
    assert admin.statuses == {403: 2}
