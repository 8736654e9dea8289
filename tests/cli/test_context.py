"""Where the CLI's values come from: options, then the daemon's YAML when it exists, then defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nginx_canary.cli import context as cli_context

from nginx_canary.config import settings
from nginx_canary.cli.context import CliContext
from nginx_canary.errors import BadInputError, ExitCode, SettingsError

CONFIG = """\
nginx:
  conf: /srv/nginx/nginx.conf
  binary: /srv/nginx/sbin/nginx
  prefix: /srv/nginx
state_dir: /srv/state
control_socket: /srv/run/ctl.sock
rollouts:
  app: {upstream: backend, canary: ["10.0.0.2:80"]}
"""


def test_the_default_path_is_the_daemons():
    assert cli_context.DEFAULT_CONFIG_PATH == settings.DEFAULT_CONFIG_PATH


def test_without_a_config_file_the_built_in_defaults_apply(tmp_path: Path):
    ctx = CliContext(default_config_path=str(tmp_path / "absent.yaml"))
    assert ctx.settings.nginx_conf == "/etc/nginx/nginx.conf"
    assert ctx.settings.state_dir == "/var/lib/nginx-canary"
    assert ctx.settings.nginx_prefix is None
    assert ctx.socket == "/run/nginx-canary/control.sock"


def test_values_come_from_the_daemon_config_when_it_exists(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    ctx = CliContext(default_config_path=str(path))
    assert ctx.settings.nginx_conf == "/srv/nginx/nginx.conf"
    assert ctx.settings.nginx_bin == "/srv/nginx/sbin/nginx"
    assert ctx.settings.nginx_prefix == "/srv/nginx"
    assert ctx.settings.state_dir == "/srv/state"
    assert ctx.socket == "/srv/run/ctl.sock"


def test_options_beat_the_config(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    ctx = CliContext(config_file=str(path), nginx_conf=str(tmp_path / "other.conf"), state_dir=str(tmp_path / "s"),
                     socket_path="/tmp/x.sock")
    assert ctx.settings.nginx_conf == str(tmp_path / "other.conf")
    # The config's prefix belongs to the config's nginx.conf, not to another one.
    assert ctx.settings.nginx_prefix is None
    assert ctx.settings.state_dir == str(tmp_path / "s")
    assert ctx.socket == "/tmp/x.sock"


def test_an_explicit_config_must_exist(tmp_path: Path):
    ctx = CliContext(config_file=str(tmp_path / "absent.yaml"))
    with pytest.raises(SettingsError, match="cannot read the config"):
        ctx.settings
    with pytest.raises(SettingsError, match="must not be empty"):
        CliContext(config_file="").settings


def test_an_invalid_default_config_is_an_error_naming_it(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("nginx: {conf: relative.conf}\n")
    with pytest.raises(SettingsError) as err:
        CliContext(default_config_path=str(path)).settings
    assert str(path) in str(err.value) and "absolute path" in str(err.value)


def test_an_unreadable_default_config_is_skipped_but_required_by_the_daemon(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    ctx = CliContext(default_config_path=str(path), can_read=lambda p: False)
    assert ctx.settings.state_dir == "/var/lib/nginx-canary"
    assert ctx.socket == "/run/nginx-canary/control.sock"
    required = ctx.daemon_settings(required=True)
    assert required is not None and required.state_dir == "/srv/state"


def test_a_state_dir_others_can_write_is_refused_before_any_command_uses_it(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    ctx = CliContext(default_config_path=str(tmp_path / "absent.yaml"), state_dir=str(state))
    assert ctx.settings.state_dir == str(state)  # root's own 0700 directory under pytest's 0700 base: fine
    os.chown(state, 12345, -1)
    ctx = CliContext(default_config_path=str(tmp_path / "absent.yaml"), state_dir=str(state))
    with pytest.raises(BadInputError) as err:
        ctx.settings
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert f"refusing to use state dir {state}: {state} is writable by user 12345 (its owner)" in str(err.value)


def test_allow_insecure_permissions_of_the_daemon_config_makes_it_a_warning(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG + "allow_insecure_permissions: true\n")
    warnings = []
    ctx = CliContext(default_config_path=str(path), state_dir=str(tmp_path / "s"), warn=warnings.append,
                     state_dir_writers=lambda p: [(p, "everyone")])
    assert ctx.settings.state_dir == str(tmp_path / "s")
    assert warnings == [f"{tmp_path / 's'} is writable by everyone (allowed by allow_insecure_permissions)"]
    path.write_text(CONFIG)
    ctx = CliContext(default_config_path=str(path), state_dir=str(tmp_path / "s"), warn=warnings.append,
                     state_dir_writers=lambda p: [(p, "everyone")])
    with pytest.raises(BadInputError, match="allow_insecure_permissions: true in the daemon's config"):
        ctx.settings
