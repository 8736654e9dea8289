"""The loop's self-pipe and signal flags (daemon/wakeup.py)."""

from __future__ import annotations

import os
import signal
from typing import List

from nginx_canary.daemon.wakeup import WakePipe, install_signals, restore_signals


def test_a_wake_is_drained_by_the_wait_it_ends():
    pipe = WakePipe()
    try:
        pipe.open_selector()
        pipe.wake()
        pipe.wake()
        pipe.wait(30.0)  # returns at once: woken (a hang here is the failure)
        try:
            leftover = os.read(pipe.read_fd, 1)
        except BlockingIOError:
            leftover = b""
        assert leftover == b""
    finally:
        pipe.close_selector()
        pipe.close()
    pipe.wake()  # after close: no error


def test_signals_only_set_flags_and_are_put_back():
    pipe = WakePipe()
    flags: List[str] = []
    before = signal.getsignal(signal.SIGHUP)
    previous = install_signals(lambda: flags.append("stop"), lambda: flags.append("reload"), pipe.write_fd)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        pipe.open_selector()
        pipe.wait(30.0)  # the wakeup fd got the signal numbers
    finally:
        restore_signals(previous)
        pipe.close_selector()
        pipe.close()
    assert flags == ["reload", "stop"]
    assert signal.getsignal(signal.SIGHUP) is before
