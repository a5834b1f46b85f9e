"""SQLAlchemy 2 models and the SQL implementation of `engine.ports`.

`db` is the Flask-SQLAlchemy extension; `init_db(app)` registers it with the
SQLite settings that make one writer at a time safe (WAL, a busy timeout,
``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from models.billing import (
    Entitlement,
    EntitlementChange,
    PaymentLink,
    Setting,
    SettingChange,
    StripeEvent,
)
from models.curation import AuditEvent, ConversationTag, Curation, RedactedMessage, User
from models.delivery import Delivery
from models.entities import OPEN_STATUSES, Base, Contact, Conversation, Execution, Message
from models.flow_tests import FlowTestRun
from models.handover import AgentPresence, ControlEvent
from models.runtime import FlowVersion, OptOut
from models.studio import ExecutionRequest

db = SQLAlchemy(model_class=Base)
migrate = Migrate()

#: How long a SQLite writer waits for the lock before failing, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def init_db(app: Flask) -> None:
    """Register the database and Alembic (``flask db ...``) with the app."""
    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.config["MIGRATIONS_DIR"]), render_as_batch=True)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)


def _configure_sqlite(engine: sa.Engine) -> None:
    """WAL, a busy timeout and BEGIN IMMEDIATE: SQLite's one writer, queued.

    pysqlite's own transaction handling is switched off so that every
    transaction starts with ``BEGIN IMMEDIATE``: a contact's turn takes the
    write lock before it reads the execution, so two turns never interleave.
    (SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL".)
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


__all__ = [
    "OPEN_STATUSES",
    "AgentPresence",
    "AuditEvent",
    "Base",
    "Contact",
    "ControlEvent",
    "Conversation",
    "ConversationTag",
    "Curation",
    "Delivery",
    "Entitlement",
    "EntitlementChange",
    "Execution",
    "ExecutionRequest",
    "FlowTestRun",
    "FlowVersion",
    "Message",
    "OptOut",
    "PaymentLink",
    "RedactedMessage",
    "Setting",
    "SettingChange",
    "StripeEvent",
    "User",
    "db",
    "init_db",
    "migrate",
]
