"""ConfigWatcher on a real directory (watchdog, inotify): edits, renames over, deletions; other files ignored."""

from __future__ import annotations

import os
import threading
import time

import pytest

from nginx_canary.daemon.config_watch import ConfigWatcher
from nginx_canary.fsutil import atomic_write

#: Bound for an inotify event to arrive (they take milliseconds; a broken watcher fails instead of hanging).
BOUND = 10.0


@pytest.fixture
def watched(tmp_path):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    upstream = conf / "upstream.conf"
    upstream.write_text("upstream backend { server 127.0.0.1:8001; }\n")
    woken = threading.Event()
    watcher = ConfigWatcher([str(upstream)], woken.set)
    assert watcher.start() and watcher.watching
    yield conf, upstream, watcher, woken
    watcher.close()


def wait_taken(watcher: ConfigWatcher) -> bool:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if watcher.take():
            return True
        time.sleep(0.01)
    return False


def settle(watcher: ConfigWatcher) -> None:
    """Let late events of an earlier change arrive, then forget them."""
    time.sleep(0.3)
    watcher.take()


@pytest.mark.parametrize("how", ["append", "rename over", "atomic_write", "delete"])
def test_an_edit_of_a_watched_file_is_taken_once_and_wakes(watched, how):
    conf, upstream, watcher, woken = watched
    assert watcher.take() is False
    if how == "append":
        with open(upstream, "a") as fh:
            fh.write("# edited by hand\n")
    elif how == "rename over":  # what sed -i and many editors do
        new = conf / "upstream.conf.new"
        new.write_text("upstream backend { server 127.0.0.1:8002; }\n")
        os.rename(new, upstream)
    elif how == "atomic_write":  # nginx-canary's own writes are seen too
        atomic_write(str(upstream), b"upstream backend { server 127.0.0.1:8003; }\n", purpose="config")
    else:
        upstream.unlink()
    assert wait_taken(watcher)
    assert woken.is_set()
    settle(watcher)
    assert watcher.take() is False  # taken: nothing more until the next change


def test_other_files_in_the_directory_are_ignored(watched):
    conf, upstream, watcher, woken = watched
    (conf / "site.conf").write_text("server { listen 8080; }\n")
    (conf / "site.conf").unlink()
    time.sleep(0.5)
    assert watcher.take() is False and not woken.is_set()


def test_close_stops_watching_and_a_missing_directory_is_not_fatal(tmp_path):
    watcher = ConfigWatcher([str(tmp_path / "gone" / "upstream.conf")], lambda: None)
    assert watcher.start() is False and not watcher.watching  # logged; the checks still hash the files
    watcher.close()
    present = tmp_path / "upstream.conf"
    present.write_text("x\n")
    live = ConfigWatcher([str(present)], lambda: None)
    assert live.start()
    live.close()
    assert not live.watching
    present.write_text("y\n")
    time.sleep(0.3)
    assert live.take() is False
