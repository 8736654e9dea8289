"""vagrant/: what can be checked without a VM (CI cannot run one).

* provision.sh is shellcheck-clean, installs exactly the conf.d/ examples that
  tests/test_examples.py proves valid (and the unit files of the repo), and is
  idempotent: run twice under a temporary root with stand-ins for apt-get,
  dpkg-query, python3 (venv + pip), systemctl and nginx, the second run changes
  no file and asks for no install, enable, start, restart or reload.
* The Vagrantfile passes ``ruby -c`` and, evaluated with a stand-in for
  Vagrant's API, sets up the VM the README describes.
* The fleet (vagrant/fleet/Vagrantfile: etcd, app and 2-3 nginx VMs) passes the
  same checks, and provision.sh's roles etcd, app and nginx, run twice under the
  stand-ins, write what the other VMs expect: the fleet host's site passes
  ``nginx -t`` and its YAML is read by the daemon's own loader (the ``fleet:``
  section with ``allow_plaintext``, which the loader demands for http to etcd).
* The unit files under vagrant/ pass ``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from nginx_canary.nginx.conf import load_config
from nginx_canary.permissions import insecure_paths
from tests.test_examples import (CONF_D, DAEMON_YAML, EXAMPLES, LOG_FORMAT, SITE, SITE_PORTS, STICKY_EXAMPLES, UPSTREAM,
                                 ExampleSite, localize)

REPO = Path(__file__).resolve().parent.parent
VAGRANT = REPO / "vagrant"
PROVISION = VAGRANT / "provision.sh"
VAGRANTFILE = VAGRANT / "Vagrantfile"
FLEET_VAGRANTFILE = VAGRANT / "fleet" / "Vagrantfile"
DAEMON_UNIT = REPO / "systemd" / "nginx-canary.service"
VENV = "/opt/nginx-canary"


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or (os.path.exists(f"/usr/sbin/{name}") and f"/usr/sbin/{name}") or None
    if not found:
        pytest.fail(f"{name} is missing: run `make test` (it installs the Debian package {package})")
    return found


def provision_text() -> str:
    return PROVISION.read_text()


def installed_files() -> List[Tuple[str, str, str]]:
    """``(how, source relative to the repo, destination)`` of every file provision.sh copies."""
    found = re.findall(r'(?m)^\s*if (install_file|install_once) 0[0-7]{3} "\$REPO/([^"]+)" "\$ROOT(/[^"]+)"; then$',
                       provision_text())
    assert found, "no install_file/install_once lines found in provision.sh"
    return found


def shell_var(name: str) -> str:
    match = re.search(rf"(?m)^{name}=(\S+)$", provision_text())
    assert match, f"{name}= not found in provision.sh"
    return match.group(1)


# -- static checks ----------------------------------------------------------------------------


def test_provision_sh_is_shellcheck_clean():
    result = subprocess.run([tool("shellcheck", "shellcheck"), "--norc", str(PROVISION)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_provision_sh_is_executable_bash():
    assert PROVISION.stat().st_mode & stat.S_IXUSR
    assert provision_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in provision_text()


def test_vagrantfile_passes_ruby_c():
    result = subprocess.run([tool("ruby", "ruby"), "-c", str(VAGRANTFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stdout + result.stderr


# Vagrant's API as far as the Vagrantfile uses it: every call is recorded, none is checked here.
VAGRANT_STUB = r"""
require "json"
class Recorder
  def initialize(path, calls)
    @path = path
    @calls = calls
  end
  def method_missing(name, *args, **kwargs, &block)
    full = (@path + [name.to_s]).join(".")
    if args.empty? && kwargs.empty? && block.nil? && !name.to_s.end_with?("=")
      return Recorder.new(@path + [name.to_s], @calls)
    end
    @calls << { "call" => full, "args" => args, "kwargs" => kwargs }
    block.call(Recorder.new(@path + ["#{name}(#{args.join(',')})"], @calls)) if block
    nil
  end
  def respond_to_missing?(*)
    true
  end
end
module Vagrant
  def self.configure(version)
    calls = []
    yield Recorder.new(["config"], calls)
    puts JSON.generate({ "version" => version, "calls" => calls })
  end
end
Dir.chdir(File.dirname(ARGV[0])) { load File.basename(ARGV[0]) }
"""


def vagrantfile_calls(tmp_path: Path, env: Dict[str, str], vagrantfile: Path = VAGRANTFILE
                      ) -> Dict[str, List[dict]]:
    stub = tmp_path / "vagrant_stub.rb"
    stub.write_text(VAGRANT_STUB)
    result = subprocess.run([tool("ruby", "ruby"), str(stub), str(vagrantfile)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["version"] == "2"
    calls: Dict[str, List[dict]] = {}
    for call in data["calls"]:
        calls.setdefault(call["call"], []).append(call)
    return calls


def test_vagrantfile_sets_up_one_debian_12_vm(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "NGINX_CANARY_HOST_PORT"}
    calls = vagrantfile_calls(tmp_path, env)
    assert calls["config.vm.box="][0]["args"] == ["debian/bookworm64"]
    assert "config.vm.define" not in calls  # one VM
    # The forwarded port reaches the example site's listen port.
    (forward,) = calls["config.vm.network"]
    assert forward["args"] == ["forwarded_port"]
    assert forward["kwargs"]["guest"] == SITE_PORTS["front"]
    assert forward["kwargs"]["host"] == 8080 and forward["kwargs"]["host_ip"] == "127.0.0.1"
    assert re.search(rf"(?m)^\s*listen {SITE_PORTS['front']};", (CONF_D / SITE).read_text())
    # The synced folder is the repository, where provision.sh looks for it.
    (synced,) = calls["config.vm.synced_folder"]
    assert synced["args"] == ["..", "/vagrant"]
    assert (VAGRANT / synced["args"][0]).resolve() == REPO
    assert shell_var("REPO") == "${REPO:-/vagrant}"
    # Provisioning is provision.sh.
    (provision,) = calls["config.vm.provision"]
    assert provision["args"] == ["shell"] and (VAGRANT / provision["kwargs"]["path"]).resolve() == PROVISION
    assert provision["kwargs"]["env"] == {"REPO": "/vagrant"}


def test_vagrantfile_host_port_can_be_changed(tmp_path: Path):
    calls = vagrantfile_calls(tmp_path, {"NGINX_CANARY_HOST_PORT": "18080"})
    assert calls["config.vm.network"][0]["kwargs"]["host"] == 18080


def test_provision_installs_the_tested_conf_d_examples():
    files = installed_files()
    from_conf_d = {src: (how, dest) for how, src, dest in files if src.startswith("conf.d/")}
    # Every example the repo ships (all of them tested by test_examples.py), and nothing else.
    assert sorted(Path(src).name for src in from_conf_d) == sorted(EXAMPLES)
    # (conf.d/prometheus/ holds Prometheus rules, for a Prometheus server, not for this VM; the sticky site is
    # an alternative to the example site, not a second site beside it.)
    assert sorted(p.name for p in CONF_D.iterdir() if p.is_file()) == sorted(EXAMPLES + STICKY_EXAMPLES)
    for src in from_conf_d:
        assert (REPO / src).is_file(), src
    # Where Debian's nginx reads them (conf.d/*.conf inside http {}), under the same names:
    # the name order puts the log format before the site that uses it.
    assert from_conf_d[f"conf.d/{LOG_FORMAT}"] == ("install_file", f"/etc/nginx/conf.d/{LOG_FORMAT}")
    # The site is the file the daemon edits: installed once, never overwritten by provisioning again.
    assert from_conf_d[f"conf.d/{SITE}"] == ("install_once", f"/etc/nginx/conf.d/{SITE}")
    # The YAML goes where the daemon's unit reads it.
    yaml_dest = from_conf_d[f"conf.d/{DAEMON_YAML}"][1]
    assert yaml_dest == "/etc/nginx-canary/config.yaml"
    assert f"--config {yaml_dest} daemon" in DAEMON_UNIT.read_text()
    # Files are copied as they are: nothing in provision.sh rewrites them.
    assert not re.search(r"\b(sed|awk|perl|envsubst)\b", provision_text())


def test_provision_installs_the_repos_unit_files():
    units = {src: dest for _, src, dest in installed_files() if src.endswith(".service")}
    vagrant_units = sorted(f"vagrant/{p.name}" for p in VAGRANT.glob("*.service"))
    assert vagrant_units, "no unit files under vagrant/"
    assert sorted(units) == sorted(["systemd/nginx-canary.service", *vagrant_units])
    for src, dest in units.items():
        assert (REPO / src).is_file()
        assert dest == f"/etc/systemd/system/{Path(src).name}"


def test_provision_ports_and_paths_fit_the_example_site_and_units():
    # The demo apps listen where upstream `backend` of the example site sends requests.
    v1, v2 = int(shell_var("V1_PORT")), int(shell_var("V2_PORT"))
    assert (v1, v2) == (SITE_PORTS["v1"], SITE_PORTS["v2"])
    config = load_config(str(CONF_D / SITE))
    (backend,) = [u for u in config.upstreams if u.name == UPSTREAM]
    assert [s.address for s in backend.servers] == [f"127.0.0.1:{v1}", f"127.0.0.1:{v2}"]
    # The demo app unit runs the venv's python; the daemon's unit runs the symlink provision.sh makes.
    assert shell_var("VENV") == f"$ROOT{VENV}"
    app_unit = (VAGRANT / "nginx-canary-demo-app@.service").read_text()
    assert f"ExecStart={VENV}/bin/python -m nginx_canary.demo.app --host ${{HOST}} --port ${{PORT}}" in app_unit
    assert "EnvironmentFile=/etc/default/nginx-canary-demo-app-%i" in app_unit
    assert "ExecStart=/usr/local/bin/nginx-canary " in DAEMON_UNIT.read_text()
    assert 'ln -sfn "$VENV/bin/nginx-canary" "$ROOT/usr/local/bin/nginx-canary"' in provision_text()


@pytest.mark.parametrize("unit", sorted(p.name for p in VAGRANT.glob("*.service")))
def test_vagrant_units_pass_systemd_analyze_verify(unit: str, tmp_path: Path):
    # verify insists that ExecStart exists: point the venv's python at this one.
    text = (VAGRANT / unit).read_text()
    assert f"{VENV}/bin/python" in text
    text = text.replace(f"{VENV}/bin/python", sys.executable)
    names = [unit]
    if unit.endswith("@.service"):
        names += [unit.replace("@.service", "@v1.service"), unit.replace("@.service", "@v2.service")]
    for name in names:
        path = tmp_path / name
        path.write_text(text)
        result = subprocess.run([tool("systemd-analyze", "systemd"), "verify", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stderr.strip() == "", f"{name}: {result.stderr}"


# -- provision.sh, run for real under a temporary root ---------------------------------------

# Stand-ins: each logs its command line; systemctl and dpkg-query keep their state in files.
STUBS = {
    "id": 'echo 0\n',
    "dpkg-query": 'echo "dpkg-query $*" >>"$STUB_LOG"\n'
                  'for last in "$@"; do :; done\n'
                  '[ -e "$STUB_STATE/pkg-$last" ] || exit 1\n'
                  'echo "install ok installed"\n',
    "apt-get": 'echo "apt-get $*" >>"$STUB_LOG"\n'
               'if [ "$1" = install ]; then for a in "$@"; do case $a in -*|install) ;; *) touch "$STUB_STATE/pkg-$a";; '
               'esac; done; fi\n',
    "python3": 'echo "python3 $*" >>"$STUB_LOG"\n'
               '[ "$1 $2" = "-m venv" ] || exit 1\n'
               'mkdir -p "$3/bin"\n'
               'for f in python pip nginx-canary; do\n'
               '  printf \'#!/bin/sh\\necho "%s $*" >>"$STUB_LOG"\\n\' "$f" >"$3/bin/$f"; chmod +x "$3/bin/$f"\n'
               'done\n',
    "systemctl": 'echo "systemctl $*" >>"$STUB_LOG"\n'
                 'case $1 in\n'
                 '  is-enabled) [ -e "$STUB_STATE/enabled-$3" ];;\n'
                 '  is-active) [ -e "$STUB_STATE/active-$3" ];;\n'
                 '  enable) touch "$STUB_STATE/enabled-$3";;\n'
                 '  start|restart) touch "$STUB_STATE/active-$2";;\n'
                 'esac\n',
    "nginx": 'echo "nginx $*" >>"$STUB_LOG"\n',
}

#: What a run that changes nothing may still do: look.
QUERIES = re.compile(r"^(dpkg-query -W|systemctl is-enabled --quiet|systemctl is-active --quiet) ")


class Provisioner:
    def __init__(self, tmp_path: Path) -> None:
        self.repo = tmp_path / "repo"
        self.root = tmp_path / "root"
        self.state = tmp_path / "stub-state"
        self.log = tmp_path / "stub.log"
        bin_dir = tmp_path / "bin"
        for d in (self.root, self.state, bin_dir):
            d.mkdir()
        for name, body in STUBS.items():
            (bin_dir / name).write_text("#!/bin/bash\n" + body)
            (bin_dir / name).chmod(0o755)
        # A snapshot of the repository: what /vagrant holds in the VM.
        ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")
        for name in ("conf.d", "systemd", "vagrant", "nginx_canary"):
            shutil.copytree(REPO / name, self.repo / name, ignore=ignore)
        for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
            if (REPO / name).exists():
                shutil.copy2(REPO / name, self.repo / name)
        self.env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "REPO": str(self.repo),
                    "PROVISION_ROOT": str(self.root), "STUB_LOG": str(self.log), "STUB_STATE": str(self.state),
                    "LANG": "C.UTF-8"}

    def run(self, *args: str) -> Tuple[str, List[str]]:
        """Run provision.sh with ``args`` (a role); its output and the commands the stand-ins saw."""
        result = self.attempt(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout, self.log.read_text().splitlines()

    def attempt(self, *args: str) -> subprocess.CompletedProcess:
        self.log.write_text("")
        return subprocess.run(["bash", str(self.repo / "vagrant" / "provision.sh"), *args], capture_output=True,
                              text=True, env=self.env, timeout=120)

    def tree(self) -> Dict[str, Tuple[int, bytes]]:
        """Every path under the root: mode and content (link target for symlinks)."""
        out: Dict[str, Tuple[int, bytes]] = {}
        for path in sorted(self.root.rglob("*")):
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                data = os.readlink(path).encode()
            elif stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
            else:
                data = b""
            out[str(path.relative_to(self.root))] = (st.st_mode, data)
        return out


def test_provision_twice_changes_nothing_the_second_time(tmp_path: Path):
    prov = Provisioner(tmp_path)
    out, commands = prov.run()

    # First run on a fresh box: packages, venv + pip install of the synced repo, files, units, services.
    assert any(c.startswith("apt-get install") and " nginx " in f"{c} " and "python3-venv" in c for c in commands)
    assert f"python3 -m venv {prov.root}{VENV}" in commands
    assert f"pip install --quiet --disable-pip-version-check {prov.repo}" in commands
    root = prov.root
    for src, dest in ((LOG_FORMAT, f"etc/nginx/conf.d/{LOG_FORMAT}"), (SITE, f"etc/nginx/conf.d/{SITE}"),
                      (DAEMON_YAML, "etc/nginx-canary/config.yaml")):
        assert (root / dest).read_bytes() == (CONF_D / src).read_bytes(), dest
    assert stat.S_IMODE((root / "etc/nginx-canary/config.yaml").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "etc/nginx-canary").stat().st_mode) == 0o750
    assert (root / "etc/systemd/system/nginx-canary.service").read_bytes() == DAEMON_UNIT.read_bytes()
    assert (root / "etc/default/nginx-canary-demo-app-v1").read_text() == f"HOST=127.0.0.1\nPORT={SITE_PORTS['v1']}\n"
    assert (root / "etc/default/nginx-canary-demo-app-v2").read_text() == f"HOST=127.0.0.1\nPORT={SITE_PORTS['v2']}\n"
    assert os.readlink(root / "usr/local/bin/nginx-canary") == f"{root}{VENV}/bin/nginx-canary"
    for unit in ("nginx-canary-demo-app@v1.service", "nginx-canary-demo-app@v2.service", "nginx.service",
                 "nginx-canary.service"):
        assert (prov.state / f"enabled-{unit}").exists() and (prov.state / f"active-{unit}").exists(), unit
    assert "systemctl daemon-reload" in commands and "nginx -t -q" in commands
    # The daemon refuses to start on a config or an edited nginx file others could write.
    assert insecure_paths([str(root / "etc/nginx-canary/config.yaml"), str(root / "etc/nginx/conf.d" / SITE)]) == []
    # Apps and nginx come up before the daemon that checks them at start.
    starts = [c for c in commands if re.match(r"systemctl (start|restart) ", c)]
    assert starts[-1].endswith("nginx-canary.service")
    assert "nothing to change" not in out

    before = prov.tree()
    out, commands = prov.run()
    assert prov.tree() == before
    assert [c for c in commands if not QUERIES.match(c)] == []
    assert out.strip() == "provision: nothing to change"


def test_provisioning_again_keeps_the_daemons_edits_and_restores_changed_files(tmp_path: Path):
    prov = Provisioner(tmp_path)
    prov.run()
    # A rollout in progress: the daemon has rewritten the site's weights.
    site = prov.root / "etc/nginx/conf.d" / SITE
    stepped = site.read_text().replace(f"127.0.0.1:{SITE_PORTS['v2']} down;", f"127.0.0.1:{SITE_PORTS['v2']};", 1)
    assert stepped != site.read_text()
    site.write_text(stepped)
    # Someone edited the daemon's config by hand.
    config = prov.root / "etc/nginx-canary/config.yaml"
    config.write_text(config.read_text() + "# local edit\n")

    out, commands = prov.run()
    assert site.read_text() == stepped
    assert config.read_bytes() == (CONF_D / DAEMON_YAML).read_bytes()
    changing = [c for c in commands if not QUERIES.match(c)]
    assert changing == ["systemctl reload nginx-canary.service"], changing
    assert "provision: reloaded nginx-canary" in out

    # A code change in the synced folder reinstalls the package and restarts what runs it.
    (prov.repo / "nginx_canary" / "__init__.py").write_text(
        (prov.repo / "nginx_canary" / "__init__.py").read_text() + "# changed\n")
    out, commands = prov.run()
    changing = [c for c in commands if not QUERIES.match(c)]
    assert changing[0] == f"pip install --quiet --disable-pip-version-check {prov.repo}"
    assert sorted(changing[1:]) == sorted(["systemctl restart nginx-canary-demo-app@v1.service",
                                           "systemctl restart nginx-canary-demo-app@v2.service",
                                           "systemctl restart nginx-canary.service"])
    out, commands = prov.run()
    assert out.strip() == "provision: nothing to change"


# -- the fleet: vagrant/fleet/Vagrantfile and provision.sh's roles etcd, app, nginx -----------------------

FLEET_ENV = {"etcd": {"ETCD_ADDR": "192.168.56.10"},
             "app": {},
             "nginx": {"APP_ADDR": "192.168.56.20", "ETCD_URL": "http://192.168.56.10:2379", "FLEET_NAME": "shop",
                       "FLEET_HOST": "lb-2"}}


def fleet_vms(tmp_path: Path, env: Dict[str, str]) -> Dict[str, Dict[str, List[dict]]]:
    """Each VM's calls (``hostname=``, ``network``, ``provision``) of the fleet's Vagrantfile, by VM name."""
    calls = vagrantfile_calls(tmp_path, env, FLEET_VAGRANTFILE)
    vms: Dict[str, Dict[str, List[dict]]] = {}
    for name, found in calls.items():
        match = re.fullmatch(r"config\.vm\.define\((.+?)\)\.vm\.(.+)", name)
        if match:
            vms.setdefault(match.group(1), {})[match.group(2)] = found
    assert [c["args"][0] for c in calls["config.vm.define"]] == list(vms)
    return vms


def test_fleet_vagrantfile_passes_ruby_c():
    result = subprocess.run([tool("ruby", "ruby"), "-c", str(FLEET_VAGRANTFILE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stdout + result.stderr


def test_fleet_vagrantfile_sets_up_etcd_an_app_vm_and_three_nginx_vms_wired_together(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NGINX_CANARY_FLEET")}
    vms = fleet_vms(tmp_path, env)
    assert list(vms) == ["etcd", "app", "lb-1", "lb-2", "lb-3"]
    calls = vagrantfile_calls(tmp_path, env, FLEET_VAGRANTFILE)
    assert calls["config.vm.box="][0]["args"] == ["debian/bookworm64"]
    (synced,) = calls["config.vm.synced_folder"]
    assert synced["args"] == ["../..", "/vagrant"] and (FLEET_VAGRANTFILE.parent / "../..").resolve() == REPO
    ips = {}
    for name, vm in vms.items():
        assert vm["hostname="][0]["args"] == [name]
        private = [c for c in vm["network"] if c["args"] == ["private_network"]]
        assert len(private) == 1
        ips[name] = private[0]["kwargs"]["ip"]
        # Every VM is provisioned by the same script, with its role.
        (provision,) = vm["provision"]
        assert provision["args"] == ["shell"]
        assert (FLEET_VAGRANTFILE.parent / provision["kwargs"]["path"]).resolve() == PROVISION
        role = {"etcd": "etcd", "app": "app"}.get(name, "nginx")
        assert provision["kwargs"]["args"] == [role]
        assert provision["kwargs"]["env"]["REPO"] == "/vagrant"
    assert len(set(ips.values())) == len(ips) and all(ip.startswith("192.168.56.") for ip in ips.values())
    assert vms["etcd"]["provision"][0]["kwargs"]["env"]["ETCD_ADDR"] == ips["etcd"]
    for i, name in enumerate(["lb-1", "lb-2", "lb-3"]):
        penv = vms[name]["provision"][0]["kwargs"]["env"]
        # The nginx VMs share the app VM and find etcd where the etcd VM listens (provision.sh's ETCD_PORT).
        assert penv["APP_ADDR"] == ips["app"]
        assert penv["ETCD_URL"] == f"http://{ips['etcd']}:{shell_var('ETCD_PORT')}"
        assert penv["FLEET_HOST"] == name and penv["FLEET_NAME"] == "shop"
        (forward,) = [c for c in vms[name]["network"] if c["args"] == ["forwarded_port"]]
        assert forward["kwargs"] == {"guest": 8080, "host": 8091 + i, "host_ip": "127.0.0.1", "auto_correct": True}


def test_fleet_vagrantfile_takes_two_nginx_vms_and_refuses_other_counts(tmp_path: Path):
    assert list(fleet_vms(tmp_path, {"NGINX_CANARY_FLEET_HOSTS": "2"})) == ["etcd", "app", "lb-1", "lb-2"]
    stub = tmp_path / "vagrant_stub.rb"
    result = subprocess.run([tool("ruby", "ruby"), str(stub), str(FLEET_VAGRANTFILE)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "NGINX_CANARY_FLEET_HOSTS": "4"})
    assert result.returncode != 0 and "NGINX_CANARY_FLEET_HOSTS must be 2 or 3, not 4" in result.stderr


@pytest.mark.parametrize("role", ["etcd", "app", "nginx"])
def test_provision_fleet_roles_twice_change_nothing_the_second_time(role: str, tmp_path: Path):
    prov = Provisioner(tmp_path)
    prov.env.update(FLEET_ENV[role])
    out, commands = prov.run(role)
    root = prov.root
    assert "nothing to change" not in out and out.strip().splitlines()[-1].startswith("provision: done: ")
    installs = [c for c in commands if c.startswith("apt-get install")]
    venv = root / VENV.lstrip("/")
    if role == "etcd":
        assert "etcd-server" in installs[0] and " nginx" not in installs[0]
        default = (root / "etc/default/etcd").read_text()
        assert "ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379,http://192.168.56.10:2379\n" in default
        assert "ETCD_ADVERTISE_CLIENT_URLS=http://192.168.56.10:2379\n" in default
        assert (prov.state / "active-etcd.service").exists() and (prov.state / "enabled-etcd.service").exists()
        assert not venv.exists() and not (root / "etc/nginx").exists()
    elif role == "app":
        for version, port in (("v1", SITE_PORTS["v1"]), ("v2", SITE_PORTS["v2"])):
            assert (root / f"etc/default/nginx-canary-demo-app-{version}").read_text() == (
                f"HOST=0.0.0.0\nPORT={port}\n")  # the nginx VMs reach it; /__admin answers loopback only
            assert (prov.state / f"active-nginx-canary-demo-app@{version}.service").exists()
        assert " nginx " not in f"{installs[0]} " and not (root / "etc/nginx").exists()
        assert not (root / "etc/systemd/system/nginx-canary.service").exists()
    else:
        assert " nginx " in f"{installs[0]} " and "nginx -t -q" in commands
        assert (root / "etc/nginx/conf.d" / LOG_FORMAT).read_bytes() == (CONF_D / LOG_FORMAT).read_bytes()
        assert (root / "etc/nginx/conf.d" / SITE).read_bytes() != (CONF_D / SITE).read_bytes()  # the fleet's own
        assert not (root / "etc/default").exists()
        starts = [c for c in commands if re.match(r"systemctl (start|restart) ", c)]
        assert [c.split()[-1] for c in starts] == ["nginx.service", "nginx-canary.service"]  # no demo apps here
    before = prov.tree()
    out, commands = prov.run(role)
    assert prov.tree() == before
    assert [c for c in commands if not QUERIES.match(c)] == []
    assert out.strip() == "provision: nothing to change"


def test_a_fleet_hosts_site_passes_nginx_t_and_its_yaml_is_the_fleets(nginx_bin: str, tmp_path: Path):
    from nginx_canary.config.settings import parse_settings
    from nginx_canary.errors import CanaryError

    prov = Provisioner(tmp_path)
    prov.env.update(FLEET_ENV["nginx"])
    prov.run("nginx")
    site_path = prov.root / "etc/nginx/conf.d" / SITE  # after the log format it uses, in name order
    yaml_path = prov.root / "etc/nginx-canary/config.yaml"
    assert stat.S_IMODE(yaml_path.stat().st_mode) == 0o640
    assert insecure_paths([str(yaml_path), str(site_path)]) == []

    # The daemon's loader reads the YAML: the fleet section as the Vagrantfile wired it.
    settings = parse_settings(yaml_path.read_text(), str(yaml_path))
    fleet = settings.fleet
    assert fleet is not None
    assert (list(fleet.etcd), fleet.name, fleet.host, fleet.allow_plaintext) == (
        ["http://192.168.56.10:2379"], "shop", "lb-2", True)
    # Without the opt-in, the loader refuses http to an etcd that is not on loopback: the opt-in is needed.
    with pytest.raises(CanaryError, match="allow_plaintext"):
        parse_settings(re.sub(r"(?m)^  allow_plaintext: true.*\n", "", yaml_path.read_text()), "no-opt-in.yaml")
    (rollout,) = settings.rollouts.values()
    assert rollout.upstream == UPSTREAM and list(rollout.canary) == [f"192.168.56.20:{SITE_PORTS['v2']}"]

    # The site: upstream `backend` is the app VM's v1 and v2 (the rollout's canary), and it passes nginx -t
    # where Debian's nginx.conf would read it, beside the log format it uses.
    (backend,) = [u for u in load_config(str(site_path)).upstreams if u.name == UPSTREAM]
    assert [s.address for s in backend.servers] == [f"192.168.56.20:{SITE_PORTS['v1']}",
                                                     f"192.168.56.20:{SITE_PORTS['v2']}"]
    assert [s.down for s in backend.servers] == [False, True]
    example = ExampleSite(nginx_bin, tmp_path / "example").write()
    text = localize(site_path.read_text(), example.prefix, example.root).replace("listen 8080;", "listen 127.0.0.1:8080;")
    (example.prefix / "conf.d" / site_path.name).write_text(text)
    result = example.nginx("-t")
    assert "test is successful" in result.stderr
    assert str(example.prefix / "logs" / "nginx-canary-site.access.log") in text


def test_provision_refuses_an_unknown_role_or_a_missing_fleet_setting_and_changes_nothing(tmp_path: Path):
    prov = Provisioner(tmp_path)
    bad = prov.attempt("proxy")
    assert bad.returncode == 2 and "unknown role 'proxy': demo, etcd, app or nginx" in bad.stderr
    prov.env.update({**FLEET_ENV["nginx"], "FLEET_HOST": "lb 1; rm -rf /"})
    bad = prov.attempt("nginx")
    assert bad.returncode == 2 and "role nginx needs FLEET_HOST set to this host's name in the fleet" in bad.stderr
    prov.env.update({"FLEET_HOST": "lb-1", "ETCD_URL": "http://192.168.56.10:2379/v3"})
    assert prov.attempt("nginx").returncode == 2
    assert prov.tree() == {} and prov.log.read_text() == ""
