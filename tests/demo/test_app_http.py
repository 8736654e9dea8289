"""The demo app's HTTP side: keep-alive, TCP_NODELAY, request bodies drained or refused."""

from __future__ import annotations

import socket

from tests.demo.conftest import request


def test_keep_alive_serves_many_requests_on_one_connection(make_app, connect):
    app = make_app("v1", error_rate=0.5)
    conn = connect(app)
    request(conn)
    sock = conn.sock
    for _ in range(199):
        status, headers, _ = request(conn)
        assert "close" not in headers.get("connection", "")
    assert conn.sock is sock
    stats = app.stats()
    assert (stats["connections_total"], stats["requests"], stats["responses"]) == (1, 200, {"200": 100, "500": 100})


def test_accepted_sockets_have_tcp_nodelay(make_app, connect):
    app = make_app("v1")
    request(connect(app))
    conns = list(app._connections)
    assert conns and all(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in conns)


def test_post_bodies_are_drained_so_keep_alive_survives(make_app, connect):
    conn = connect(make_app("v1"))
    for _ in range(3):
        assert request(conn, "POST", "/submit", b"x" * 5000)[::2] == (200, b"v1\n")


def test_oversized_body_is_refused_and_the_connection_closed(make_app, connect):
    conn = connect(make_app("v1"))
    conn.putrequest("POST", "/")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 413 and resp.will_close
