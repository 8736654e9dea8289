"""The fleet's etcd records: plans, host reports and figures round-trip, and anything else is refused naming the key."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any, Callable, Dict

import pytest

from nginx_canary.domain import State
from nginx_canary.errors import FleetError
from nginx_canary.fleet.plan import (FORMAT, REPORT_STATUSES, HostFigures, HostReport, Plan, figures_prefix,
                                     member_key, plan_key, reports_prefix)
from tests.rollout.figures import stats

KEY = "rollouts/app/plan"


def make_plan(**changes: Any) -> Plan:
    fields: Dict[str, Any] = dict(rollout="app", run="r1", seq=3, state=State.PROGRESSING,
                                  steps=(Fraction(10), Fraction(25, 2), Fraction(100)), step_index=1,
                                  hosts=("lb-1", "lb-2"), started_at=100.0, updated_at=130.5)
    fields.update(changes)
    return Plan(**fields)


def plan_data(**changes: Any) -> Dict[str, Any]:
    data = json.loads(make_plan().to_json())
    data.update(changes)
    return data


def report_data(**changes: Any) -> Dict[str, Any]:
    data = json.loads(HostReport("lb-1", "r1", 3, "applied", "25", 131.0).to_json())
    data.update(changes)
    return data


def figures_data(**changes: Any) -> Dict[str, Any]:
    data = json.loads(HostFigures("lb-1", "r1", 3, 120.0, 131.0, stats(40, errors_5xx=2), stats(400)).to_json())
    data.update(changes)
    return data


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def refused(read: Callable[[bytes, str], Any], data: bytes, key: str, *words: str) -> str:
    with pytest.raises(FleetError) as caught:
        read(data, key)
    message = str(caught.value)
    assert f"etcd key {key}" in message
    for word in words:
        assert word in message
    assert "\n" not in message
    return message


# --- keys ----------------------------------------------------------------------------------------------


def test_keys_of_one_rollout() -> None:
    assert member_key("lb-1") == "members/lb-1"
    assert plan_key("app") == "rollouts/app/plan"
    assert reports_prefix("app") == "rollouts/app/reports/"
    assert figures_prefix("app") == "rollouts/app/figures/"


# --- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [State.PROGRESSING, State.PAUSED, State.PROMOTED, State.ROLLED_BACK,
                                   State.ABORTED])
def test_plan_round_trips(state: State) -> None:
    plan = make_plan(state=state, barrier_at=125.25, looked=True, reason="step 1/3 (10 %) passed", digest="ab12")
    again = Plan.from_json(plan.to_json(), KEY)
    assert again == plan
    assert again.steps == (Fraction(10), Fraction(25, 2), Fraction(100))
    assert again.percent == Fraction(25, 2)


def test_plan_defaults_round_trip() -> None:
    plan = make_plan()
    assert Plan.from_json(plan.to_json(), KEY) == plan
    assert json.loads(plan.to_json())["format"] == FORMAT


def test_plan_moved_stamps_the_change() -> None:
    plan = make_plan()
    moved = plan.moved(140.0, step_index=2)
    assert (moved.updated_at, moved.step_index, moved.percent) == (140.0, 2, Fraction(100))
    assert (plan.updated_at, plan.step_index) == (130.5, 1)


@pytest.mark.parametrize("status", REPORT_STATUSES)
def test_report_round_trips(status: str) -> None:
    report = HostReport("lb-2", "r1", 7, status, "12.5", 99.5, detail="nginx -t failed")
    assert HostReport.from_json(report.to_json(), "rollouts/app/reports/lb-2") == report


def test_figures_round_trip() -> None:
    canary, stable = stats(40, errors_5xx=2, slow=3), stats(400, errors_4xx=5)
    figures = HostFigures("lb-1", "r1", 3, 120.0, 131.0, canary, stable)
    again = HostFigures.from_json(figures.to_json(), "rollouts/app/figures/lb-1")
    assert (again.host, again.run, again.seq, again.since, again.at) == ("lb-1", "r1", 3, 120.0, 131.0)
    assert again.canary.summary() == canary.summary()
    assert again.stable.summary() == stable.summary()
    assert again.to_json() == figures.to_json()


# --- what is refused ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("read", [Plan.from_json, HostReport.from_json, HostFigures.from_json])
@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"plan"])
def test_not_json_is_refused(read: Callable[[bytes, str], Any], data: bytes) -> None:
    refused(read, data, "rollouts/x/y", "not JSON")


@pytest.mark.parametrize("read", [Plan.from_json, HostReport.from_json, HostFigures.from_json])
@pytest.mark.parametrize("data", [b"[]", b"3", b'"plan"', b"null"])
def test_json_other_than_an_object_is_refused(read: Callable[[bytes, str], Any], data: bytes) -> None:
    refused(read, data, "rollouts/x/y", "not a JSON object")


@pytest.mark.parametrize("make, read", [(plan_data, Plan.from_json), (report_data, HostReport.from_json),
                                        (figures_data, HostFigures.from_json)])
@pytest.mark.parametrize("number", [None, 0, 2, "1", True])
def test_another_format_is_refused(make: Callable[..., Dict[str, Any]], read: Callable[[bytes, str], Any],
                                   number: Any) -> None:
    data = make(format=number)
    message = refused(read, raw(data), "rollouts/x/y", f"reads format {FORMAT}")
    assert f"format {number!r}" in message


def test_a_record_without_format_is_refused() -> None:
    data = plan_data()
    del data["format"]
    refused(Plan.from_json, raw(data), KEY, "format None")


@pytest.mark.parametrize("name, value", [
    ("rollout", 3), ("run", None), ("seq", "3"), ("seq", 3.0), ("seq", True), ("step_index", False),
    ("step_index", "1"), ("steps", "10,50"), ("hosts", "lb-1"), ("looked", "no"), ("looked", 1),
    ("started_at", "soon"), ("started_at", True), ("updated_at", None), ("barrier_at", "now"),
    ("barrier_at", False),
])
def test_plan_with_a_wrong_type_is_refused(name: str, value: Any) -> None:
    refused(Plan.from_json, raw(plan_data(**{name: value})), KEY, name)


@pytest.mark.parametrize("name", ["rollout", "run", "seq", "state", "steps", "step_index", "hosts", "started_at",
                                  "updated_at"])
def test_plan_missing_a_key_is_refused(name: str) -> None:
    data = plan_data()
    del data[name]
    refused(Plan.from_json, raw(data), KEY, name)


@pytest.mark.parametrize("changes", [
    {"state": "idle"}, {"state": "failed"}, {"state": "running"}, {"state": 1},
    {"step_index": -1}, {"step_index": 3}, {"steps": []},
    {"steps": ["0", "100"]}, {"steps": ["-5", "100"]}, {"steps": ["10", "100.5"]}, {"steps": ["10", "101"]},
    {"steps": ["ten"]}, {"steps": ["1/0"]}, {"seq": 0}, {"seq": -2}, {"hosts": ["lb-1", 2]},
])
def test_plan_out_of_range_is_refused(changes: Dict[str, Any]) -> None:
    refused(Plan.from_json, raw(plan_data(**changes)), KEY, "not a rollout plan")


def test_plan_with_a_non_finite_time_is_refused() -> None:
    text = make_plan().to_json().decode().replace('"started_at": 100.0', '"started_at": NaN')
    refused(Plan.from_json, text.encode(), KEY, "started_at")


@pytest.mark.parametrize("name, value", [
    ("host", 1), ("run", None), ("seq", True), ("seq", "3"), ("status", 0), ("percent", 25), ("at", "then"),
    ("at", True),
])
def test_report_with_a_wrong_type_is_refused(name: str, value: Any) -> None:
    refused(HostReport.from_json, raw(report_data(**{name: value})), "rollouts/app/reports/lb-1", name)


@pytest.mark.parametrize("status", ["done", "APPLIED", "", "rolled_back"])
def test_report_with_an_unknown_status_is_refused(status: str) -> None:
    refused(HostReport.from_json, raw(report_data(status=status)), "rollouts/app/reports/lb-1",
            f"unknown status {status!r}")


@pytest.mark.parametrize("name, value", [
    ("host", None), ("seq", False), ("since", "x"), ("at", None), ("canary", None), ("stable", []),
    ("canary", {"requests": -1}),
])
def test_figures_with_a_wrong_value_are_refused(name: str, value: Any) -> None:
    refused(HostFigures.from_json, raw(figures_data(**{name: value})), "rollouts/app/figures/lb-1")


def test_figures_claiming_more_errors_than_requests_are_refused() -> None:
    data = figures_data()
    data["canary"]["errors_5xx"] = data["canary"]["requests"] + 1
    refused(HostFigures.from_json, raw(data), "rollouts/app/figures/lb-1", "more responses")
