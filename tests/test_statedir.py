"""The state directory: its layout, creation, locks and the sweep of leftover temporaries."""

from __future__ import annotations

import os

import pytest

from nginx_canary.errors import BadInputError, BusyError, ControlError, StateError
from nginx_canary.fsutil import TEMP_SUFFIX
from nginx_canary.statedir import StateDir


def mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_every_path_of_the_layout(tmp_path):
    state = StateDir(str(tmp_path))
    layout = {
        state.lock: "lock",
        state.daemon_lock_file: "daemon.lock",
        state.journal: "journal.json",
        state.parse_cache: "parse-cache.json",
        state.snapshot("20260101T000000-7"): "snapshots/20260101T000000-7",
        state.rollout_snapshot("app-1700000000000"): "rollout-snapshots/app-1700000000000",
        state.rollout_state("app"): "rollouts/app.json",
        state.history("app"): "rollouts/app.history.jsonl",
        state.series("app"): "rollouts/app.series.jsonl",
    }
    for path, relative in layout.items():
        assert path == str(tmp_path / relative)
    assert state.snapshots == str(tmp_path / "snapshots") and state.rollouts == str(tmp_path / "rollouts")


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", None])
def test_a_rollout_name_that_is_not_a_file_name_never_becomes_a_path(tmp_path, name):
    state = StateDir(str(tmp_path))
    for path_of in (state.rollout_state, state.history, state.series):
        with pytest.raises(BadInputError, match="invalid rollout name"):
            path_of(name)


def test_ensure_rollouts_creates_both_directories_private(tmp_path):
    state = StateDir(str(tmp_path / "state"))
    state.ensure_rollouts()
    state.ensure_rollouts()  # again: nothing to do
    assert mode(state.root) == 0o700 and mode(state.rollouts) == 0o700


def test_a_file_where_a_directory_belongs_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="is not a directory"):
        StateDir(str(tmp_path / "file")).ensure()
    with pytest.raises(StateError, match="cannot create state dir"):
        StateDir(str(tmp_path / "file" / "state")).ensure()
    state = StateDir(str(tmp_path / "state"))
    os.makedirs(state.root)
    open(state.rollouts, "w").close()
    with pytest.raises(StateError, match="rollouts is not a directory"):
        state.ensure_rollouts()


def test_second_writer_is_busy(tmp_path):
    state = StateDir(str(tmp_path))
    with state.writer_lock():
        with pytest.raises(BusyError, match=rf"busy: another nginx-canary \(pid {os.getpid()}\)"):
            with StateDir(str(tmp_path)).writer_lock():
                pass
    with state.writer_lock():  # released
        pass


def test_one_daemon_per_state_dir(tmp_path):
    state_dir = str(tmp_path / "state")
    fd = StateDir(state_dir).daemon_lock()
    try:
        # flock belongs to the open file: a second open, even in this process, is refused like another daemon.
        with pytest.raises(ControlError, match=rf"another nginx-canary daemon \(pid {os.getpid()}\) is running "
                                               rf"on state dir {state_dir}$"):
            StateDir(state_dir).daemon_lock()
        with StateDir(state_dir).writer_lock():  # a different lock: the daemon's own changes still take it
            pass
    finally:
        os.close(fd)
    os.close(StateDir(state_dir).daemon_lock())  # free again once closed
    assert mode(os.path.join(state_dir, "daemon.lock")) == 0o600


def test_remove_leftover_temps_sweeps_the_state_dir_and_the_files_given(tmp_path):
    state = StateDir(str(tmp_path / "state"))
    state.ensure_rollouts()
    conf = tmp_path / "upstream.conf"
    conf.write_text("upstream\n")
    in_state = os.path.join(state.rollouts, f".app.json.x9{TEMP_SUFFIX}")
    for_conf = tmp_path / f".upstream.conf.k2{TEMP_SUFFIX}"
    not_ours = tmp_path / f".site.conf.k2{TEMP_SUFFIX}"
    for path in (in_state, for_conf, not_ours):
        open(path, "w").close()
    assert state.remove_leftover_temps([str(conf)]) == sorted([(in_state, None), (str(for_conf), None)])
    assert not os.path.exists(in_state) and not for_conf.exists() and not_ours.exists()
    assert state.remove_leftover_temps([str(conf)]) == []
