"""The ``nginx-canary`` command line."""

from __future__ import annotations

from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    """The ``nginx-canary`` entry point (``nginx_canary.cli:main``); see :func:`nginx_canary.cli.app.main`."""
    # Imported here so that ``nginx_canary.cli.context`` and the others load without the whole CLI.
    from nginx_canary.cli.app import main as run

    run(argv)
