"""conf.d/: every shipped example is valid, and the examples fit together.

* The nginx examples pass ``nginx -t`` as Debian's nginx.conf reads them
  (``include conf.d/*.conf`` inside http {}, in name order), from a temporary
  prefix: copies whose Debian paths (/etc/nginx, /var/log/nginx) are rewritten
  into the prefix, so the test needs neither root nor a writable /var/log/nginx.
  The shipped files are never changed.
* The example daemon config loads with the daemon's own loader, and passes the
  checks the daemon makes at start (its rollout's upstream and canary exist, its
  access log and format are found) against the example site.
* On a real nginx with real backends, requests with ``canary: true`` from a
  tester's address always reach the canary, and the daemon's analysis counts
  them apart ("forced"), never as canary traffic; from any other address the
  header is ignored. Other requests follow the weights nginx-canary writes.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

from nginx_canary.daemon import runtime as daemon

from nginx_canary.nginx import operations
from nginx_canary.errors import BadInputError
from nginx_canary.logs.analyze import FORCED, GROUP
from nginx_canary.nginx.conf import load_config
from nginx_canary.config.model import DaemonSettings
from nginx_canary.config.settings import load_settings

from nginx_canary.demo.nginx_harness import PrivateNginx, free_port
from nginx_canary.demo.site import SiteFiles, make_prefix

REPO = Path(__file__).resolve().parent.parent
CONF_D = REPO / "conf.d"

#: Every file conf.d/ ships, by kind. A new example must be added here (and so get tested).
LOG_FORMAT = "nginx-canary-log-format.conf"
SITE = "nginx-canary-site.conf"
DAEMON_YAML = "nginx-canary.example.yaml"
NGINX_EXAMPLES = (LOG_FORMAT, SITE)
YAML_EXAMPLES = (DAEMON_YAML,)
EXAMPLES = NGINX_EXAMPLES + YAML_EXAMPLES

#: What the example site is written for (the vagrant/ VM): nginx on 8080, v1 on 8081, v2 on 8082.
SITE_PORTS = {"front": 8080, "v1": 8081, "v2": 8082}
UPSTREAM = "backend"
CANARY_UPSTREAM = "backend_canary"
ROLLOUT = "app"

#: Debian's paths in the examples, and where a test copy puts them.
DEBIAN_PATHS = {"/etc/nginx/": "{prefix}/", "/var/log/nginx/": "{prefix}/logs/",
                "/var/lib/nginx-canary": "{root}/state", "/run/nginx-canary/": "{root}/run/"}

#: The http {} part of Debian's /etc/nginx/nginx.conf that matters here: a
#: default access log, then conf.d/*.conf. Backends for the live test come after.
MAIN_CONF = """\
worker_processes 1;
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
    include {prefix}/conf.d/*.conf;
{backends}}}
"""

BACKENDS = """\
    server {{ listen 127.0.0.1:{v1}; return 200 "v1"; }}
    server {{ listen 127.0.0.1:{v2}; return 200 "v2"; }}
"""


def localize(text: str, prefix: Path, root: Path) -> str:
    """``text`` with Debian's paths moved under ``prefix`` / ``root``."""
    for debian, local in DEBIAN_PATHS.items():
        text = text.replace(debian, local.format(prefix=prefix, root=root))
    return text


def with_ports(text: str, ports: Dict[str, int]) -> str:
    """The example site on these ports instead of 8080/8081/8082 (listening on loopback only)."""
    text = re.sub(rf"(?m)^(\s*listen\s+){SITE_PORTS['front']};", rf"\g<1>127.0.0.1:{ports['front']};", text)
    for name in ("v1", "v2"):
        text = text.replace(f"127.0.0.1:{SITE_PORTS[name]}", f"127.0.0.1:{ports[name]}")
    return text


@dataclasses.dataclass
class ExampleSite(SiteFiles):
    """Copies of the conf.d examples in a temporary nginx prefix laid out like Debian's /etc/nginx."""

    nginx_bin: str
    root: Path
    ports: Optional[Dict[str, int]] = None

    def __post_init__(self) -> None:
        self.server = PrivateNginx(self.nginx_bin, self.prefix, self.ports or {}, worker_processes=1)

    @property
    def site_conf(self) -> Path:
        return self.prefix / "conf.d" / SITE

    @property
    def daemon_yaml(self) -> Path:
        return self.root / "config.yaml"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "nginx-canary-site.access.log"

    def write(self) -> "ExampleSite":
        make_prefix(self.root)
        (self.root / "state").mkdir()
        for name in NGINX_EXAMPLES:
            text = localize((CONF_D / name).read_text(), self.prefix, self.root)
            if self.ports is not None:
                text = with_ports(text, self.ports)
            (self.prefix / "conf.d" / name).write_text(text)
        backends = BACKENDS.format(**self.ports) if self.ports is not None else ""
        self.conf.write_text(MAIN_CONF.format(prefix=self.prefix, backends=backends))
        yaml_text = localize((CONF_D / DAEMON_YAML).read_text(), self.prefix, self.root)
        if self.ports is not None:
            yaml_text = with_ports(yaml_text, self.ports)
        self.daemon_yaml.write_text(yaml_text)
        return self

    def nginx(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = self.server.run(*args)
        if check:
            assert result.returncode == 0, f"nginx {' '.join(args)} failed:\n{result.stderr}"
        return result

    def settings(self) -> DaemonSettings:
        """The daemon's settings from the (localized) example YAML, read by the daemon's loader."""
        return load_settings(str(self.daemon_yaml))

    def ops(self, settings: DaemonSettings) -> operations.Settings:
        ops = daemon.operation_settings(settings)
        assert ops.nginx_conf == str(self.conf) and ops.state_dir == str(self.root / "state")
        # nginx -p PREFIX, as the tests run it (the examples' paths are absolute either way).
        return dataclasses.replace(ops, nginx_bin=self.nginx_bin, nginx_prefix=str(self.prefix))

    def start(self) -> None:
        assert self.ports is not None
        self.server.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                # Answered and logged: later log readers start after this request.
                if self.get() in ("v1", "v2") and self.access_log.stat().st_size > 0:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not answer on port {self.ports['front']}")
            time.sleep(0.02)

    def get(self, headers: Optional[Dict[str, str]] = None, source: Optional[str] = None) -> str:
        """One GET of the site, from loopback address ``source`` (127.0.0.1 when None)."""
        assert self.ports is not None
        if source is None:
            request = urllib.request.Request(f"http://127.0.0.1:{self.ports['front']}/", headers=headers or {})
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.read().decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["front"], timeout=5, source_address=(source, 0))
        try:
            conn.request("GET", "/", headers=headers or {})
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def count(self, requests: int, headers: Optional[Dict[str, str]] = None,
              source: Optional[str] = None) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for _ in range(requests):
            body = self.get(headers, source)
            counts[body] = counts.get(body, 0) + 1
        return counts

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def site(nginx_bin: str, tmp_path: Path) -> Iterator[ExampleSite]:
    """The examples as shipped (paths moved into a temp prefix), nginx not started."""
    yield ExampleSite(nginx_bin, tmp_path / "site").write()


@pytest.fixture
def live_site(nginx_bin: str, tmp_path: Path) -> Iterator[ExampleSite]:
    """The examples on free loopback ports with nginx-served v1/v2 backends, nginx running."""
    ports = {"front": free_port(), "v1": free_port(), "v2": free_port()}
    inst = ExampleSite(nginx_bin, tmp_path / "site", ports).write()
    try:
        inst.start()
        yield inst
    finally:
        inst.stop()


# -- the files --------------------------------------------------------------------------


#: Tested by tests/test_prometheus_rules.py (promtool check rules and promtool test rules).
PROMETHEUS_EXAMPLES = ("prometheus/nginx-canary-rules.test.yml", "prometheus/nginx-canary-rules.yml")


#: Tested by tests/nginx/test_sticky_example.py (nginx -t, stickiness, the forced override counted apart).
STICKY_EXAMPLES = ("nginx-canary-sticky.conf",)


def test_every_file_in_conf_d_is_a_tested_example():
    found = sorted(str(p.relative_to(CONF_D)) for p in CONF_D.rglob("*") if p.is_file())
    assert found == sorted(EXAMPLES + PROMETHEUS_EXAMPLES + STICKY_EXAMPLES)


def test_the_site_is_read_after_the_log_format_it_uses():
    # Debian's nginx.conf: include /etc/nginx/conf.d/*.conf; nginx's glob reads them in name order,
    # and an access_log naming a format defined later is an error ("unknown log format").
    assert sorted(NGINX_EXAMPLES) == [LOG_FORMAT, SITE]
    assert re.search(r"(?m)^\s*access_log\s+\S+\s+canary;", (CONF_D / SITE).read_text())
    assert re.search(r"(?m)^log_format canary ", (CONF_D / LOG_FORMAT).read_text())


def test_the_copies_write_nothing_outside_the_prefix(site: ExampleSite):
    for name in NGINX_EXAMPLES:
        text = (site.prefix / "conf.d" / name).read_text()
        assert "/etc/nginx/" not in text and "/var/log/nginx/" not in text
    # Only the paths changed: the copies are the shipped files otherwise.
    shipped = (CONF_D / SITE).read_text()
    assert "/var/log/nginx/nginx-canary-site.access.log" in shipped
    assert site.site_conf.read_text() == localize(shipped, site.prefix, site.root)


# -- nginx -t ----------------------------------------------------------------------------


def test_nginx_examples_pass_nginx_t(site: ExampleSite):
    result = site.nginx("-t")
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


def test_the_log_format_alone_passes_nginx_t(site: ExampleSite):
    # Someone who takes only the log format (and keeps their own sites) can use it on its own.
    site.site_conf.unlink()
    site.conf.write_text(MAIN_CONF.format(
        prefix=site.prefix, backends=f"    access_log {site.prefix}/logs/other.log canary;\n"))
    assert "test is successful" in site.nginx("-t").stderr


def test_a_broken_example_fails_nginx_t(site: ExampleSite):
    # The check is not vacuous: the same run fails once the site's format is not defined.
    (site.prefix / "conf.d" / LOG_FORMAT).write_text("# nothing here\n")
    result = site.nginx("-t", check=False)
    assert result.returncode != 0 and 'unknown log format "canary"' in result.stderr


def test_the_example_site_has_the_upstreams_and_the_header_override(site: ExampleSite):
    config = load_config(str(site.conf))
    upstreams = {u.name: u for u in config.upstreams}
    assert set(upstreams) == {UPSTREAM, CANARY_UPSTREAM}
    steered = {s.address: s for s in upstreams[UPSTREAM].servers}
    v1, v2 = f"127.0.0.1:{SITE_PORTS['v1']}", f"127.0.0.1:{SITE_PORTS['v2']}"
    assert set(steered) == {v1, v2}
    assert "down" in steered[v2].params and "down" not in steered[v1].params  # the canary is staged down
    assert [s.address for s in upstreams[CANARY_UPSTREAM].servers] == [v2]
    assert "down" not in upstreams[CANARY_UPSTREAM].servers[0].params
    # The proxy_pass goes through the map's variable, which is why the YAML names the log.
    assert [p.target for p in config.proxies] == ["$backend_pool"]
    text = (CONF_D / SITE).read_text()
    # Only a tester (an address of the geo allow-list) can force the canary with the header.
    assert re.search(r"geo \$canary_tester \{\s*default\s+0;\s*127\.0\.0\.1\s+1;", text)
    assert re.search(r'map "\$canary_tester:\$http_canary" \$backend_pool \{\s*default\s+backend;\s*'
                     r'"1:true"\s+backend_canary;\s*\}', text)
    # The trade-off of the restriction is written down next to it.
    assert "Trade-off." in text and "set_real_ip_from" in text and "secret header value" in text


# -- the daemon config --------------------------------------------------------------------


def test_example_yaml_loads_with_the_daemons_loader():
    settings = load_settings(str(CONF_D / DAEMON_YAML))
    assert list(settings.rollouts) == [ROLLOUT]
    rollout = settings.rollouts[ROLLOUT]
    assert rollout.upstream == UPSTREAM
    assert rollout.canary == (f"127.0.0.1:{SITE_PORTS['v2']}",)
    assert rollout.access_log == "/var/log/nginx/nginx-canary-site.access.log"
    assert settings.nginx.conf == "/etc/nginx/nginx.conf"
    # Its other values are the documented defaults (docs/CONFIG.md says so).
    defaults = DaemonSettings()
    for key in (f.name for f in dataclasses.fields(DaemonSettings) if f.name != "rollouts"):
        assert getattr(settings, key) == getattr(defaults, key), key
    bare = dataclasses.replace(rollout, access_log=None)
    assert bare == type(rollout)(name=ROLLOUT, upstream=UPSTREAM, canary=rollout.canary)


def test_example_yaml_fits_the_example_site_as_the_daemon_checks_at_start(site: ExampleSite):
    site.nginx("-t")  # also creates the access log, as nginx would
    settings = site.settings()
    rollout = settings.rollouts[ROLLOUT]
    assert rollout.access_log == str(site.access_log)
    ops = site.ops(settings)
    config = operations.read_config(ops)
    daemon.check_rollout_against_config(rollout, config)
    traffic = daemon.open_traffic(rollout, config, ops)
    traffic.close()


def test_without_access_log_the_daemon_cannot_find_the_sites_log(site: ExampleSite):
    # Why the example YAML sets access_log: the log is found from `proxy_pass http://backend`,
    # and the example site proxies to `http://$backend_pool`. If the daemon learns to follow
    # the map, this fails: the comment in the example YAML must change then.
    settings = site.settings()
    rollout = dataclasses.replace(settings.rollouts[ROLLOUT], access_log=None)
    ops = site.ops(settings)
    config = operations.read_config(ops)
    daemon.check_rollout_against_config(rollout, config)
    with pytest.raises(BadInputError, match="no access log with \\$upstream_addr"):
        daemon.open_traffic(rollout, config, ops)


def test_a_broken_example_yaml_fails_the_daemons_checks(site: ExampleSite):
    site.nginx("-t")
    settings = site.settings()
    ops = site.ops(settings)
    config = operations.read_config(ops)
    rollout = settings.rollouts[ROLLOUT]
    with pytest.raises(BadInputError, match="is not a server of upstream"):
        daemon.check_rollout_against_config(dataclasses.replace(rollout, canary=("127.0.0.1:9",)), config)
    with pytest.raises(BadInputError, match="no upstream"):
        daemon.check_rollout_against_config(dataclasses.replace(rollout, upstream=CANARY_UPSTREAM + "x"), config)
    with pytest.raises(BadInputError):
        daemon.open_traffic(dataclasses.replace(rollout, access_log=str(site.prefix / "logs" / "access.log")),
                            config, ops)


# -- a real nginx: the header override --------------------------------------------------


def cli(inst: ExampleSite, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NGINX_CANARY_")}
    env["PATH"] = "/usr/sbin:" + env.get("PATH", "/usr/bin:/bin")
    command = [sys.executable, "-m", "nginx_canary", "--config", str(inst.daemon_yaml),
               "--nginx-conf", str(inst.conf), "--nginx-prefix", str(inst.prefix), "--nginx-bin", inst.nginx_bin,
               "--state-dir", str(inst.root / "state"), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


CANARY = {"canary": "true"}
#: A loopback address that is not in the example's allow-list (Linux answers on all of 127/8).
STRANGER = "127.0.0.2"


def test_canary_header_from_a_tester_reaches_the_canary_and_counts_apart(live_site: ExampleSite):
    settings = live_site.settings()
    rollout = settings.rollouts[ROLLOUT]
    v2 = f"127.0.0.1:{live_site.ports['v2']}"
    assert rollout.canary == (v2,)
    ops = live_site.ops(settings)
    config = operations.read_config(ops)
    daemon.check_rollout_against_config(rollout, config)
    traffic = daemon.open_traffic(rollout, config, ops)
    try:
        # Staged: the canary is down in `backend`, yet the header reaches it.
        assert live_site.count(20) == {"v1": 20}
        assert live_site.count(20, CANARY) == {"v2": 20}
        # Any other value follows the weights; map compares strings ignoring case.
        assert live_site.count(5, {"canary": "false"}) == {"v1": 5}
        assert live_site.count(5, {"canary": "yes"}) == {"v1": 5}
        assert live_site.count(5, {"canary": "TRUE"}) == {"v2": 5}
        assert live_site.count(5, {"Canary": "true"}) == {"v2": 5}  # header names are case-insensitive
        # From an address that is not in the allow-list the header does nothing.
        assert live_site.count(10, CANARY, source=STRANGER) == {"v1": 10}

        # A rollout step written by nginx-canary into the shipped site file.
        cli(live_site, "set-weight", UPSTREAM, "25", "--canary", v2)
        assert live_site.count(40) == {"v1": 30, "v2": 10}  # one worker: weighted round robin is exact
        assert live_site.count(20, CANARY) == {"v2": 20}
        assert live_site.count(20, CANARY, source=STRANGER) == {"v1": 15, "v2": 5}  # the weights, not the header

        # All of it on the canary (stable down): both ways reach v2.
        cli(live_site, "set-weight", UPSTREAM, "100", "--canary", v2)
        assert live_site.count(10) == {"v2": 10}
        assert live_site.count(10, CANARY) == {"v2": 10}

        # And back to 0: header requests still reach the canary, the rest stable.
        cli(live_site, "set-weight", UPSTREAM, "0", "--canary", v2)
        assert live_site.count(10) == {"v1": 10}
        assert live_site.count(10, CANARY) == {"v2": 10}

        # The daemon's eyes on the site's log: requests forced by the header are counted apart, in
        # neither group; the stranger's requests followed the weights and count as any others.
        deadline = time.monotonic() + 10
        expected = {"canary": 10 + 5 + 10, "stable": 20 + 5 + 5 + 10 + 30 + 15 + 10, "forced": 20 + 5 + 5 + 20 + 10 + 10}
        seen: Dict[str, int] = {}
        while time.monotonic() < deadline:
            now = time.time()
            traffic.poll(now)
            canary, stable = traffic.groups(300, now)
            forced = traffic.windows.window(FORCED + v2, 300, now)
            seen = {"canary": canary.requests, "stable": stable.requests, "forced": forced.requests}
            if seen == expected:
                break
            time.sleep(0.05)
        assert seen == expected
        assert traffic.windows.window(GROUP + "canary", 300, time.time()).errors_5xx == 0
    finally:
        traffic.close()
    # nginx-canary changed the steered upstream only; backend_canary and the map are as shipped.
    def after_backend(text: str) -> str:
        return text[re.search(r"(?m)^upstream backend_canary ", text).start():]

    shipped = with_ports((CONF_D / SITE).read_text(), live_site.ports)
    now_text = live_site.site_conf.read_text()
    # Back at 0 % the steered upstream is given back the operator's own bytes (issue #16: original forms).
    assert now_text == localize(shipped, live_site.prefix, live_site.root)
    assert after_backend(now_text) == after_backend(localize(shipped, live_site.prefix, live_site.root))
