"""A real etcd for the fleet tests: a temp data dir, free loopback ports, stopped by PID."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from nginx_canary.demo.etcd_harness import PrivateEtcd


@pytest.fixture(scope="session")
def etcd_binary() -> str:
    """The etcd binary; CI sets NGINX_CANARY_REQUIRE_NGINX=1 so a missing etcd fails instead of skipping."""
    found = shutil.which("etcd")
    if found is None:
        if os.environ.get("NGINX_CANARY_REQUIRE_NGINX") == "1":
            pytest.fail("etcd not installed (Debian: apt-get install etcd-server; or make test-tools)")
        pytest.skip("etcd not installed")
    return found


@pytest.fixture(scope="module")
def shared_etcd(etcd_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateEtcd]:
    """One etcd for a whole test module (tests keep apart by fleet name); never paused or stopped by tests."""
    with PrivateEtcd(tmp_path_factory.mktemp("etcd") / "data", binary=etcd_binary) as etcd:
        yield etcd


@pytest.fixture
def etcd(etcd_binary: str, tmp_path: Path) -> Iterator[PrivateEtcd]:
    """An etcd of the test's own, which it may freeze, kill or restart."""
    with PrivateEtcd(tmp_path / "etcd", binary=etcd_binary) as server:
        yield server
