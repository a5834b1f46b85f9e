"""Wiring of the flow runtime into the app: responder settings, flow versions, timers.

`init_runtime(app)` runs in the app factory, after the flows are loaded: it
reads ``FLOWS_DIR/_settings.yaml``, stores each loaded flow as a version and
gives the runner the stored versions (so executions finish on theirs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import DBAPIError

from conversation.responder_settings import ResponderSettings, load_settings
from conversation.responders import flow_responders
from conversation.turn import Responder
from conversation.versions import SqlFlowArchive, store_versions
from engine.flow import FlowError
from engine.moderation import Moderator
from engine.ports import Moderation
from models import db
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

    def responders(self, parley: Parley, others: Sequence[Responder] = ()) -> list[Responder]:
        """The responders of a turn, bound to the current app context's session."""
        if self.settings_error is not None:
            raise self.settings_error
        runner = parley.runner
        return flow_responders(db.session, self.settings, runner.clock, runner.templates, others)


class _NotMigrated(Exception):
    """The database has no flow_version table yet."""


def init_runtime(app: Flask, parley: Parley, strict: bool = True) -> FlowRuntime:
    """Load the responder settings, store the flows' versions, give the runner old versions.

    Args:
        app: The app.
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
    parley.flows.archive = SqlFlowArchive(lambda: db.session)
    with app.app_context():
        try:
            if not sa.inspect(db.engine).has_table(FlowVersion.__tablename__):
                # Not migrated yet: `flask db upgrade` itself builds the app first.
                raise _NotMigrated
            added = store_versions(db.session, parley.flows.flows.values())
            db.session.commit()
            if added:
                log.info("flow.versions.stored count=%d", added)
        except _NotMigrated:
            log.debug("flow.versions.not_stored reason=not_migrated")
        except DBAPIError as error:
            db.session.rollback()
            log.warning("flow.versions.not_stored reason=%s", type(error.orig).__name__)
        finally:
            db.session.remove()
            # Start with an empty pool: no connection is shared with forked
            # workers (gunicorn), nor left open by an app that never serves.
            db.engine.dispose()
    if settings.moderation is not None:
        # The chat model's client also answers moderation (integrations/openai.py).
        port: Moderation = parley.runner.llm  # type: ignore[assignment]
        parley.runner.moderator = Moderator(port, settings.moderation)
        log.info("moderation.on model=%s", settings.moderation.model)
    runtime = FlowRuntime(settings=settings, settings_error=settings_error)
    app.extensions["parley_runtime"] = runtime
    return runtime
