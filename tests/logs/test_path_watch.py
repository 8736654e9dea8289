"""watchdog on a log path: files opened as they appear, wake-ups, and close."""

from __future__ import annotations

import os
import time
from pathlib import Path

from nginx_canary.logs.path_watch import PathWatch


def test_a_file_created_at_the_path_is_opened_and_handed_over_once(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    watch = PathWatch(str(path), watch=True, watch_writes=False)
    try:
        assert watch.watching
        path.write_bytes(b"x\n")
        deadline = time.monotonic() + 5
        opened = watch.take_opened()
        while not opened and time.monotonic() < deadline:
            watch.wait(0.05)
            opened = watch.take_opened()
        assert len(opened) == 1
        st = os.stat(path)
        assert opened[0].identity == (st.st_dev, st.st_ino) and opened[0].read_pos == 0
        os.close(opened[0].fd)
        assert watch.take_opened() == []
    finally:
        watch.close()


def test_without_watchdog_wait_sleeps_and_close_cuts_it_short(tmp_path: Path) -> None:
    watch = PathWatch(str(tmp_path / "access.log"), watch=False, watch_writes=True)
    assert not watch.watching
    started = time.monotonic()
    watch.wait(0.05)
    assert time.monotonic() - started >= 0.04
    watch.close()
    watch.close()
    started = time.monotonic()
    watch.wait(5)
    assert time.monotonic() - started < 1
