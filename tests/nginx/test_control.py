"""nginx -t, master discovery and reload verification against a real nginx."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nginx_canary.errors import NginxNotRunningError, NginxRejectedError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.control import Nginx


def control_for(inst) -> Nginx:
    return Nginx(binary=inst.binary, conf_path=str(inst.conf), prefix=str(inst.prefix))


def test_nginx_t_passes_and_fails_with_nginx_message(nginx_stopped):
    ctl = control_for(nginx_stopped)
    ctl.test()
    (nginx_stopped.prefix / "conf.d" / "broken.conf").write_text("upstream broken {\n  server 127.0.0.1:1 weight=0;\n}\n")
    with pytest.raises(NginxRejectedError) as info:
        ctl.test()
    message = str(info.value)
    assert "[emerg]" in message and "broken.conf:2" in message and "\n" not in message


def test_find_master_and_workers(nginx):
    ctl = control_for(nginx)
    config = load_config(str(nginx.conf))
    master = ctl.find_master(config)
    assert master.pid == nginx.master().pid
    assert list(ctl.workers(master)) == nginx.workers()
    assert len(nginx.workers()) == 2


def test_not_running_missing_pid_file(nginx_stopped):
    with pytest.raises(NginxNotRunningError, match="cannot read PID file"):
        control_for(nginx_stopped).find_master(load_config(str(nginx_stopped.conf)))


def test_not_running_stale_pid(nginx_stopped):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    (nginx_stopped.prefix / "logs" / "nginx.pid").write_text(proc.stdout)
    with pytest.raises(NginxNotRunningError, match="stale PID file|not an nginx master"):
        control_for(nginx_stopped).find_master(load_config(str(nginx_stopped.conf)))


def test_pid_of_another_program_is_not_a_master(nginx_stopped):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (nginx_stopped.prefix / "logs" / "nginx.pid").write_text(f"{sleeper.pid}\n")
        with pytest.raises(NginxNotRunningError, match="not an nginx master"):
            control_for(nginx_stopped).find_master(load_config(str(nginx_stopped.conf)))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_reload_brings_new_workers_same_master(nginx):
    ctl = control_for(nginx)
    config = load_config(str(nginx.conf))
    master = ctl.find_master(config)
    before = nginx.workers()
    result = ctl.reload(master, ctl.error_log_path(config))
    assert result.master_pid == master.pid
    assert list(result.old_workers) == before
    assert result.new_workers and not set(result.new_workers) & set(before)
    assert set(result.new_workers) <= set(nginx.workers())
    assert nginx.get() == "v1"


def test_reload_that_cannot_bind_is_reported_not_trusted(nginx, unbindable_listen):
    ctl = control_for(nginx)
    config = load_config(str(nginx.conf))
    ctl.test()  # nginx -t does not bind, so only the reload can tell
    master = ctl.find_master(config)
    before = nginx.workers()
    with pytest.raises(NginxRejectedError, match=r"bind\(\).*failed"):
        ctl.reload(master, ctl.error_log_path(config), timeout=5)
    assert nginx.workers() == before


def test_compiled_defaults_are_read_from_nginx_V(nginx_stopped):
    ctl = control_for(nginx_stopped)
    defaults = ctl.compiled_defaults()
    assert defaults.get("prefix", "").startswith("/")
    assert "pid-path" in defaults


def test_pid_path_falls_back_to_compiled_default():
    seen = []

    def fake_runner(argv, timeout):
        seen.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "configure arguments: --prefix=/opt/ng --pid-path=run/ng.pid\n")

    ctl = Nginx(binary="nginx", conf_path="/x/nginx.conf", runner=fake_runner)

    class Config:
        pid = None
        error_logs = ("logs/e.log",)

    assert ctl.pid_path(Config()) == "/opt/ng/run/ng.pid"
    assert ctl.error_log_path(Config()) == "/opt/ng/logs/e.log"
    assert seen == [["nginx", "-V"]]  # asked once, remembered
