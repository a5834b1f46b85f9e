""".env.example lists every setting of config.py, with its default, and nothing stale.

Works whether config.py keeps its ``DEFAULTS`` mapping or becomes a typed
pydantic-settings class (``Settings``: each field's alias, else its name in
capitals, is the environment variable).
"""

from __future__ import annotations

import re
from pathlib import Path

import config

EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"
#: Read by the Procfile and the Makefile, not by config.py.
PROCESS_SETTINGS = {"PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "WORKER_THREADS", "WORKER_NICE"}


def settings_in_config() -> dict[str, object]:
    """Each setting's environment variable and default, as config.py declares them."""
    if hasattr(config, "DEFAULTS"):
        return dict(config.DEFAULTS)
    fields = config.Settings.model_fields  # type: ignore[attr-defined]
    found = {}
    for name, field in fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        found[alias or field.alias or name.upper()] = field.default
    return found


def listed() -> dict[str, str]:
    """``NAME`` → the value shown on its ``# NAME=value`` line."""
    text = EXAMPLE.read_text(encoding="utf-8")
    return dict(re.findall(r"^# ([A-Z][A-Z0-9_]+)=(.*)$", text, flags=re.MULTILINE))


def test_every_setting_is_listed_with_its_default():
    shown = listed()
    missing = sorted(set(settings_in_config()) - set(shown))
    assert missing == [], f"add these to .env.example: {missing}"
    for name, default in settings_in_config().items():
        if default is None or name in ("FLOWS_DIR", "PROMPTS_DIR"):  # paths: said in words
            assert shown[name] == "", name
        else:
            assert shown[name] == _as_written(default), name


def test_nothing_stale_is_listed():
    stale = sorted(set(listed()) - set(settings_in_config()) - PROCESS_SETTINGS)
    assert stale == [], f"no longer settings of config.py: {stale}"


def _as_written(default: object) -> str:
    """A default as the file writes it: ``60`` for 60.0, nothing for an unset flag."""
    if default is False:  # an unset flag is off; the file says so in words
        return ""
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)
