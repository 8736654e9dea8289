"""Rollout state files and histories: round trips, atomicity, torn lines, names, modes, corruption."""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Dict

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nginx_canary.rollout.analysis import evaluate
from nginx_canary.rollout.checks import Thresholds
from nginx_canary.errors import BadInputError, StateError
from nginx_canary.logs.window import Stats
from nginx_canary.domain import State, validate_name
from nginx_canary.rollout.store import RolloutState, StateStore

STATE_VALUES = [s.value for s in State]

SHA = "a" * 64


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def a_state(name: str = "web", **changes: Any) -> RolloutState:
    fields: Dict[str, Any] = dict(
        name=name, state="progressing", step_index=1, steps=("10", "25", "50", "100"), canary_percent="25",
        snapshot_id="20240101T000000-42", expected_files={"/etc/nginx/conf.d/up.conf": SHA},
        started_at=1_700_000_000.0, step_started_at=1_700_000_060.0, updated_at=1_700_000_090.5,
        paused_reason=None, last_verdict={"verdict": "pass", "checks": []}, failure_streak=0, message="at 25 %",
    )
    fields.update(changes)
    return RolloutState(**fields)


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(str(tmp_path / "state"), clock=FakeClock())


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- state files ------------------------------------------------------------------


def test_save_load_round_trip(store):
    state = a_state()
    store.save(state)
    assert store.load("web") == state
    state.state, state.paused_reason, state.failure_streak = "paused", "operator", 1
    store.save(state)
    assert store.load("web") == state


def test_load_of_unknown_rollout_is_none(store):
    assert store.load("nothing") is None
    assert store.load_all() == [] and store.names() == []


def test_saved_file_is_plain_json_with_a_format(store):
    store.save(a_state())
    with open(store.state_path("web")) as fh:
        data = json.load(fh)
    assert data["format"] == 1 and data["name"] == "web" and data["steps"] == ["10", "25", "50", "100"]


def test_modes_and_no_temp_files_left(store):
    store.save(a_state())
    store.save(a_state(message="again"))
    store.append_history("web", "started")
    assert mode(store.state_dir) == 0o700
    assert mode(store.rollouts_dir) == 0o700
    assert mode(store.state_path("web")) == 0o600
    assert mode(store.history_path("web")) == 0o600
    assert sorted(os.listdir(store.rollouts_dir)) == ["web.history.jsonl", "web.json"]


def test_a_failed_write_leaves_the_old_state(store, monkeypatch):
    store.save(a_state())
    monkeypatch.setattr(os, "rename", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(StateError, match="No space left"):
        store.save(a_state(message="new"))
    monkeypatch.undo()
    assert store.load("web").message == "at 25 %"
    assert sorted(os.listdir(store.rollouts_dir)) == ["web.json"]


def test_load_all_by_name_ignoring_histories_and_temp_files(store):
    for name in ("b", "a.1", "C-2"):
        store.save(a_state(name))
        store.append_history(name, "started")
    open(os.path.join(store.rollouts_dir, ".a.1.json.xyz.nginx-canary.tmp"), "w").close()
    assert [s.name for s in store.load_all()] == ["C-2", "a.1", "b"]


def test_save_refuses_an_invalid_state(store):
    state = a_state()
    state.state = "exploded"
    with pytest.raises(ValueError, match="state must be one of"):
        store.save(state)
    state = a_state()
    state.last_verdict = {"when": object()}
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        store.save(state)
    assert store.load("web") is None


@pytest.mark.parametrize("changes, message", [
    ({"state": "running"}, "state must be one of"),
    ({"step_index": 4}, "past the last of 4 steps"),
    ({"step_index": -1}, "step_index"),
    ({"step_index": True}, "step_index"),
    ({"steps": ("10", 25)}, "steps"),
    ({"expected_files": {"/x": "nothex"}}, "sha256"),
    ({"started_at": float("nan")}, "started_at"),
    ({"failure_streak": -2}, "failure_streak"),
    ({"name": "../x"}, "invalid rollout name"),
])
def test_invalid_fields_are_refused_at_construction(changes, message):
    with pytest.raises(ValueError, match=message):
        a_state(**changes)


def test_defaults_make_an_idle_state():
    state = RolloutState("web")
    assert (state.state, state.step_index, state.steps, state.canary_percent) == ("idle", 0, (), "0")
    assert RolloutState.from_dict(state.to_dict()) == state


# --- corrupt or foreign state files ------------------------------------------------


def write_raw(store: StateStore, name: str, data: bytes) -> str:
    os.makedirs(store.rollouts_dir, exist_ok=True)
    path = store.state_path(name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


@pytest.mark.parametrize("data, message", [
    (b'{"format": 1, "name": "web",', "corrupt rollout state: Expecting"),
    (b"", "corrupt rollout state"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b'{"name": "web"}', "format None"),
    (b'{"format": 2, "name": "web"}', "format 2"),
])
def test_corrupt_state_file_raises_state_error_naming_the_file(store, data, message):
    path = write_raw(store, "web", data)
    with pytest.raises(StateError, match=message) as info:
        store.load("web")
    assert str(info.value).startswith(path)
    with pytest.raises(StateError):
        store.load_all()


def test_json_error_carries_the_line(store):
    path = write_raw(store, "web", b'{\n"format": 1,\n"name": \n}')
    with pytest.raises(StateError) as info:
        store.load("web")
    assert str(info.value).startswith(f"{path}:4: corrupt rollout state")


def test_unknown_and_missing_keys_are_refused_clearly(store):
    data = {"format": 1, **a_state().to_dict(), "canary_weight": 3}
    path = write_raw(store, "web", json.dumps(data).encode())
    with pytest.raises(StateError, match=r"unknown keys 'canary_weight' \(written by a newer nginx-canary\?\)") as info:
        store.load("web")
    assert path in str(info.value)
    del data["canary_weight"], data["message"]
    write_raw(store, "web", json.dumps(data).encode())
    with pytest.raises(StateError, match="missing keys 'message'"):
        store.load("web")


def test_a_mistyped_field_is_refused(store):
    data = {"format": 1, **a_state().to_dict(), "failure_streak": "2"}
    write_raw(store, "web", json.dumps(data).encode())
    with pytest.raises(StateError, match="invalid rollout state: failure_streak"):
        store.load("web")


def test_a_state_filed_under_another_name_is_refused(store):
    write_raw(store, "web", json.dumps({"format": 1, **a_state("api").to_dict()}).encode())
    with pytest.raises(StateError, match="holds rollout 'api', expected 'web'"):
        store.load("web")


def test_unreadable_state_file(store):
    os.makedirs(store.state_path("web"))  # something that exists but cannot be read as a file
    with pytest.raises(StateError, match="cannot read rollout state: Is a directory") as info:
        store.load("web")
    assert str(info.value).startswith(store.state_path("web"))


def test_state_dir_that_is_a_file(tmp_path):
    (tmp_path / "state").write_text("")
    with pytest.raises(StateError, match="is not a directory"):
        StateStore(str(tmp_path / "state")).save(a_state())


# --- names -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x" * 65, ".hidden", "..", "-x", "a\n", "a b", "é", None, 3])
def test_bad_names_are_refused_everywhere(store, name):
    with pytest.raises(BadInputError, match="invalid rollout name"):
        validate_name(name)
    for call in (lambda: store.load(name), lambda: store.history(name), lambda: store.append_history(name, "x")):
        with pytest.raises(BadInputError):
            call()
    assert not os.path.exists(store.state_dir)


@pytest.mark.parametrize("name", ["a", "x" * 64, "web-1.2_b", "0"])
def test_good_names(store, name):
    assert validate_name(name) == name
    store.save(a_state(name))
    assert store.load(name).name == name


# --- history -------------------------------------------------------------------------


def test_history_records_in_order_with_state_fields(store):
    state = a_state()
    store.append_history("web", "started", rollout=state, at=10.0, steps=["10", "25"])
    store.append_history("web", "step", rollout=state, note="to 25 %")
    store.append_history("web", "pause requested", by="cli")
    records = store.history("web")
    assert [r["event"] for r in records] == ["started", "step", "pause requested"]
    assert records[0] == {"time": 10.0, "event": "started", "state": "progressing", "step": 1,
                          "canary_percent": "25", "detail": {"steps": ["10", "25"]}}
    assert records[1]["time"] == 1_700_000_001.0  # the store's clock
    assert records[2]["state"] is None and records[2]["detail"] == {"by": "cli"}


def test_history_limit_keeps_the_newest(store):
    for n in range(10):
        store.append_history("web", f"e{n}")
    assert [r["event"] for r in store.history("web", limit=3)] == ["e7", "e8", "e9"]
    assert len(store.history("web", limit=100)) == 10
    assert store.history("web", limit=0) == []
    with pytest.raises(ValueError):
        store.history("web", limit=-1)


def test_history_of_unknown_rollout_is_empty(store):
    assert store.history("nobody") == []


def test_history_stores_verdicts(store):
    verdict = evaluate(Stats(), Stats(), Thresholds(), at=5.0)
    record = store.append_history("web", "analysis", verdict=verdict)
    assert record["detail"]["verdict"] == verdict.to_dict()
    assert store.history("web")[0]["detail"]["verdict"]["verdict"] == "inconclusive"


def test_history_refuses_what_json_cannot_hold(store):
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        store.append_history("web", "x", thing=object())
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        store.append_history("web", "x", ratio=float("inf"))
    with pytest.raises(ValueError, match="event"):
        store.append_history("web", "")
    assert store.history("web") == []
    assert not os.path.exists(store.history_path("web"))


def test_one_line_per_record_even_with_newlines_in_detail(store):
    store.append_history("web", "note", message="two\nlines")
    with open(store.history_path("web"), "rb") as fh:
        assert fh.read().count(b"\n") == 1
    assert store.history("web")[0]["detail"]["message"] == "two\nlines"


@pytest.mark.parametrize("torn", [b'{"time": 3, "event": "ha', b'{"time": 3, "event": "x", "detail": {}}', b"\0\0\0"])
def test_a_torn_last_line_is_skipped_and_cut_before_the_next_append(store, torn, caplog):
    store.append_history("web", "one")
    store.append_history("web", "two")
    with open(store.history_path("web"), "ab") as fh:  # a crash in the middle of a write
        fh.write(torn)
    assert [r["event"] for r in store.history("web")] == ["one", "two"]
    assert "skipped a torn or corrupt history line" in caplog.text
    store.append_history("web", "three")
    assert [r["event"] for r in store.history("web")] == ["one", "two", "three"]
    with open(store.history_path("web"), "rb") as fh:
        assert torn not in fh.read()


def test_a_torn_first_line_is_cut_entirely(store):
    os.makedirs(store.rollouts_dir)
    with open(store.history_path("web"), "wb") as fh:
        fh.write(b'{"event": "tor' * 10000)  # longer than one read chunk, no newline anywhere
    assert store.history("web") == []
    store.append_history("web", "fresh")
    assert [r["event"] for r in store.history("web")] == ["fresh"]


def test_corrupt_complete_lines_are_skipped_not_fatal(store):
    store.append_history("web", "one")
    with open(store.history_path("web"), "ab") as fh:
        fh.write(b"\0\0\0garbage}\n[1, 2]\n")
    store.append_history("web", "two")
    assert [r["event"] for r in store.history("web")] == ["one", "two"]


def test_history_only_appends(store):
    store.append_history("web", "one")
    with open(store.history_path("web"), "rb") as fh:
        before = fh.read()
    store.append_history("web", "two")
    with open(store.history_path("web"), "rb") as fh:
        assert fh.read().startswith(before)


# --- property: any valid state survives the disk ---------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
times = st.one_of(st.none(), st.floats(0, 4e9, allow_nan=False))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=10,
)


@st.composite
def states(draw) -> RolloutState:
    steps = tuple(draw(st.lists(st.sampled_from(["1", "10", "25", "50", "100", "12.5"]), max_size=5)))
    return RolloutState(
        name=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)),
        state=draw(st.sampled_from(STATE_VALUES)),
        step_index=draw(st.integers(0, max(0, len(steps) - 1))),
        steps=steps,
        canary_percent=draw(st.sampled_from(["0", "10", "100"])),
        snapshot_id=draw(st.one_of(st.none(), text)),
        expected_files=draw(st.dictionaries(text.filter(bool), st.from_regex(r"[0-9a-f]{64}", fullmatch=True), max_size=3)),
        started_at=draw(times),
        step_started_at=draw(times),
        updated_at=draw(times),
        paused_reason=draw(st.one_of(st.none(), text)),
        last_verdict=draw(st.one_of(st.none(), st.dictionaries(text, json_values, max_size=3))),
        failure_streak=draw(st.integers(0, 100)),
        message=draw(text),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=states())
def test_any_state_round_trips_through_the_store(store, state):
    store.save(state)
    assert store.load(state.name) == state
    assert RolloutState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_a_nested_state_dir_is_created(tmp_path):
    store = StateStore(str(tmp_path / "var" / "lib" / "nginx-canary"))
    store.save(a_state())
    assert store.load("web") is not None
    assert mode(store.state_dir) == 0o700 and mode(store.rollouts_dir) == 0o700


@pytest.mark.parametrize("field,value,message", [
    ("owed_restore", "everything", "owed_restore must be one of snapshot, weights or None"),
    ("step_interval", 0, "step_interval must be a positive number of seconds or None"),
    ("step_interval", float("nan"), "step_interval must be a positive number of seconds or None"),
    ("restore_summary", 3, "restore_summary must be a string or None"),
])
def test_typed_restore_and_step_interval_fields_are_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        RolloutState(name="app", **{field: value})


def test_typed_fields_round_trip(tmp_path):
    store = StateStore(str(tmp_path / "state"))
    state = RolloutState(name="app", state="rolled_back", steps=("10",), snapshot_id="snap-1",
                         owed_restore="weights", restore_summary="rolled back: 2 failed checks", step_interval=5.0)
    store.save(state)
    assert store.load("app") == state
