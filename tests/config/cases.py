"""What the config tests share: the minimal config, one `key: value` line per level, and refusal checks."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import pytest

from nginx_canary.config.model import DaemonSettings
from nginx_canary.config.settings import parse_settings
from nginx_canary.errors import BadInputError, ExitCode, SettingsError

SOURCE = "cfg.yaml"

MINIMAL = """\
rollouts:
  app:
    upstream: backend
    canary: ["10.0.0.12:8080"]
"""

HOOK = "https://hooks.example.com/canary"
DURATION = "expected a duration like 250ms, 10s or 5m, got "
# Each level: the text with one `{key}: {value}` line, that line's number,
# and the key path prefix errors carry. In a list entry that needs a `url`,
# `{url}` is a url line after it (empty when the key tried is `url` itself).
LEVELS: Dict[str, Tuple[str, int, str]] = {
    "top": ("{key}: {value}\n", 1, ""),
    "nginx": ("nginx:\n  {key}: {value}\n", 2, "nginx."),
    "rollout": (MINIMAL + "    {key}: {value}\n", 5, "rollouts.app."),
    "analysis": (MINIMAL + "    analysis:\n      {key}: {value}\n", 6, "rollouts.app.analysis."),
    "webhook": (MINIMAL + "    webhooks:\n      - {key}: {value}\n{url}", 6, "rollouts.app.webhooks[0]."),
    "gates": (MINIMAL + "    gates:\n      {key}: {value}\n", 6, "rollouts.app.gates."),
    "http_check": (MINIMAL + "    analysis:\n      http_checks:\n        - {key}: {value}\n{url}", 7,
                   "rollouts.app.analysis.http_checks[0]."),
    # Only for keys refused before the section's required keys are looked for
    # (tests/config/test_fleet.py builds whole fleet sections).
    "fleet": ("fleet:\n  {key}: {value}\n", 2, "fleet."),
}
URL_LINES = {"webhook": f"        url: {HOOK}\n", "http_check": "          url: http://127.0.0.1:8082/health\n"}


def parse(text: str) -> DaemonSettings:
    return parse_settings(text, SOURCE)


def refused(text: str, source: str = SOURCE) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        parse_settings(text, source)
    error = info.value
    assert "\n" not in str(error)
    assert isinstance(error, BadInputError) and error.exit_code == ExitCode.BAD_INPUT
    return error


def assert_refused(text: str, line: int, key: Optional[str], fragment: str) -> SettingsError:
    error = refused(text)
    where = f"{SOURCE}:{line}: {key}: " if key else f"{SOURCE}:{line}: "
    assert str(error).startswith(where), str(error)
    assert fragment in str(error), str(error)
    assert (error.file, error.line, error.key) == (SOURCE, line, key)
    return error


def setting(level: str, key: str, value: str) -> str:
    url = "" if key == "url" else URL_LINES.get(level, "")
    return LEVELS[level][0].format(key=key, value=value, url=url)


def read_back(parsed: DaemonSettings, level: str, key: str) -> Any:
    owner: Any = {
        "top": parsed,
        "nginx": parsed.nginx,
        "rollout": parsed.rollouts.get("app"),
        "analysis": parsed.rollouts["app"].analysis if "app" in parsed.rollouts else None,
        "webhook": parsed.rollouts["app"].webhooks[0] if level == "webhook" else None,
        "gates": parsed.rollouts["app"].gates if level == "gates" else None,
        "http_check": parsed.rollouts["app"].analysis.http_checks[0] if level == "http_check" else None,
    }[level]
    return getattr(owner, key)
