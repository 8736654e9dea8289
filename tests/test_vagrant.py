"""vagrant/: what can be checked without a VM (CI cannot run one).

* provision.sh is shellcheck-clean, installs exactly the conf.d/ examples that
  tests/test_examples.py proves valid (and the unit files of the repo), and is
  idempotent: run twice under a temporary root with stand-ins for apt-get,
  dpkg-query, python3 (venv + pip), systemctl and nginx, the second run changes
  no file and asks for no install, enable, start, restart or reload.
* The Vagrantfile passes ``ruby -c`` and, evaluated with a stand-in for
  Vagrant's API, sets up the VM the README describes.
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
from tests.test_examples import CONF_D, DAEMON_YAML, EXAMPLES, LOG_FORMAT, SITE, SITE_PORTS, UPSTREAM

REPO = Path(__file__).resolve().parent.parent
VAGRANT = REPO / "vagrant"
PROVISION = VAGRANT / "provision.sh"
VAGRANTFILE = VAGRANT / "Vagrantfile"
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
    found = re.findall(r'(?m)^if (install_file|install_once) 0[0-7]{3} "\$REPO/([^"]+)" "\$ROOT(/[^"]+)"; then$',
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


def vagrantfile_calls(tmp_path: Path, env: Dict[str, str]) -> Dict[str, List[dict]]:
    stub = tmp_path / "vagrant_stub.rb"
    stub.write_text(VAGRANT_STUB)
    result = subprocess.run([tool("ruby", "ruby"), str(stub), str(VAGRANTFILE)], capture_output=True, text=True,
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
    # (conf.d/prometheus/ holds Prometheus rules, for a Prometheus server, not for this VM.)
    assert sorted(p.name for p in CONF_D.iterdir() if p.is_file()) == sorted(EXAMPLES)
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
    assert f"ExecStart={VENV}/bin/python -m nginx_canary.demo.app --host 127.0.0.1 --port ${{PORT}}" in app_unit
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

    def run(self) -> Tuple[str, List[str]]:
        """Run provision.sh; its output and the commands the stand-ins saw."""
        self.log.write_text("")
        result = subprocess.run(["bash", str(self.repo / "vagrant" / "provision.sh")], capture_output=True, text=True,
                                env=self.env, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout, self.log.read_text().splitlines()

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
    assert (root / "etc/default/nginx-canary-demo-app-v1").read_text() == f"PORT={SITE_PORTS['v1']}\n"
    assert (root / "etc/default/nginx-canary-demo-app-v2").read_text() == f"PORT={SITE_PORTS['v2']}\n"
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
