"""Membership records: which rollout settings every host must share, their digest, what differs, bad records."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from typing import Any

import pytest

from nginx_canary.config.model import (AnalysisSettings, GateSettings, HttpCheckSettings, RolloutSettings,
                                       WebhookSettings)
from nginx_canary.errors import FleetError
from nginx_canary.fleet.members import SHARED, differences, digest, member_record, read_member, shared_settings
from nginx_canary.fleet.plan import FORMAT

BASE = RolloutSettings(name="app", upstream="backend", canary=("10.0.0.12:8080",),
                       steps=(Fraction(10), Fraction(25, 2), Fraction(100)), step_interval=30.0)


def test_shared_settings_are_json_data_of_the_shared_names() -> None:
    shared = shared_settings(BASE)
    assert sorted(shared) == sorted(SHARED)
    assert shared["steps"] == ["10", "25/2", "100"]
    assert shared["canary"] == ["10.0.0.12:8080"]
    assert shared["analysis"]["risk"] == 0.01
    assert json.loads(json.dumps(shared)) == shared


@pytest.mark.parametrize("change", [
    {"access_log": "/var/log/nginx/other.log"},
    {"log_format": "main_ext"},
    {"webhooks": (WebhookSettings(url="https://hooks.example/x"),)},
    {"gates": GateSettings(pre_rollout="https://gate.example/ok")},
    {"context": "http"},
    {"name": "other"},
])
def test_host_local_settings_may_differ(change: Any) -> None:
    other = replace(BASE, **change)
    assert shared_settings(other) == shared_settings(BASE)
    assert digest(shared_settings(other)) == digest(shared_settings(BASE))
    assert differences(shared_settings(other), shared_settings(BASE)) == []


@pytest.mark.parametrize("change", [
    {"upstream": "backend2"},
    {"canary": ("10.0.0.13:8080",)},
    {"canary": ("10.0.0.12:8080", "10.0.0.13:8080")},
    {"steps": (Fraction(10), Fraction(25), Fraction(100))},
    {"step_interval": 31.0},
    {"on_success": "restore"},
    {"analysis": AnalysisSettings(risk=0.02)},
    {"analysis": AnalysisSettings(max_step_wait=300.0)},
    {"analysis": AnalysisSettings(http_checks=(HttpCheckSettings(url="http://127.0.0.1/health"),))},
])
def test_the_digest_changes_with_any_shared_setting(change: Any) -> None:
    other = replace(BASE, **change)
    assert digest(shared_settings(other)) != digest(shared_settings(BASE))
    assert differences(shared_settings(other), shared_settings(BASE)) != []


def test_the_digest_is_stable() -> None:
    assert digest(shared_settings(BASE)) == digest(shared_settings(replace(BASE)))
    assert len(digest(shared_settings(BASE))) == 16


def test_differences_name_nested_keys() -> None:
    ours = shared_settings(replace(BASE, analysis=AnalysisSettings(risk=0.02), step_interval=45.0))
    found = differences(ours, shared_settings(BASE))
    assert found == ["analysis.risk: 0.02 here, 0.01 in the fleet", "step_interval: 45.0 here, 30.0 in the fleet"]


def test_differences_name_a_setting_only_one_side_has() -> None:
    ours = shared_settings(BASE)
    theirs = dict(ours, newer_setting=True)
    assert differences(ours, theirs) == ["newer_setting: null here, true in the fleet"]


def test_member_record_round_trips() -> None:
    other = replace(BASE, name="api", upstream="api_backend")
    raw = member_record("lb-1", {"app": BASE, "api": other})
    data = json.loads(raw)
    assert (data["format"], data["host"]) == (FORMAT, "lb-1")
    rollouts = read_member(raw, "members/lb-1")
    assert sorted(rollouts) == ["api", "app"]
    assert rollouts["app"] == {"digest": digest(shared_settings(BASE)), "settings": shared_settings(BASE)}
    assert rollouts["api"]["settings"]["upstream"] == "api_backend"


def test_a_member_without_rollouts_is_a_member() -> None:
    assert read_member(member_record("lb-1", {}), "members/lb-1") == {}


def _record(**changes: Any) -> bytes:
    data = json.loads(member_record("lb-1", {"app": BASE}))
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize("raw", [
    b"", b"{", b"\xff", b"[]", b"3", b"null", b'"member"',
    _record(format=2), _record(format=None), _record(format=True), _record(format="1"),
    _record(rollouts=None), _record(rollouts=[]), _record(rollouts="app"),
    _record(rollouts={"app": None}), _record(rollouts={"app": "x"}), _record(rollouts={"app": {}}),
    _record(rollouts={"app": {"digest": 5, "settings": {}}}),
    _record(rollouts={"app": {"digest": "ab", "settings": []}}),
])
def test_read_member_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(FleetError) as caught:
        read_member(raw, "members/lb-9")
    assert str(caught.value).startswith("etcd key members/lb-9: not a member record")


def test_read_member_rejects_a_record_without_rollouts() -> None:
    data = json.loads(_record())
    del data["rollouts"]
    with pytest.raises(FleetError, match="etcd key members/lb-9: not a member record"):
        read_member(json.dumps(data).encode(), "members/lb-9")
