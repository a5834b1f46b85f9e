"""The Flask application factory: `create_app(config=None)`.

Run it with ``flask --app app run`` (development), ``gunicorn 'app:create_app()'``
(production, see the Procfile) or any ``flask --app app ...`` command.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dotenv import load_dotenv
from flask import Flask, current_app, has_app_context
from sqlalchemy.orm import Session

import log_privacy
from billing.paywall import Billing, SqlEntitlements, validate_billing_config
from config import (
    ROOT,
    Settings,
    check_production,
    database_url,
    is_development,
    load_settings,
    reveal,
)
from conversation.responders import billing_keyword
from conversation.runtime import FlowRuntime, load_runtime, store_flow_versions
from conversation.turn import TurnService, TurnSettings
from conversation.versions import SqlFlowArchive
from conversation.voice import Transcriber, VoiceNotes
from curation.erasure import delete_my_data
from delivery.outbound import rest_sender, send_stored, twilio_sender
from delivery.outbox import Settings as DeliverySettings
from engine.flow import FlowError, FlowSet
from engine.ports import SystemClock
from engine.runner import Runner
from engine.templating import Templates
from engine.validate import load_flows
from handover import hooks
from handover.routing import closed_note, human_request
from integrations.http import HttpxHTTP, allowed_env, env_names
from integrations.liquid import install as install_liquid
from integrations.openai import openai_llm
from integrations.twilio import TwilioMedia, TwilioSender, split_body
from models import db, init_db
from tasks import init_celery


@dataclass
class Parley:
    """The app's container: the settings, the flows, the runner and the services built from them.

    Built once by `create_app`; the edges (web/, cli/, tasks/) ask it for
    services and settings, and services get their collaborators and settings
    from here, never from Flask's globals.

    Attributes:
        flows: The loaded flows (empty when they failed to load under the CLI).
        runner: The flow runner.
        settings: The app's settings, parsed once.
        flow_error: Why the flows did not load, when they did not.
        runtime: The responder settings (set by `load_runtime` in `create_app`).
    """

    flows: FlowSet
    runner: Runner
    settings: Settings
    flow_error: FlowError | None = None
    runtime: FlowRuntime | None = None

    @cached_property
    def turn_settings(self) -> TurnSettings:
        """How turns claim contacts (``TURN_LEASE_*``) and where handover steps go."""
        settings = self.settings
        return TurnSettings(
            lease_seconds=settings.turn_lease_seconds,
            lease_wait_seconds=settings.turn_lease_wait_seconds,
            deadline_seconds=settings.turn_deadline_seconds,
            handover_queue=settings.handover_queue,
            agent_app=bool(settings.agent_webhook_url),
        )

    @cached_property
    def delivery(self) -> DeliverySettings:
        """How sends through the Twilio REST API are made and retried."""
        return DeliverySettings.from_settings(self.settings)

    def turns(self, session: Session | None = None) -> TurnService:
        """The turn service on `session` (default: the current app context's)."""
        if self.flow_error is not None:
            raise self.flow_error
        session = session if session is not None else db.session
        settings, runtime = self.settings, self.runtime
        assert runtime is not None, "create_app sets the runtime"
        billing = self.billing(session)
        hours, clock = runtime.settings.after_hours, self.runner.clock
        return TurnService(
            session,
            self.runner,
            split_body,
            entitlements=SqlEntitlements(billing),
            responders=runtime.responders(
                self,
                session,
                [
                    billing_keyword(billing),
                    delete_my_data(session, settings.delete_keyword),
                    human_request(session, settings, hours, clock),
                ],
            ),
            settings=self.turn_settings,
            handover_note=lambda: closed_note(settings.handover_closed_message, hours, clock),
            voice=self.voice,
        )

    @cached_property
    def voice(self) -> VoiceNotes | None:
        """Voice notes' transcription (``voice_notes`` in ``_settings.yaml``), or None: off.

        The media come from Twilio with the account's credentials; the
        transcription goes through the chat model's client (``OPENAI_*``). A
        queued turn gives each of the two calls a third of ``TURN_LEASE_SECONDS``.
        """
        runtime, settings = self.runtime, self.settings
        if runtime is None or runtime.settings.voice_notes is None:
            return None
        fetcher = TwilioMedia(
            settings.twilio_account_sid or "",
            reveal(settings.twilio_auth_token) or "",
            api_base_url=settings.twilio_api_base,
        )
        transcriber: Transcriber = self.runner.llm  # type: ignore[assignment]
        return VoiceNotes(
            runtime.settings.voice_notes,
            fetcher,
            transcriber,
            timeout=settings.turn_lease_seconds / 3,
        )

    def billing(self, session: Session | None = None) -> Billing:
        """The paywall's state on `session` (default: the current app context's)."""
        return Billing(session if session is not None else db.session, self.settings)

    def sender(self) -> TwilioSender | None:
        """A new Twilio REST sender (the caller closes it), or None without Twilio settings."""
        return rest_sender(self.settings)

    @contextmanager
    def twilio_sender(self) -> Iterator[TwilioSender | None]:
        """A Twilio REST sender for a block of sends, closed at its end."""
        with twilio_sender(self.settings) as sender:
            yield sender

    def send_stored(
        self,
        message_ids: Sequence[int],
        session: Session | None = None,
        sender: TwilioSender | None = None,
    ) -> int:
        """Send stored outbound messages through the Twilio REST API (`send_stored`).

        Args:
            message_ids: Outbound message ids, in the order to send them.
            session: The session (default: the current app context's).
            sender: The sender to use; default: one made for these sends and closed.

        Returns:
            How many were accepted by Twilio.
        """
        session = session if session is not None else db.session
        if sender is not None:
            return send_stored(session, sender, message_ids, self.delivery)
        with self.twilio_sender() as own:
            return send_stored(session, own, message_ids, self.delivery)

    def resume_paid(self, contact_ids: list[int]) -> None:
        """Carry on the executions of contacts who just paid, and send what they say.

        Called by the Stripe webhook after it committed the change; each
        contact waiting at a paywall gets the welcome text and the flow's next
        messages through the Twilio REST API.
        """
        turns = self.turns()
        with self.twilio_sender() as sender:
            for contact_id in contact_ids:
                self.send_stored(turns.resume_payment(contact_id), turns.session, sender)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app.

    Args:
        config: Settings that override the environment (tests pass these), by
            environment variable name; strings as in the environment (``"0"``,
            ``"6"``) or typed values. Names that are not Parley settings
            (``TESTING``, ``WTF_CSRF_ENABLED``...) go to Flask's ``app.config``.
            ``TESTING=True`` also skips reading ``.env``.

    Raises:
        ConfigError: a setting is malformed (the message and ``variables`` name
            it), ``PAYWALL_ENABLED`` is on while a Stripe setting it needs is
            missing, or, in production (`config.is_development`), ``SECRET_KEY``
            or ``PUBLIC_BASE_URL`` is unset.
        FlowError: a flow in ``FLOWS_DIR`` is invalid; the message lists every
            problem with ``file:line``. (Under the ``flask`` command the error is
            kept instead, so that ``flask flows validate`` can report it.)
    """
    overrides = dict(config or {})
    if not overrides.get("TESTING"):
        load_dotenv(ROOT / ".env")
    settings = load_settings(overrides)
    validate_billing_config(settings)

    app = Flask(__name__, instance_path=str(ROOT / "instance"))
    # Flask's own configuration: what Flask and its extensions read.
    names = Settings.variable_names()
    app.config.update({name: value for name, value in overrides.items() if name not in names})
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(
        reveal(settings.database_url), Path(app.instance_path)
    )
    app.config.setdefault("MIGRATIONS_DIR", ROOT / "migrations")
    app.config["DEVELOPMENT"] = is_development(
        settings,
        testing=bool(app.config.get("TESTING")),
        debug=app.debug,
        cli=os.environ.get("FLASK_RUN_FROM_CLI") == "true",
    )
    if not app.config["DEVELOPMENT"]:
        check_production(settings)
    # Development only: a key per process (one process, and a restart logs you out).
    app.config["SECRET_KEY"] = reveal(settings.secret_key) or secrets.token_hex(32)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    # hide_parameters: an SQL error's message (logged, or shown in a traceback)
    # names the statement but not its values: phone numbers, names, message bodies.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True, "hide_parameters": True}
    if settings.database_pool_size:  # a turn holds a connection: >= worker threads
        # A hard cap (no overflow), so that processes x pool size is what
        # PostgreSQL's max_connections must allow.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"].update(
            pool_size=settings.database_pool_size, max_overflow=0
        )
    _configure_logging(settings, testing=bool(app.config.get("TESTING")))

    init_db(app)
    # A development run with no model answers with the scripted demo (not the tests).
    scripted_demo = app.config["DEVELOPMENT"] and not app.config.get("TESTING")
    parley = _load_parley(settings, scripted_demo)
    app.extensions["parley"] = parley
    init_celery(app)  # only with REDIS_URL: turns are then queued (tasks/)
    parley.runtime = load_runtime(parley, strict=not _running_flows_command())
    app.extensions["parley_runtime"] = parley.runtime
    parley.flows.archive = SqlFlowArchive(lambda: db.session)  # old versions, read per turn
    with app.app_context():
        store_flow_versions(db.session, db.engine, list(parley.flows.flows.values()))
        db.session.remove()

    from web import register_blueprints

    register_blueprints(app)
    from cli import register_commands

    register_commands(app)
    return app


def _load_parley(settings: Settings, scripted_demo: bool = False) -> Parley:
    allowlist = settings.http_env_allowlist
    templates = Templates(Path(settings.prompts_dir), env_names=env_names(allowlist))
    install_liquid(templates)  # Studio's Liquid in imported flows (integrations/liquid.py)
    llm = openai_llm(
        api_key=reveal(settings.openai_api_key),
        base_url=settings.openai_base_url,
        timeout=settings.openai_timeout,
        max_retries=settings.openai_max_retries,
        max_user_chars=settings.prompt_max_contact_chars,
        scripted_demo=scripted_demo,
    )
    flow_error = None
    try:
        flows = load_flows(Path(settings.flows_dir), templates)
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
        default_model=settings.openai_model,
        http=HttpxHTTP(),
        env=allowed_env(allowlist, os.environ),  # only the names the operator allowed
    )
    return Parley(flows=flows, runner=runner, settings=settings, flow_error=flow_error)


@sa.event.listens_for(Session, "after_commit")
def _announce_agent_events(session: Session) -> None:
    """POST the agent events a transaction wrote (`handover.hooks`) once it committed.

    The listener is on every session, so the app whose settings apply is the
    current one; outside an app context nothing is announced.
    """
    pending = hooks.take_pending(session)
    parley = current_app.extensions.get("parley") if pending and has_app_context() else None
    if parley is not None:
        hooks.announce(parley.settings, pending)


def _running_flows_command() -> bool:
    return os.environ.get("FLASK_RUN_FROM_CLI") == "true" and "flows" in sys.argv[1:]


def _configure_logging(settings: Settings, testing: bool) -> None:
    log_privacy.install()  # no phone number in clear in any log line
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logger = logging.getLogger("parley")
    logger.setLevel(level)
    if not logger.handlers and not testing:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        if level == logging.INFO and os.environ.get("FLASK_RUN_FROM_CLI") == "true":
            from cli import one_shot

            if one_shot(sys.argv):  # `flask paywall off`: its output is the answer, not logs
                handler.setLevel(logging.WARNING)
        logger.addHandler(handler)
