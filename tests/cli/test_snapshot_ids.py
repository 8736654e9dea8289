"""``snapshots list`` and ``restore`` take the change-snapshot ids of this version and those of older ones alike.

Older versions named a change's snapshot to the second (``20251203T141812-4242``);
a state dir they wrote into keeps those directories next to the new ones.
"""

from __future__ import annotations

import json
import os
import re

from tests.cli.test_app import run

OLD_ID = "20251203T141812-4242"


def test_list_and_restore_old_and_new_ids(nginx):
    original = nginx.config_files()
    assert run(nginx, "set-weight", "backend", "10", "--canary", nginx.v2).returncode == 0
    # The first change's snapshot, as an older version named it.
    snapshots = nginx.state_dir / "snapshots"
    (made,) = os.listdir(snapshots)
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}-\d+", made), made
    os.rename(snapshots / made, snapshots / OLD_ID)
    manifest = snapshots / OLD_ID / "manifest.json"
    manifest.write_text(manifest.read_text().replace(made, OLD_ID))  # its copies' paths and its id
    after_first = nginx.config_files()
    assert run(nginx, "set-weight", "backend", "50", "--canary", nginx.v2).returncode == 0

    result = run(nginx, "snapshots", "list", "--json")
    assert result.returncode == 0, result.stderr
    listed = [s["id"] for s in json.loads(result.stdout)["snapshots"]]
    assert listed[0] == OLD_ID and re.fullmatch(r"\d{8}T\d{6}\.\d{3}-\d+", listed[1]) and len(listed) == 2
    text = run(nginx, "snapshots", "list").stdout
    assert re.search(rf"^{OLD_ID} +\d{{4}}-", text, re.M) and re.search(rf"^{re.escape(listed[1])} +\d{{4}}-", text, re.M)

    result = run(nginx, "snapshots", "restore", listed[1])
    assert result.returncode == 0, result.stderr
    assert nginx.config_files() == after_first
    result = run(nginx, "snapshots", "restore", OLD_ID)
    assert result.returncode == 0, result.stderr
    assert nginx.config_files() == original
    assert nginx.count_versions(20) == {"v1": 20}
