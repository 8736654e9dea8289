"""A click group whose commands from other modules are imported only when one is run or listed."""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional

import click


class LazyGroup(click.Group):
    """``click.Group`` plus ``lazy_commands``: name -> ``"module:attribute"`` of a click command.

    A lazy command's module is imported the first time the command is
    looked up (to run it, or to list it in ``--help``).
    """

    def __init__(self, *args: Any, lazy_commands: Optional[Dict[str, str]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: Dict[str, str] = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        """Raises TypeError when a lazy entry does not name a click command under that name (a wiring bug)."""
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            module, _, attribute = self.lazy_commands[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command) or command.name != cmd_name:
                raise TypeError(f"{self.lazy_commands[cmd_name]} is not the click command {cmd_name!r}")
            self.add_command(command)
        return super().get_command(ctx, cmd_name)
