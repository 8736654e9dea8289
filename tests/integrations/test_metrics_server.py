"""The metrics endpoint over real HTTP: paths, addresses, errors, bounds, and prometheus_client's negotiation."""

from __future__ import annotations

import gzip
import socket
import threading
import urllib.error
import urllib.request

import pytest

from nginx_canary.daemon.bounded_server import Limits
from nginx_canary.errors import CanaryError
from nginx_canary.integrations.metrics_server import MetricsError, MetricsServer, split_listen
from nginx_canary.logs.window import Stats
from tests.integrations.test_metrics import scrape
from tests.peers import trickle


def test_paths_other_than_metrics(metrics, served):
    base = served.url[: -len("/metrics")]
    with urllib.request.urlopen(base + "/", timeout=10) as response:
        assert b"/metrics" in response.read()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(base + "/nope", timeout=10)
    assert caught.value.code == 404


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
def test_a_bracketed_ipv6_address(metrics):
    metrics.update_rollout("app", state="idle", canary_percent=0, canary=Stats(), stable=Stats())
    with metrics.serve("[::1]:0") as server:
        assert server.port > 0 and server.url == f"http://[::1]:{server.port}/metrics"
        assert scrape(server.url).value("nginx_canary_rollout_state", rollout="app", state="idle") == 1


def test_an_address_in_use_is_one_line_naming_it(metrics):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError) as caught:
            metrics.serve(f"127.0.0.1:{port}")
    message = str(caught.value)
    assert isinstance(caught.value, CanaryError)
    assert message == f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    assert "\n" not in message


def test_an_unknown_host_is_one_line_naming_it(metrics):
    with pytest.raises(MetricsError, match=r"^cannot serve metrics on no-such-host\.invalid:9145: ") as caught:
        metrics.serve("no-such-host.invalid:9145")
    assert "\n" not in str(caught.value)


def test_close_frees_the_port_and_is_idempotent(metrics):
    server = metrics.serve("127.0.0.1:0")
    port = server.port
    scrape(server.url)
    server.close()
    server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=5)
    again = metrics.serve(f"127.0.0.1:{port}")  # the port can be bound again at once
    again.close()


def raw_http(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        reply = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return reply
            reply += chunk


def test_content_negotiation_and_compression_are_prometheus_client_s(metrics, served):
    request = urllib.request.Request(served.url, headers={"Accept": "application/openmetrics-text; version=1.0.0",
                                                          "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(response.read())
    assert body.rstrip().endswith(b"# EOF")


def test_bad_requests_get_an_http_error(metrics, served):
    assert raw_http(served.port, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_http(served.port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw_http(served.port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000).startswith(b"HTTP/1.1 431 ")


def test_a_trickling_client_is_cut_off_at_the_total_deadline(metrics):
    with MetricsServer("127.0.0.1:0", metrics.registry, limits=Limits(request_deadline=0.5)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
            # A byte every 0.1 s: at most 14 s.
            reply = trickle(slow, b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 100, lambda r: b"\r\n\r\n" in r)
        assert reply.startswith(b"HTTP/1.1 408 ")
        scrape(server.url)


def test_many_silent_clients_hold_no_thread_and_do_not_stop_a_scrape(metrics, served):
    threads = threading.active_count()
    silent = []
    try:
        for _ in range(3 * served.limits.max_pending):
            silent.append(socket.create_connection(("127.0.0.1", served.port), timeout=10))
        scrape(served.url)
        assert threading.active_count() == threads
    finally:
        for conn in silent:
            conn.close()


def test_split_listen():
    assert split_listen("127.0.0.1:9145") == ("127.0.0.1", 9145)
    assert split_listen("[::1]:9145") == ("::1", 9145)
    assert split_listen("metrics.example:80") == ("metrics.example", 80)
    for bad in ("9145", ":9145", "host:", "host:http", "host:70000"):
        with pytest.raises(MetricsError, match="is not host:port"):
            split_listen(bad)
