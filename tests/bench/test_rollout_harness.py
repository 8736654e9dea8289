"""bench/rollout_harness.py's access-log formats: every real-world format becomes a config real nginx accepts."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nginx_canary.demo.site import DemoSite

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "rollout_harness.py"


@pytest.fixture(scope="module")
def harness() -> Any:
    spec = importlib.util.spec_from_file_location("rollout_harness", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rollout_harness"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("rollout_harness", None)


def test_names_in_order_once_each_and_unknown_refused(harness: Any) -> None:
    assert harness.log_format_names(["canary,json_elk", "json_loki", "json_elk"]) == ["canary", "json_elk",
                                                                                        "json_loki"]
    with pytest.raises(ValueError, match="unknown log format 'nope'"):
        harness.log_format_names(["canary,nope"])
    with pytest.raises(ValueError, match="no log format"):
        harness.log_format_names([" , "])


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "tests" / "data" /
                                                          "real-world" / "log-formats").glob("*.conf")) + ["canary"])
def test_site_logs_in_the_format_and_nginx_accepts_it(harness: Any, tmp_path: Path, name: str) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    site = DemoSite(tmp_path, nginx)
    site.write()
    harness.use_log_format(site, name, 9145)
    conf = site.conf.read_text()
    assert f"access_log logs/access.log {name};" in conf
    assert conf.count("access_log ") == 1
    daemon = site.daemon_config.read_text()
    assert daemon.startswith("metrics_listen: 127.0.0.1:9145\n")
    assert f"    upstream: backend\n    log_format: {name}\n" in daemon
    r = subprocess.run([nginx, "-t", "-p", str(site.prefix), "-c", str(site.conf), "-e", "stderr"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
