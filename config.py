"""Configuration from environment variables (twelve-factor), with a `.env` in development.

`Settings` is every setting Parley reads, typed and documented, parsed once by
`load_settings` in the app factory; services get it (or the part they need)
from the container that `create_app` builds, never from Flask's ``app.config``.
Each field has the name of its environment variable (``turn_lease_seconds`` is
``TURN_LEASE_SECONDS``). Secrets are `SecretStr`: they are read here, shown as
``**********`` in reprs and logs, and revealed (`reveal`) only where they are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent

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


def _boolean(value: Any) -> bool:
    """A boolean setting: ``1``/``true``/``on``/``yes`` or ``0``/``false``/``off``/``no``.

    Unset (None) and the empty string are False; case and surrounding spaces are ignored.

    Raises:
        ValueError: any other value (`load_settings` names the variable).
    """
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("use one of 1, true, on, yes, 0, false, off, no")


#: A boolean setting with the spellings of `_boolean` (and no others: pydantic's own
#: ``t``, ``f``, ``y`` and ``n`` are refused, as they always were).
Flag = Annotated[bool, BeforeValidator(_boolean)]


def reveal(secret: SecretStr | None) -> str | None:
    """The value of a secret setting, or None when it is not set."""
    return secret.get_secret_value() if secret is not None else None


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


class Settings(BaseSettings):
    """Every setting of Parley, from the environment (and ``.env``), parsed once.

    Build it with `load_settings`, which turns a malformed value into a
    `ConfigError` naming the variable. An empty value counts as unset (the
    default applies). Fields are documented below: meaning, unit, default.
    """

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )

    # Storage and queues.

    database_url: SecretStr | None = None
    """``DATABASE_URL``: the database (``postgres://`` is accepted and rewritten for
    psycopg). Default: a SQLite file under ``instance/``. Secret: it may hold a password."""

    database_pool_size: Annotated[int, Field(ge=1)] | None = None
    """``DATABASE_POOL_SIZE``: connections per process, a hard cap (no overflow), so that
    processes × pool size is what PostgreSQL's ``max_connections`` must allow. At least
    the worker's threads that run turns. Default: SQLAlchemy's (5, plus 10 overflow)."""

    redis_url: SecretStr | None = None
    """``REDIS_URL``: the Celery broker. Set: turns run on Celery workers (tasks/);
    unset (default): the webhook answers inline. Secret: it may hold a password."""

    celery_visibility_timeout: Annotated[int, Field(ge=1)] = 300
    """``CELERY_VISIBILITY_TIMEOUT``: seconds after which a task a worker took but did
    not finish is delivered again (the worker died). Default 300."""

    sweep_grace_seconds: Annotated[float, Field(ge=0)] = 60.0
    """``SWEEP_GRACE_SECONDS``: the sweeper leaves turns and sends younger than this
    alone (they are probably under way), in seconds. Default 60."""

    sweep_interval_seconds: Annotated[float, Field(gt=0)] = 30.0
    """``SWEEP_INTERVAL_SECONDS``: seconds between two sweeps (Celery beat). Default 30."""

    # Flows.

    flows_dir: Path = ROOT / "flows"
    """``FLOWS_DIR``: the folder of the flows (``*.yaml``, ``_settings.yaml``).
    Default: ``flows/`` beside this file."""

    prompts_dir: Path = ROOT / "prompts"
    """``PROMPTS_DIR``: the folder of the flows' Jinja prompts. Default: ``prompts/``."""

    http_env_allowlist: str | None = None
    """``HTTP_ENV_ALLOWLIST``: environment variables ``http`` steps may read as
    ``{{ env.NAME }}``, names separated by commas or spaces. Default: none."""

    # Turns.

    turn_lease_seconds: Annotated[float, Field(gt=0)] = 45.0
    """``TURN_LEASE_SECONDS``: how long a turn's claim holds a contact, in seconds; a
    worker that dies leaves a lease that expires after this. Default 45."""

    turn_lease_wait_seconds: Annotated[float, Field(ge=0)] = 10.0
    """``TURN_LEASE_WAIT_SECONDS``: how long an inline turn waits for the same contact's
    previous turn, in seconds. Default 10."""

    turn_deadline_seconds: Annotated[float, Field(gt=0, le=14)] = 12.0
    """``TURN_DEADLINE_SECONDS``: the most seconds an inline turn (answered in the
    webhook's TwiML) may spend running its flow: every model and HTTP call gets the
    time that is left; past it the contact gets the flow's fallback and the turn is
    recorded ``timed_out``. Twilio waits 15 s for a webhook's answer
    (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides), so at
    most 14. Default 12."""

    turn_debounce_ms: Annotated[float, Field(ge=0)] = 0.0
    """``TURN_DEBOUNCE_MS``: with queued turns, messages of a contact waiting at an ``llm``
    step that arrive within this many milliseconds are answered as one turn. Default 0 (off)."""

    # LLM.

    openai_api_key: SecretStr | None = None
    """``OPENAI_API_KEY``: the OpenAI API key. Unset with ``OPENAI_BASE_URL`` unset too:
    no LLM, and ``llm`` steps answer with the flow's fallback. Default: unset."""

    openai_base_url: str | None = None
    """``OPENAI_BASE_URL``: the API root of any OpenAI-compatible server, e.g.
    ``http://localhost:8000/v1``. Default: OpenAI's."""

    openai_model: str = "gpt-4o-mini"
    """``OPENAI_MODEL``: the model of ``llm`` steps that name none. Default ``gpt-4o-mini``."""

    openai_timeout: Annotated[float, Field(gt=0)] = 6.0
    """``OPENAI_TIMEOUT``: seconds per HTTP attempt of a model call. Default 6, so that an
    inline turn, one retry included, stays inside Twilio's 15 s."""

    openai_max_retries: Annotated[int, Field(ge=0)] = 1
    """``OPENAI_MAX_RETRIES``: retries of a failed model call (connection errors, 408,
    409, 429, 5xx). Default 1."""

    # Twilio.

    twilio_account_sid: str | None = None
    """``TWILIO_ACCOUNT_SID``: the account that sends through the REST API. Default: unset
    (messages that must go out through the REST API are marked failed)."""

    twilio_auth_token: SecretStr | None = None
    """``TWILIO_AUTH_TOKEN``: signs Twilio's webhooks (``X-Twilio-Signature``) and
    authenticates REST calls. Webhooks are refused while it is unset. Default: unset."""

    twilio_api_base: str | None = None
    """``TWILIO_API_BASE``: the REST API's root (tests point it at a fake). Default: Twilio's."""

    public_base_url: str | None = None
    """``PUBLIC_BASE_URL``: the URL Twilio calls, e.g. ``https://parley.example.org``;
    webhook signatures are checked against it, status callbacks and payment return pages
    use it. Default: unset."""

    twilio_send_deadline: Annotated[float, Field(gt=0)] = 30.0
    """``TWILIO_SEND_DEADLINE``: seconds within which a REST send is retried. Default 30."""

    twilio_retry_backoff: Annotated[float, Field(ge=0)] = 0.5
    """``TWILIO_RETRY_BACKOFF``: the first backoff step of REST retries, in seconds; waits
    are random up to ``backoff × 2ⁿ``, at most 8 s. Default 0.5."""

    # Web, logs, admin and APIs.

    secret_key: SecretStr | None = None
    """``SECRET_KEY``: signs the admin console's sessions and CSRF tokens. Required in
    production (one key shared by every process); in development, unset means a random
    key per process (sessions end on restart)."""

    parley_env: Literal["development", "production"] | None = None
    """``PARLEY_ENV``: ``development`` or ``production``. Unset (default): development
    under tests, Flask's debug mode or the ``flask`` command (``flask run``, ``flask
    chat``), production otherwise (gunicorn, Celery workers). Production requires
    ``SECRET_KEY`` and ``PUBLIC_BASE_URL`` (`check_production`)."""

    max_content_length: Annotated[int, Field(ge=1024)] = 262_144
    """``MAX_CONTENT_LENGTH``: the largest request body accepted, in bytes (Flask's
    setting; 413 past it). Default 262144 (256 KiB)."""

    prompt_max_contact_chars: Annotated[int, Field(ge=1)] = 8192
    """``PROMPT_MAX_CONTACT_CHARS``: the most characters of one user message (the
    contact's words, alone or in the flow's prompt) sent to the model; the rest is cut
    (integrations/openai.py). Default 8192."""

    log_level: str = "INFO"
    """``LOG_LEVEL``: the level of the ``parley`` loggers (``DEBUG``, ``INFO``,
    ``WARNING``...). Default ``INFO``."""

    internal_api_token: SecretStr | None = None
    """``INTERNAL_API_TOKEN``: the bearer token of the internal API (``/api/internal``);
    unset (default), that API refuses every request."""

    public_api_cors_origins: str | None = None
    """``PUBLIC_API_CORS_ORIGINS``: origins (comma-separated, or ``*``) allowed to call
    the public API from a browser. Default: none (no CORS header)."""

    public_agent_name: str = "Parley coach"
    """``PUBLIC_AGENT_NAME``: the bot's name in published conversations. Default
    ``Parley coach``."""

    redaction_region: str = "US"
    """``REDACTION_REGION``: the region (ISO 3166 code) whose phone numbers and
    addresses redaction looks for. Default ``US``."""

    login_limits_per_client: str = "10 per minute; 50 per hour"
    """``LOGIN_LIMITS_PER_CLIENT``: failed console logins one client address may make,
    over all accounts, in the ``limits`` notation (``N per minute; M per hour``); past
    it the form answers 429 with ``Retry-After``. Default ``10 per minute; 50 per hour``."""

    login_limits_per_account_client: str = "5 per minute; 20 per hour"
    """``LOGIN_LIMITS_PER_ACCOUNT_CLIENT``: failed logins one client may make on one
    account (the backoff for a guesser). Default ``5 per minute; 20 per hour``."""

    login_limits_per_account: str = "30 per minute"
    """``LOGIN_LIMITS_PER_ACCOUNT``: failed logins on one account from all clients, in
    one short window, so nobody outside can keep an account closed for long. Default
    ``30 per minute``."""

    trusted_proxy_hops: Annotated[int, Field(ge=0, le=10)] = 0
    """``TRUSTED_PROXY_HOPS``: how many proxies in front of the app add themselves to
    ``X-Forwarded-For`` (Heroku's router: 1); the client address is read that many hops
    from the right. Default 0 (clients connect directly)."""

    @field_validator(
        "login_limits_per_client", "login_limits_per_account_client", "login_limits_per_account"
    )
    @classmethod
    def _login_windows(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError("write windows as '10 per minute; 50 per hour'") from None
        return value

    delete_keyword: str = "delete my data"
    """``DELETE_KEYWORD``: the message (case, accents and punctuation ignored) with which
    a contact erases their data. Default ``delete my data``."""

    # Twilio Studio.

    studio_token: SecretStr | None = None
    """``STUDIO_TOKEN``: the token Studio's HTTP widgets send to Parley's step and
    entitlement endpoints; unset (default), those endpoints refuse every request."""

    studio_llm_timeout: Annotated[float, Field(gt=0)] = 7.0
    """``STUDIO_LLM_TIMEOUT``: seconds a model call may take in a Studio step endpoint
    (one attempt, never more than ``OPENAI_TIMEOUT``; Studio waits 10 s). Default 7."""

    # Paywall and Stripe.

    paywall_enabled: Flag = False
    """``PAYWALL_ENABLED``: whether paywalled flows ask for payment (1/true/on/yes or
    0/false/off/no), until ``flask paywall on|off`` switches it at runtime. Default off."""

    paywall_grace_days: Annotated[float, Field(ge=0, le=365)] = 3.0
    """``PAYWALL_GRACE_DAYS``: days a ``past_due`` subscription still lets its contact in
    (0 to 365). Default 3."""

    billing_keyword: str = "billing"
    """``BILLING_KEYWORD``: the message (any case) that asks for the customer portal.
    Default ``billing``."""

    stripe_secret_key: SecretStr | None = None
    """``STRIPE_SECRET_KEY``: the Stripe API key. Required with the paywall on."""

    stripe_webhook_secret: SecretStr | None = None
    """``STRIPE_WEBHOOK_SECRET``: verifies Stripe's webhook signatures. Required with the
    paywall on."""

    stripe_price_id: str | None = None
    """``STRIPE_PRICE_ID``: the subscription's price; contacts pay through Checkout
    Sessions. Either this or ``STRIPE_PAYMENT_LINK_URL`` with the paywall on."""

    stripe_payment_link_url: str | None = None
    """``STRIPE_PAYMENT_LINK_URL``: a Payment Link to send instead of Checkout Sessions."""

    stripe_success_url: str | None = None
    """``STRIPE_SUCCESS_URL``: where Checkout sends a contact who paid. Default:
    ``PUBLIC_BASE_URL/stripe/return?result=success``."""

    stripe_cancel_url: str | None = None
    """``STRIPE_CANCEL_URL``: where Checkout sends a contact who gave up. Default:
    ``PUBLIC_BASE_URL/stripe/return?result=cancel``."""

    stripe_api_base: str | None = None
    """``STRIPE_API_BASE``: the Stripe API's root (tests point it at a fake). Default: Stripe's."""

    # Human handover.

    handover_phrases: str = "agent,human"
    """``HANDOVER_PHRASES``: what a contact writes to ask for a person (comma-separated,
    the whole message, any case). Default ``agent,human``."""

    handover_queue: str = "support"
    """``HANDOVER_QUEUE``: the queue those requests go to. Default ``support``."""

    handover_message: str = "Connecting you with a person. Someone will answer here shortly."
    """``HANDOVER_MESSAGE``: what the contact is told when handed over."""

    handover_confirm_seconds: Annotated[float, Field(ge=0)] = 300.0
    """``HANDOVER_CONFIRM_SECONDS``: how long a handover waits for an agent to accept it,
    in seconds. Default 300."""

    handover_expired_message: str = (
        "Nobody is free right now, so I'll carry on. Ask again any time."
    )
    """``HANDOVER_EXPIRED_MESSAGE``: what the contact is told when nobody accepted in time."""

    handover_expired_to: Literal["bot", "next_agent"] = "bot"
    """``HANDOVER_EXPIRED_TO``: where a handover nobody accepted goes: ``bot`` (default)
    or ``next_agent`` (the next available agent, then the bot)."""

    handover_closed_message: str = "Our team is away now; someone will answer from {opening}."
    """``HANDOVER_CLOSED_MESSAGE``: added outside opening hours (``after_hours`` of
    ``_settings.yaml``); ``{opening}`` becomes the next opening time."""

    # Agent apps.

    agent_webhook_url: str | None = None
    """``AGENT_WEBHOOK_URL``: where control events and messages of conversations agents
    hold are POSTed, signed. Default: unset (nothing is sent)."""

    agent_webhook_secret: SecretStr | None = None
    """``AGENT_WEBHOOK_SECRET``: the key that signs those webhooks (``X-Parley-Signature``);
    nothing is sent while it is unset."""

    agent_webhook_deadline: Annotated[float, Field(ge=0)] = 10.0
    """``AGENT_WEBHOOK_DEADLINE``: seconds within which a webhook is retried. Default 10."""

    agent_webhook_backoff: Annotated[float, Field(ge=0)] = 0.5
    """``AGENT_WEBHOOK_BACKOFF``: the first backoff step of webhook retries, in seconds.
    Default 0.5."""

    agent_api_token: SecretStr | None = None
    """``AGENT_API_TOKEN``: the bearer token of the agent API; unset (default), that API
    refuses every request."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        # As in the environment (`env_ignore_empty`): an override of None or ""
        # (tests, `create_app({...})`) means "use the default".
        if isinstance(data, Mapping):
            return {name: value for name, value in data.items() if value not in (None, "")}
        return data

    @classmethod
    def variable_names(cls) -> frozenset[str]:
        """The environment variables of the settings (``TURN_LEASE_SECONDS``...)."""
        return frozenset(name.upper() for name in cls.model_fields)


def is_development(
    settings: Settings, testing: bool, debug: bool = False, cli: bool = False
) -> bool:
    """Whether Parley runs for development (a laptop, the tests) rather than production.

    ``PARLEY_ENV`` decides when it is set. Unset, `testing` (``TESTING``), Flask's
    debug mode (`debug`: ``FLASK_DEBUG``, ``flask run --debug``) and the ``flask``
    command (`cli`: ``flask run``, whose server Flask's docs say is not for
    production, ``flask chat``, ``flask flows validate``...) mean development;
    anything else (gunicorn, a Celery worker: what the Procfile serves with) means
    production.
    """
    if settings.parley_env is not None:
        return settings.parley_env == "development"
    return testing or debug or cli


def check_production(settings: Settings) -> None:
    """Refuse to run in production without the settings production needs.

    ``SECRET_KEY`` signs the session cookie: without it each gunicorn worker
    would make its own key, and a session made by one would be refused by the
    others. ``PUBLIC_BASE_URL`` is the URL Twilio signs: without it the signed
    URL would be built from the request's ``Host``, which the client chooses.

    Raises:
        ConfigError: one of them is unset; the message names each and says how
            to set it.
    """
    missing = [
        name
        for name, value in (
            ("SECRET_KEY", settings.secret_key),
            ("PUBLIC_BASE_URL", settings.public_base_url),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} must be set in production: SECRET_KEY to a long random "
            "string shared by every process (python -c 'import secrets; "
            "print(secrets.token_hex(32))'), PUBLIC_BASE_URL to the https:// URL Twilio calls. "
            "For a development run set PARLEY_ENV=development.",
            missing,
        )


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """The settings: defaults, then the environment, then `overrides`.

    Args:
        overrides: Values by environment variable name (``{"TURN_LEASE_SECONDS": "1"}``),
            as strings like the environment's or as typed values; tests pass these.
            Names that are not settings are ignored (Flask's own, such as ``TESTING``).

    Raises:
        ConfigError: a value is malformed; ``variables`` names every one at fault.
    """
    names = Settings.variable_names()
    values = {name.lower(): value for name, value in (overrides or {}).items() if name in names}
    try:
        return Settings(**values)
    except ValidationError as error:
        problems = [
            (str(problem["loc"][0]).upper(), problem["input"], problem["msg"])
            for problem in error.errors()
            if problem["loc"]
        ]
        variables = list(dict.fromkeys(name for name, _, _ in problems))
        shown = "; ".join(
            f"{name}={_shown(name, value)}: {message.removeprefix('Value error, ')}"
            for name, value, message in problems
        )
        raise ConfigError(
            f"malformed settings: {shown}. Fix them in the environment (or .env).", variables
        ) from None


def _shown(name: str, value: Any) -> str:
    """A malformed value for an error message: never a secret's."""
    field = Settings.model_fields[name.lower()]
    return "(secret)" if "SecretStr" in repr(field.annotation) else repr(value)
