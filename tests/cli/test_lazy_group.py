"""Commands of other modules are loaded when named: every one is reachable, and analyze does not load them."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from nginx_canary.cli.app import LAZY_COMMANDS, cli
from nginx_canary.cli.lazy_group import LazyGroup
from nginx_canary.cli.rollout import COMMANDS
from nginx_canary.logs.format import COMBINED

FORMAT = COMBINED + ' "$upstream_addr" $upstream_response_time'


def test_every_rollout_command_is_named_in_the_lazy_table() -> None:
    assert {command.name for command in COMMANDS} | {"replay", "snapshots"} == set(LAZY_COMMANDS)


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_each_lazy_command_loads_under_its_name(name: str) -> None:
    with click.Context(cli) as ctx:
        command = cli.get_command(ctx, name)
    assert command is not None and command.name == name


def test_help_lists_every_command_once() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].split("Exit codes:")[0].splitlines()
              if line.startswith("  ") and line.strip()]
    assert listed == sorted(set(LAZY_COMMANDS) | {"analyze", "set-weight", "upstreams", "validate"})


def test_a_wrong_entry_is_a_type_error_not_a_silent_other_command() -> None:
    group = LazyGroup(name="g", lazy_commands={"status": "nginx_canary.cli.rollout:start"})
    with click.Context(group) as ctx, pytest.raises(TypeError, match="is not the click command 'status'"):
        group.get_command(ctx, "status")


def test_analyze_does_not_import_the_rollout_or_process_machinery(tmp_path) -> None:
    """What keeps analyze's start-up short: no rollout commands, psutil, watchdog or edit machinery."""
    log = tmp_path / "access.log"
    log.write_text('192.0.2.1 - - [28/Nov/2024:03:20:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8" '
                   '"10.0.0.1:80" 0.010\n')
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    probe = (
        "import sys\n"
        "from nginx_canary.cli.app import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "heavy = ['nginx_canary.cli.rollout', 'nginx_canary.nginx.operations', 'nginx_canary.nginx.transaction',\n"
        "         'psutil', 'watchdog', 'yaml', 'requests']\n"
        "print(code, [m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, "--nginx-conf", str(tmp_path / "none.conf"),
                          "--state-dir", str(state), "analyze", str(log), "--log-format", FORMAT, "--json"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "0 []", (out.stdout, out.stderr)
