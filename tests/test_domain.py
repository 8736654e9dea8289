"""The shared rules: states and their groups, percent text, rollout names, steps and the step interval."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from nginx_canary.domain import (ACTIVE_STATES, FINAL_STATES, MAX_DURATION_MS, STARTABLE_STATES, TERMINAL_STATES,
                                 State, StepError, check_step_interval, check_steps, is_rollout_name, number_text,
                                 percent_number, percent_text, validate_name)
from nginx_canary.errors import BadInputError
from nginx_canary.rollout.store import RolloutState

# --- states ---------------------------------------------------------------------------------


def test_state_values_are_the_wire_strings():
    assert [s.value for s in State] == ["idle", "progressing", "paused", "promoted", "rolled_back", "aborted",
                                        "failed"]


def test_state_groups():
    assert ACTIVE_STATES == ("progressing", "paused")
    assert TERMINAL_STATES == ("promoted", "rolled_back", "aborted")
    assert FINAL_STATES == ("promoted", "rolled_back", "aborted", "failed")
    assert STARTABLE_STATES == ("idle", "promoted", "rolled_back", "aborted")
    assert set(State) == set(ACTIVE_STATES) | set(FINAL_STATES) | {State.IDLE}


def test_state_reads_as_its_string_everywhere():
    state = State.ROLLED_BACK
    assert state == "rolled_back" and "rolled_back" == state and hash(state) == hash("rolled_back")
    assert str(state) == f"{state}" == "%s" % state == "rolled_back"
    assert f"[{state:>12}]" == "[ rolled_back]"
    assert {"rolled_back": 1}[state] == 1 and "paused" in ACTIVE_STATES
    assert json.dumps({"state": state}) == '{"state": "rolled_back"}'


def test_state_file_and_socket_json_are_byte_equal_to_plain_strings():
    state = RolloutState(name="app", state="paused", steps=("10", "100"), canary_percent="10", paused_reason="x")
    assert state.state is State.PAUSED
    plain = dict(state.to_dict(), state="paused")
    for options in ({"indent": 2, "sort_keys": True, "allow_nan": False}, {"sort_keys": True}):
        assert json.dumps(state.to_dict(), **options) == json.dumps(plain, **options)
    assert RolloutState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_a_state_assigned_as_a_string_becomes_the_enum_and_others_are_refused():
    state = RolloutState(name="app")
    assert state.state is State.IDLE
    state.state = "failed"  # type: ignore[assignment]
    state.validate()
    assert state.state is State.FAILED
    for bad in ("running", "", None, ["idle"]):
        with pytest.raises(ValueError, match="state must be one of idle, progressing, paused"):
            RolloutState(name="app", state=bad)  # type: ignore[arg-type]


# --- percents -------------------------------------------------------------------------------


@pytest.mark.parametrize("value, text", [
    (Fraction(25), "25"), (Fraction(25, 2), "12.5"), (Fraction("33.33"), "33.33"), (Fraction(100, 3), "33.33"),
    (Fraction(0), "0"), (25, "25"), (0, "0"), (12.5, "12.5"), (25.0, "25"), (100.0, "100"), (0.0, "0"),
    (100 / 3, "33.33"), (0.004, "0"), (99.999, "100"), (0.5, "0.5"),
])
def test_percent_text(value, text):
    assert percent_text(value) == text


@pytest.mark.parametrize("value, text", [
    (2.0, "2.0"), (0.0, "0.0"), (12.5, "12.5"), (100 / 3, "33.33"), (2, "2.0"), (Fraction(5), "5.0"),
])
def test_percent_text_keeping_the_point(value, text):
    # The analysis' reasons: "canary 5xx rate 2.0 % over ...".
    assert percent_text(value, keep_point=True) == text


@pytest.mark.parametrize("number, digits, keep_point, text", [
    (0.25, 3, True, "0.25"), (1.0, 3, True, "1.0"), (1.0, 3, False, "1"), (1.23456, 3, False, "1.235"),
    (3.0, 2, True, "3.0"), (float("nan"), 2, True, "nan"), (float("inf"), 2, False, "inf"), (10.0, 2, False, "10"),
])
def test_number_text(number, digits, keep_point, text):
    assert number_text(number, digits, keep_point=keep_point) == text


@pytest.mark.parametrize("value, number", [
    (Fraction(25), 25), (Fraction(25, 2), 12.5), ("12.5", 12.5), ("100", 100), ("33.33", 33.33), (10.0, 10),
    (7, 7), (33.3333, 33.33), ("1e1", 10),
])
def test_percent_number(value, number):
    result = percent_number(value)
    assert result == number and type(result) is type(number)


@pytest.mark.parametrize("value, words", [
    ("x", "must be a number"), (None, "must be a number"), (True, "must be a number"), ([1], "must be a number"),
    (math.inf, "must be finite"), ("nan", "must be finite"),
])
def test_percent_number_refuses(value, words):
    with pytest.raises(ValueError, match=words):
        percent_number(value)


# --- rollout names --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["app", "a", "App_1.v-2", "9lives", "x" * 64, "null", "1"])
def test_good_rollout_name(name):
    assert validate_name(name) == name and is_rollout_name(name)


@pytest.mark.parametrize("name", [
    "-app", ".x", "_x", "a b", "x" * 65, "b\u0430ckend", "a/b", "a:b", "", "a\nb", "app\n", "../etc", "a;b", "$x",
    None, 7, b"app",
])
def test_bad_rollout_name(name):
    assert not is_rollout_name(name)
    with pytest.raises(BadInputError) as refused:
        validate_name(name)
    assert refused.value.message == (f"invalid rollout name {name!r}: must be 1 to 64 ASCII letters, digits, "
                                     "'_', '.' or '-', starting with a letter or digit")


# --- steps and the step interval ------------------------------------------------------------


def test_good_steps():
    assert check_steps([5, Fraction("12.5"), 100]) == (Fraction(5), Fraction(25, 2), Fraction(100))
    assert check_steps(["10", "33.33", "100.00"]) == (Fraction(10), Fraction("33.33"), Fraction(100))
    assert check_steps([100]) == (Fraction(100),)


@pytest.mark.parametrize("steps, index, message", [
    ([], 0, "steps must be a non-empty list of percents like 10, 25, 50, 100"),
    ("10,100", 0, "steps must be a non-empty list of percents like 10, 25, 50, 100"),
    ([True, 100], 0, "step True is not a percent"),
    ([10, "ten", 100], 1, "step 'ten' is not a percent"),
    ([0, 100], 0, "step 0 must be greater than 0: a step of 0 % sends the canary nothing"),
    ([10, 101], 1, "step 101 must be above 0 and at most 100, with at most two decimals"),
    ([-5, 100], 0, "step -5 must be above 0 and at most 100, with at most two decimals"),
    ([Fraction("12.345"), 100], 0, "step 2469/200 must be above 0 and at most 100, with at most two decimals"),
    ([50, 25, 100], 1, "steps must increase, but 25 follows 50"),
    ([Fraction(25, 2), Fraction(25, 2), 100], 1, "steps must increase, but 12.5 follows 12.5"),
    ([10, 50], 1, "the last step must be 100 (a rollout ends with all traffic on the canary), got 50"),
    ([Fraction("99.99")], 0, "the last step must be 100 (a rollout ends with all traffic on the canary), got 99.99"),
])
def test_bad_steps(steps, index, message):
    with pytest.raises(StepError) as refused:
        check_steps(steps)
    assert (refused.value.message, refused.value.index) == (message, index)
    assert isinstance(refused.value, BadInputError)


def test_bad_steps_are_shown_as_the_user_spelled_them():
    spelled = ["12.5", "12.50", "100"]
    with pytest.raises(StepError, match="steps must increase, but 12.50 follows 12.5"):
        check_steps([Fraction(s) for s in spelled], spelled=spelled)
    with pytest.raises(StepError, match="step 0.00 must be greater than 0"):
        check_steps([Fraction(0), Fraction(100)], spelled=["0.00", "100"])
    with pytest.raises(StepError, match=r"the last step must be 100 \(.*\), got 50.0$"):
        check_steps([Fraction(10), Fraction(50)], spelled=["10", "50.0"])


@pytest.mark.parametrize("value, seconds", [(1, 1.0), (0.25, 0.25), (60.0, 60.0), (MAX_DURATION_MS / 1000, 2592000.0)])
def test_good_step_interval(value, seconds):
    result = check_step_interval(value)
    assert result == seconds and type(result) is float


@pytest.mark.parametrize("value", [0, -1, 0.0, True, False, "10", None, math.nan, math.inf,
                                   MAX_DURATION_MS / 1000 + 0.001, [10]])
def test_bad_step_interval(value):
    with pytest.raises(BadInputError) as refused:
        check_step_interval(value)
    assert refused.value.message.startswith("step_interval must be a number of seconds above 0 and at most 720h, not ")


def test_step_interval_message_quotes_at_most_40_characters():
    with pytest.raises(BadInputError) as refused:
        check_step_interval("x" * 100)
    assert refused.value.message.endswith(f"not {'x' * 40!r}")
