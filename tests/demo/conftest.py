"""Helpers for the demo tests: plain http.client requests against a DemoApp."""

from __future__ import annotations

import http.client
import json
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

from nginx_canary.demo.app import DemoApp


def request(conn: http.client.HTTPConnection, method: str = "GET", path: str = "/",
            body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None
            ) -> Tuple[int, Dict[str, str], bytes]:
    """One exchange on ``conn``: status, headers (lower-case names), body."""
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def admin_post(conn: http.client.HTTPConnection, payload: Any,
               content_type: str = "application/json") -> Tuple[int, Dict[str, Any]]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, _, data = request(conn, "POST", "/__admin", raw, {"Content-Type": content_type})
    return status, json.loads(data)


@pytest.fixture
def make_app() -> Iterator:
    """Start DemoApps on demand; all are stopped at teardown."""
    apps = []

    def make(*args: Any, **kwargs: Any) -> DemoApp:
        app = DemoApp(*args, **kwargs)
        app.start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture
def connect() -> Iterator:
    """Open http.client connections to an app; all are closed at teardown."""
    conns = []

    def open_(app: DemoApp, timeout: float = 10.0) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(app.host, app.port, timeout=timeout)
        conns.append(conn)
        return conn

    yield open_
    for conn in conns:
        conn.close()
