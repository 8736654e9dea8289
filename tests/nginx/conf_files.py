"""Config trees written for the tests: a main file and its includes under one root."""

from __future__ import annotations

from pathlib import Path


def write(root: Path, files: dict) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "nginx.conf"
