"""The one private-nginx harness of the demo, the tests and the benches: start, PIDs, reload, stop."""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

import psutil
import pytest

from nginx_canary.demo.nginx_harness import NginxHarnessError, PrivateNginx, free_ports

CONF = """\
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {{ worker_connections 64; }}
http {{
    access_log off;
    server {{ listen 127.0.0.1:{front}; return 200 "{body}"; }}
}}
"""


def private_nginx(binary: str, root: Path, body: str = "one") -> PrivateNginx:
    nginx = PrivateNginx(binary, root / "nginx", {"front": free_ports(1)[0]}, worker_processes=2)
    (nginx.prefix / "logs").mkdir(parents=True)
    nginx.conf.write_text(CONF.format(front=nginx.ports["front"], body=body))
    return nginx


def get(nginx: PrivateNginx) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{nginx.ports['front']}/", timeout=5) as resp:
        return resp.read().decode()


@pytest.fixture
def nginx(nginx_bin: str, tmp_path: Path):
    inst = private_nginx(nginx_bin, tmp_path)
    yield inst
    inst.stop()


def test_free_ports_are_distinct():
    ports = free_ports(20)
    assert len(set(ports)) == 20 and all(0 < p < 65536 for p in ports)


@pytest.mark.nginx
def test_start_returns_with_every_worker_running(nginx: PrivateNginx):
    nginx.start()
    assert nginx.started and get(nginx) == "one"
    workers = nginx.worker_pids()
    assert len(workers) == 2 and nginx.settled()
    assert {p.pid for p in nginx.master().children()} == set(workers)
    assert nginx.master().pid == nginx.master_pid()


@pytest.mark.nginx
def test_a_config_nginx_rejects_fails_the_start(nginx: PrivateNginx):
    nginx.conf.write_text("worker_processes 2;\nevents {}\nhttp { nonsense; }\n")
    with pytest.raises(NginxHarnessError, match="nonsense"):
        nginx.start()
    assert nginx.master_pid() is None and nginx.stop() == []


@pytest.mark.nginx
def test_reload_waits_for_a_new_generation(nginx: PrivateNginx):
    nginx.start()
    old = nginx.worker_pids()
    nginx.conf.write_text(CONF.format(front=nginx.ports["front"], body="two"))
    nginx.reload()
    new = nginx.worker_pids()
    assert len(new) == 2 and not set(old) & set(new) and nginx.settled()
    assert get(nginx) == "two"


@pytest.mark.nginx
def test_stop_waits_for_master_and_workers(nginx: PrivateNginx):
    nginx.start()
    family = [nginx.master(), *[psutil.Process(pid) for pid in nginx.worker_pids()]]
    assert nginx.stop() == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)
    assert not nginx.started and nginx.worker_pids() == [] and nginx.stop() == []


@pytest.mark.nginx
def test_stop_kills_what_ignores_the_signal(nginx: PrivateNginx):
    nginx.start()
    master, workers = nginx.master().pid, nginx.worker_pids()
    os.kill(master, signal.SIGSTOP)  # a stopped master cannot quit
    assert sorted(nginx.stop(timeout=0.3)) == sorted([master, *workers])
