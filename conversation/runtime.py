"""The flow runtime around the engine: responder settings, flow versions, moderation.

`load_runtime` reads ``FLOWS_DIR/_settings.yaml`` and switches moderation on
when it is configured; `store_flow_versions` keeps each loaded flow as a
version, so executions finish on theirs. The app factory calls both (app.py);
nothing here knows Flask.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from conversation.responder_settings import ResponderSettings, load_settings
from conversation.responders import flow_responders
from conversation.turn import Responder
from conversation.versions import store_versions
from engine.flow import Flow, FlowError
from engine.moderation import Moderator
from engine.ports import Moderation
from models.runtime import FlowVersion

if TYPE_CHECKING:
    from app import Parley

log = logging.getLogger("parley.runtime")


@dataclass
class FlowRuntime:
    """What the runtime keeps on the app (``app.extensions["parley_runtime"]``).

    Attributes:
        settings: The responders' settings.
        settings_error: Why the settings file did not load (under ``flask flows``
            commands only; elsewhere the app refuses to start).
    """

    settings: ResponderSettings
    settings_error: FlowError | None = None

    def responders(
        self, parley: Parley, session: Session, others: Sequence[Responder] = ()
    ) -> list[Responder]:
        """The responders of a turn, bound to the turn's session."""
        if self.settings_error is not None:
            raise self.settings_error
        runner = parley.runner
        return flow_responders(session, self.settings, runner.clock, runner.templates, others)


def load_runtime(parley: Parley, strict: bool = True) -> FlowRuntime:
    """Load the responder settings; give the runner a moderator when moderation is configured.

    Args:
        parley: The loaded flows and runner.
        strict: Raise on an invalid settings file (False under ``flask flows``,
            which must run to report it).

    Raises:
        FlowError: the settings file is invalid (every problem with ``file:line``).
    """
    settings_error = None
    try:
        settings = load_settings(Path(parley.settings.flows_dir))
    except FlowError as error:
        if strict:
            raise
        settings, settings_error = ResponderSettings(), error
    if settings.moderation is not None:
        # The chat model's client also answers moderation (integrations/openai.py).
        port: Moderation = parley.runner.llm  # type: ignore[assignment]
        parley.runner.moderator = Moderator(port, settings.moderation)
        log.info("moderation.on model=%s", settings.moderation.model)
    return FlowRuntime(settings=settings, settings_error=settings_error)


def store_flow_versions(session: Session, engine: sa.Engine, flows: list[Flow]) -> None:
    """Keep each loaded flow as a version (executions finish on theirs); never raises.

    Before the database is migrated (`flask db upgrade` itself builds the app
    first) nothing is stored. Ends with an empty pool: no connection is shared
    with forked workers (gunicorn), nor left open by an app that never serves.
    """
    try:
        if not sa.inspect(engine).has_table(FlowVersion.__tablename__):
            log.debug("flow.versions.not_stored reason=not_migrated")
            return
        added = store_versions(session, flows)
        session.commit()
        if added:
            log.info("flow.versions.stored count=%d", added)
    except DBAPIError as error:
        session.rollback()
        log.warning("flow.versions.not_stored reason=%s", type(error.orig).__name__)
    finally:
        session.close()
        engine.dispose()
