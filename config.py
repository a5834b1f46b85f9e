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
    "TWILIO_API_BASE": None,
    "PUBLIC_BASE_URL": None,
    "FLOWS_DIR": str(ROOT / "flows"),
    "PROMPTS_DIR": str(ROOT / "prompts"),
    "SECRET_KEY": None,
    # "development" or "production"; unset: development under TESTING, Flask's debug
    # mode or the flask command (flask run, flask chat), production otherwise (gunicorn,
    # Celery workers). Production requires SECRET_KEY and PUBLIC_BASE_URL.
    "PARLEY_ENV": None,
    # The largest request body accepted, in bytes (Flask's MAX_CONTENT_LENGTH; 413 past it).
    "MAX_CONTENT_LENGTH": "262144",
    # The most characters of one user message (the contact's words, alone or in the
    # flow's prompt template) sent to the model; the rest is cut (integrations/openai.py).
    "PROMPT_MAX_CONTACT_CHARS": "8192",
    "LOG_LEVEL": "INFO",
    "PAYWALL_ENABLED": None,
    "PAYWALL_GRACE_DAYS": "3",
    "STRIPE_SECRET_KEY": None,
    "STRIPE_WEBHOOK_SECRET": None,
    "STRIPE_PRICE_ID": None,
    "STRIPE_PAYMENT_LINK_URL": None,
    "STRIPE_SUCCESS_URL": None,
    "STRIPE_CANCEL_URL": None,
    "STRIPE_API_BASE": None,
    "BILLING_KEYWORD": "billing",
    "STUDIO_TOKEN": None,
    # Seconds an LLM call may take in a Studio step endpoint (one attempt; Studio waits 10 s).
    "STUDIO_LLM_TIMEOUT": "7",
    # Environment variables `http` steps may read as {{ env.NAME }} (names, comma-separated).
    "HTTP_ENV_ALLOWLIST": None,
    # Admin console and APIs (web/admin/, web/api/).
    "INTERNAL_API_TOKEN": None,
    "PUBLIC_API_CORS_ORIGINS": None,
    "PUBLIC_AGENT_NAME": "Parley coach",
    "REDACTION_REGION": "US",
    "DELETE_KEYWORD": "delete my data",
    # Failed console logins (curation/login_limits.py), in the limits package's notation:
    # per client address over all accounts; per client on one account (growing windows:
    # the backoff); per account over all clients (one short window, above what one client
    # may try in it, so that nobody can keep an account closed for long). Counted in
    # Redis when REDIS_URL is set, else in the process's memory.
    "LOGIN_LIMITS_PER_CLIENT": "10 per minute; 50 per hour",
    "LOGIN_LIMITS_PER_ACCOUNT_CLIENT": "5 per minute; 20 per hour",
    "LOGIN_LIMITS_PER_ACCOUNT": "30 per minute",
    # Proxies in front of the app that append the client's address to X-Forwarded-For
    # (Heroku's router: 1). The login limits count each client by the address that many
    # entries from the right; 0 (clients connect directly): by the connection's address.
    "TRUSTED_PROXY_HOPS": "0",
    # Delivery at scale (delivery/dispatcher.py, delivery/outbox.py, tasks/).
    "REDIS_URL": None,
    "DATABASE_POOL_SIZE": None,
    "CELERY_VISIBILITY_TIMEOUT": "300",
    "TWILIO_SEND_DEADLINE": "30",
    "TWILIO_RETRY_BACKOFF": "0.5",
    "SWEEP_GRACE_SECONDS": "60",
    "SWEEP_INTERVAL_SECONDS": "30",
    "TURN_DEBOUNCE_MS": "0",
    # Turn leases (conversation/turn.py): how long a claim holds a contact, and
    # how long an inline turn waits for the contact's previous turn.
    "TURN_LEASE_SECONDS": "45",
    "TURN_LEASE_WAIT_SECONDS": "10",
    # Human handover (handover/control.py): what a contact writes to ask for a
    # person (comma-separated, whole message, any case), the queue it goes to,
    # what the contact is told, and how long a handover waits for an agent.
    "HANDOVER_PHRASES": "agent,human",
    "HANDOVER_QUEUE": "support",
    "HANDOVER_MESSAGE": "Connecting you with a person. Someone will answer here shortly.",
    "HANDOVER_CONFIRM_SECONDS": "300",
    "HANDOVER_EXPIRED_MESSAGE": "Nobody is free right now, so I'll carry on. Ask again any time.",
    "HANDOVER_EXPIRED_TO": "bot",
    "HANDOVER_CLOSED_MESSAGE": "Our team is away now; someone will answer from {opening}.",
    # Agent apps (handover/hooks.py, web/agent_api.py): signed webhooks and API.
    "AGENT_WEBHOOK_URL": None,
    "AGENT_WEBHOOK_SECRET": None,
    "AGENT_WEBHOOK_DEADLINE": "10",
    "AGENT_WEBHOOK_BACKOFF": "0.5",
    "AGENT_API_TOKEN": None,
}

#: Settings whose values must never be printed.
SECRETS = frozenset(
    {
        "OPENAI_API_KEY",
        "TWILIO_AUTH_TOKEN",
        "SECRET_KEY",
        "DATABASE_URL",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STUDIO_TOKEN",
        "INTERNAL_API_TOKEN",
        "REDIS_URL",
        "AGENT_WEBHOOK_SECRET",
        "AGENT_API_TOKEN",
    }
)

_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no", ""})


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it.

    Attributes:
        variables: The names of the environment variables at fault.
    """

    def __init__(self, message: str, variables: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.variables = list(variables)


def flag(name: str, value: Any) -> bool:
    """A boolean setting: ``1``/``true``/``on``/``yes`` or ``0``/``false``/``off``/``no``.

    Unset (None) and the empty string are False; case and surrounding spaces are ignored.

    Raises:
        ConfigError: any other value, naming the variable.
    """
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(
        f"{name}={value!r} is not a boolean: use one of 1, true, on, yes, 0, false, off, no",
        [name],
    )


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


ENVIRONMENTS = ("development", "production")


def is_development(settings: Mapping[str, Any], debug: bool = False, cli: bool = False) -> bool:
    """Whether Parley runs for development (a laptop, the tests) rather than production.

    ``PARLEY_ENV`` decides when it is set. Unset, ``TESTING``, Flask's debug mode
    (`debug`: ``FLASK_DEBUG``, ``flask run --debug``) and the ``flask`` command
    (`cli`: ``flask run``, whose server Flask's docs say is not for production,
    ``flask chat``, ``flask flows validate``...) mean development; anything else
    (gunicorn, a Celery worker: what the Procfile serves with) means production.

    Raises:
        ConfigError: ``PARLEY_ENV`` is neither ``development`` nor ``production``.
    """
    value = str(settings.get("PARLEY_ENV") or "").strip().lower()
    if value:
        if value not in ENVIRONMENTS:
            raise ConfigError(
                f"PARLEY_ENV={value!r}: use development or production", ["PARLEY_ENV"]
            )
        return value == "development"
    return bool(settings.get("TESTING")) or debug or cli


def check_production(settings: Mapping[str, Any]) -> None:
    """Refuse to run in production without the settings production needs.

    ``SECRET_KEY`` signs the session cookie: without it each gunicorn worker
    would make its own key, and a session made by one would be refused by the
    others. ``PUBLIC_BASE_URL`` is the URL Twilio signs: without it the signed
    URL would be built from the request's ``Host``, which the client chooses.

    Raises:
        ConfigError: one of them is unset; the message names each and says how
            to set it.
    """
    missing = [name for name in ("SECRET_KEY", "PUBLIC_BASE_URL") if not settings.get(name)]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} must be set in production: SECRET_KEY to a long random "
            "string shared by every process (python -c 'import secrets; "
            "print(secrets.token_hex(32))'), PUBLIC_BASE_URL to the https:// URL Twilio calls. "
            "For a development run set PARLEY_ENV=development.",
            missing,
        )


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
