"""PrivateEtcd: started and healthy, frozen and thawed, stopped by PID with nothing left behind."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import requests

from nginx_canary.demo.etcd_harness import EtcdHarnessError, PrivateEtcd


def healthy(etcd: PrivateEtcd) -> bool:
    return requests.get(f"{etcd.client_url}/health", timeout=2).json()["health"] == "true"


def test_a_frozen_etcd_is_stopped_by_pid_and_restarts_on_its_data(etcd: PrivateEtcd, tmp_path: Path) -> None:
    pid = etcd.pid
    assert healthy(etcd) and etcd.client_port != etcd.peer_port
    etcd.pause()
    assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
    with pytest.raises(requests.Timeout):
        requests.get(f"{etcd.client_url}/health", timeout=0.3)
    etcd.resume()
    assert healthy(etcd)
    etcd.pause()
    etcd.restart()  # stops the frozen process (SIGCONT, SIGTERM), starts on the same dir and ports
    assert not psutil.pid_exists(pid) and etcd.pid != pid and healthy(etcd)
    etcd.stop()
    assert not etcd.running and (tmp_path / "etcd" / "member").is_dir()
    with pytest.raises(EtcdHarnessError):
        etcd.pid


def test_an_etcd_that_cannot_start_says_why(etcd_binary: str, tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("a file where the data dir should be")
    etcd = PrivateEtcd(tmp_path / "etcd", binary=etcd_binary)
    with pytest.raises(EtcdHarnessError, match="exited while starting"):
        etcd.start(timeout=10)
    assert not etcd.running
