"""sd_notify against a real datagram socket, as systemd would listen."""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Iterator, Tuple

import pytest

from nginx_canary.daemon.sd_notify import Notifier


@pytest.fixture
def listener() -> Iterator[Tuple[socket.socket, str]]:
    directory = tempfile.mkdtemp(prefix="nc-notify-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


def received(sock: socket.socket) -> str:
    return sock.recv(65536).decode()


def test_ready_status_watchdog_and_stopping_arrive_as_systemd_expects(listener):
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("app: idle")
    assert received(sock) == "READY=1\nSTATUS=app: idle"
    assert notifier.status("app: progressing 10 %\nsecond line")
    assert received(sock) == "STATUS=app: progressing 10 % second line"
    assert notifier.watchdog() and received(sock) == "WATCHDOG=1"
    assert notifier.reloading() and received(sock) == "RELOADING=1"
    assert notifier.stopping() and received(sock) == "STOPPING=1"
    notifier.close()


def test_abstract_namespace_socket():
    name = f"nc-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready("ok")
        assert received(sock) == "READY=1\nSTATUS=ok"
    finally:
        sock.close()


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False and notifier.watchdog() is False
    assert Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False


def test_a_vanished_socket_is_not_an_error(listener):
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path + "-gone"})
    assert notifier.ready("x") is False
    assert notifier.ready("x") is False  # warned once, still no exception


@pytest.mark.parametrize("env, pid, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 10, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "10"}, 10, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "11"}, 10, None),
    ({"WATCHDOG_USEC": "junk"}, 10, None),
    ({"WATCHDOG_USEC": "0"}, 10, None),
    ({}, 10, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(env, pid, expected):
    assert Notifier({"NOTIFY_SOCKET": "/x", **env}, pid=pid).watchdog_seconds == expected
