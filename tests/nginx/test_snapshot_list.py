"""Listing and finding snapshots of both kinds, including manifests written before they said what made them."""

from __future__ import annotations

import json
import os

import pytest

from nginx_canary.errors import BadInputError
from nginx_canary.nginx.snapshots import find_snapshot, list_snapshots, sha256, write_snapshot
from nginx_canary.statedir import StateDir


def test_both_kinds_oldest_first_old_manifests_and_damaged_ones(tmp_path):
    paths = StateDir(str(tmp_path))
    write_snapshot(paths.snapshot("20260101T000000-7"), [b"a"], lambda n, c: {
        "path": "/etc/nginx/u.conf", "copy": c, "old_sha256": sha256(b"a"), "new_sha256": "x"}, {"id": "20260101T000000-7"})
    os.utime(os.path.join(paths.snapshot("20260101T000000-7"), "manifest.json"), (100.0, 100.0))
    write_snapshot(paths.rollout_snapshot("app-5"), [b"b"], lambda n, c: {
        "path": "/etc/nginx/v.conf", "copy": c, "sha256": sha256(b"b")},
        {"id": "app-5", "upstream": "backend", "context": "http", "command": "rollout", "created": 50.0})
    os.makedirs(paths.snapshot("broken"))
    with open(os.path.join(paths.snapshot("broken"), "manifest.json"), "w") as fh:
        json.dump({"files": [{"nopath": 1}]}, fh)
    found, problems = list_snapshots(str(tmp_path))
    assert [(s.id, s.kind, s.created, s.upstream) for s in found] == [
        ("app-5", "rollout", 50.0, "backend"), ("20260101T000000-7", "change", 100.0, None)]
    assert found[1].files[0].sha256 == sha256(b"a") and found[0].files[0].path == "/etc/nginx/v.conf"
    assert len(problems) == 1 and "broken/manifest.json: snapshot manifest cannot be read" in problems[0]
    assert find_snapshot(str(tmp_path), "app-5").kind == "rollout"


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "", "-x", "a" * 200, "x\n"])
def test_ids_that_are_not_one_path_component_are_refused(tmp_path, bad):
    with pytest.raises(BadInputError, match="is not a snapshot id"):
        find_snapshot(str(tmp_path), bad)


def test_an_unknown_id(tmp_path):
    with pytest.raises(BadInputError, match=f"no snapshot 'app-1' in {tmp_path}"):
        find_snapshot(str(tmp_path), "app-1")
