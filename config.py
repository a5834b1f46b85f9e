"""Configuration from environment variables (twelve-factor), with a `.env` in development.

Every setting has the name of its environment variable. Secrets are read here
and nowhere else, and are never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

#: Settings and their defaults; None means "not set".
DEFAULTS: dict[str, Any] = {
    "DATABASE_URL": None,
    "OPENAI_API_KEY": None,
    "OPENAI_BASE_URL": None,
    "OPENAI_MODEL": "gpt-4o-mini",
    "OPENAI_TIMEOUT": "6",
    "OPENAI_MAX_RETRIES": "1",
    "TWILIO_ACCOUNT_SID": None,
    "TWILIO_AUTH_TOKEN": None,
    "PUBLIC_BASE_URL": None,
    "FLOWS_DIR": str(ROOT / "flows"),
    "PROMPTS_DIR": str(ROOT / "prompts"),
    "SECRET_KEY": None,
    "LOG_LEVEL": "INFO",
}

#: Settings whose values must never be printed.
SECRETS = frozenset({"OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "SECRET_KEY", "DATABASE_URL"})


def database_url(url: str | None, instance_path: Path) -> str:
    """The SQLAlchemy URL for `DATABASE_URL`.

    ``postgres://`` (Heroku's form) and ``postgresql://`` become
    ``postgresql+psycopg://`` (psycopg 3); unset means a SQLite file under
    `instance_path`.
    """
    if not url:
        return f"sqlite:///{instance_path / 'parley.sqlite3'}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_config(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> dict:
    """The settings: defaults, then the environment, then `overrides` (tests).

    Empty environment values count as unset.
    """
    settings = dict(DEFAULTS)
    for name in DEFAULTS:
        value = environ.get(name)
        if value:
            settings[name] = value
    settings.update(overrides or {})
    return settings
