"""The Flask application factory: `create_app(config=None)`.

Run it with ``flask --app app run`` (development), ``gunicorn 'app:create_app()'``
(production, see the Procfile) or any ``flask --app app ...`` command.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from flask import Flask
from sqlalchemy.orm import Session

import log_privacy
from billing.paywall import Billing, SqlEntitlements, validate_billing_config
from config import ROOT, ConfigError, check_production, database_url, is_development, load_config
from conversation.responders import billing_keyword
from conversation.runtime import FlowRuntime, init_runtime
from conversation.turn import TurnService, TurnSettings
from curation.erasure import delete_my_data
from delivery.outbound import send_stored, twilio_sender
from engine.flow import FlowError, FlowSet
from engine.ports import SystemClock
from engine.runner import Runner
from engine.templating import Templates
from engine.validate import load_flows
from handover.routing import closed_note, human_request
from integrations.http import HttpxHTTP, allowed_env, env_names
from integrations.liquid import install as install_liquid
from integrations.openai import llm_from_config
from integrations.twilio import split_body
from models import db, init_db
from tasks import init_celery


@dataclass
class Parley:
    """The app's container: the flows, the runner and the services built from them.

    Built once by `create_app`; the edges (web/, cli/, tasks/) ask it for
    services, which get their collaborators and settings from here, never
    from Flask's globals.

    Attributes:
        flows: The loaded flows (empty when they failed to load under the CLI).
        runner: The flow runner.
        config: The settings (the app's config mapping).
        flow_error: Why the flows did not load, when they did not.
        runtime: The responder settings (set by `init_runtime` in `create_app`).
    """

    flows: FlowSet
    runner: Runner
    config: Mapping[str, Any]
    flow_error: FlowError | None = None
    runtime: FlowRuntime | None = None

    def turns(self, session: Session | None = None) -> TurnService:
        """The turn service on `session` (default: the current app context's)."""
        if self.flow_error is not None:
            raise self.flow_error
        session = session if session is not None else db.session
        config, runtime = self.config, self.runtime
        assert runtime is not None, "create_app sets the runtime"
        billing = Billing(session, config)
        hours, clock = runtime.settings.after_hours, self.runner.clock
        return TurnService(
            session,
            self.runner,
            split_body,
            entitlements=SqlEntitlements(billing),
            responders=runtime.responders(
                self,
                [
                    billing_keyword(billing),
                    delete_my_data(session, config),
                    human_request(session, config, hours, clock),
                ],
            ),
            settings=TurnSettings(
                lease_seconds=float(config.get("TURN_LEASE_SECONDS") or 45),
                lease_wait_seconds=float(config.get("TURN_LEASE_WAIT_SECONDS") or 10),
                handover_queue=config.get("HANDOVER_QUEUE") or "support",
            ),
            handover_note=lambda: closed_note(config, hours, clock),
        )

    def resume_paid(self, contact_ids: list[int]) -> None:
        """Carry on the executions of contacts who just paid, and send what they say.

        Called by the Stripe webhook after it committed the change; each
        contact waiting at a paywall gets the welcome text and the flow's next
        messages through the Twilio REST API.
        """
        turns = self.turns()
        with twilio_sender(self.config) as sender:
            for contact_id in contact_ids:
                send_stored(turns.session, sender, turns.resume_payment(contact_id))


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app.

    Args:
        config: Settings that override the environment (tests pass these);
            ``TESTING=True`` also skips reading ``.env``.

    Raises:
        ConfigError: a paywall setting is malformed, or ``PAYWALL_ENABLED`` is on
            while a Stripe setting it needs is missing (the message names it); in
            production (`config.is_development`), ``SECRET_KEY`` or
            ``PUBLIC_BASE_URL`` is unset; ``MAX_CONTENT_LENGTH`` is malformed.
        FlowError: a flow in ``FLOWS_DIR`` is invalid; the message lists every
            problem with ``file:line``. (Under the ``flask`` command the error is
            kept instead, so that ``flask flows validate`` can report it.)
    """
    overrides = dict(config or {})
    if not overrides.get("TESTING"):
        load_dotenv(ROOT / ".env")
    settings = load_config(os.environ, overrides)
    validate_billing_config(settings)

    app = Flask(__name__, instance_path=str(ROOT / "instance"))
    app.config.update(settings)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(
        settings.get("DATABASE_URL"), Path(app.instance_path)
    )
    app.config.setdefault("MIGRATIONS_DIR", ROOT / "migrations")
    app.config["DEVELOPMENT"] = is_development(
        settings, debug=app.debug, cli=os.environ.get("FLASK_RUN_FROM_CLI") == "true"
    )
    if not app.config["DEVELOPMENT"]:
        check_production(settings)
    # Development only: a key per process (one process, and a restart logs you out).
    app.config["SECRET_KEY"] = settings.get("SECRET_KEY") or secrets.token_hex(32)
    app.config["MAX_CONTENT_LENGTH"] = _byte_count(settings.get("MAX_CONTENT_LENGTH"))
    # hide_parameters: an SQL error's message (logged, or shown in a traceback)
    # names the statement but not its values: phone numbers, names, message bodies.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True, "hide_parameters": True}
    if settings.get("DATABASE_POOL_SIZE"):  # a turn holds a connection: >= worker threads
        # A hard cap (no overflow), so that processes x pool size is what
        # PostgreSQL's max_connections must allow.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"].update(
            pool_size=int(settings["DATABASE_POOL_SIZE"]), max_overflow=0
        )
    _configure_logging(app)

    init_db(app)
    app.extensions["parley"] = _load_parley(app)
    init_celery(app)  # only with REDIS_URL: turns are then queued (tasks/)
    parley = app.extensions["parley"]
    parley.runtime = init_runtime(app, parley, strict=not _running_flows_command())

    from web import register_blueprints

    register_blueprints(app)
    from cli import register_commands

    register_commands(app)
    return app


def _load_parley(app: Flask) -> Parley:
    allowlist = app.config.get("HTTP_ENV_ALLOWLIST")
    templates = Templates(Path(app.config["PROMPTS_DIR"]), env_names=env_names(allowlist))
    install_liquid(templates)  # Studio's Liquid in imported flows (integrations/liquid.py)
    llm = llm_from_config(app.config)
    flow_error = None
    try:
        flows = load_flows(Path(app.config["FLOWS_DIR"]), templates)
    except FlowError as error:
        # The `flask flows ...` commands must run to report broken flows;
        # everything else (servers, `flask chat`) refuses to start.
        if not _running_flows_command():
            raise
        flows, flow_error = FlowSet(), error
    runner = Runner(
        flows=flows,
        templates=templates,
        llm=llm,
        clock=SystemClock(),
        default_model=app.config["OPENAI_MODEL"],
        http=HttpxHTTP(),
        env=allowed_env(allowlist, os.environ),  # only the names the operator allowed
    )
    return Parley(flows=flows, runner=runner, config=app.config, flow_error=flow_error)


def _running_flows_command() -> bool:
    return os.environ.get("FLASK_RUN_FROM_CLI") == "true" and "flows" in sys.argv[1:]


def _byte_count(value: Any) -> int | None:
    """``MAX_CONTENT_LENGTH`` as a number of bytes (None: no limit, if set empty)."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or int(text) < 1024:
        raise ConfigError(
            f"MAX_CONTENT_LENGTH={value!r}: a number of bytes, at least 1024",
            ["MAX_CONTENT_LENGTH"],
        )
    return int(text)


def _configure_logging(app: Flask) -> None:
    log_privacy.install()  # no phone number in clear in any log line
    level = getattr(logging, str(app.config.get("LOG_LEVEL", "INFO")).upper(), logging.INFO)
    logger = logging.getLogger("parley")
    logger.setLevel(level)
    if not logger.handlers and not app.config.get("TESTING"):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        if level == logging.INFO and os.environ.get("FLASK_RUN_FROM_CLI") == "true":
            from cli import one_shot

            if one_shot(sys.argv):  # `flask paywall off`: its output is the answer, not logs
                handler.setLevel(logging.WARNING)
        logger.addHandler(handler)
