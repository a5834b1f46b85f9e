"""The landing page and the health check."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app, render_template, url_for

from curation.users import any_user
from integrations.scripted import describe_llm
from models import db

bp = Blueprint("home", __name__)


@bp.get("/")
def index() -> str:
    """What is running, what is missing, and where to go next."""
    config = current_app.config
    parley = current_app.extensions["parley"]
    base = config.get("PUBLIC_BASE_URL")
    webhook = (
        (base.rstrip("/") + "/twilio/messages")
        if base
        else url_for("twilio.inbound_message", _external=True)
    )
    try:
        has_users = any_user(db.session)
    except sa.exc.SQLAlchemyError:  # not migrated yet: the page says so rather than failing
        has_users = None
    finally:
        db.session.rollback()
    return render_template(
        "admin/home.html",
        flows=list(parley.flows.flows.values()),
        webhook=webhook,
        token=bool(config.get("TWILIO_AUTH_TOKEN")),
        model=describe_llm(parley.runner.llm),
        has_users=has_users,
        development=bool(config.get("DEVELOPMENT")),
    )


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    """``{"status": "ok"}`` when the database answers, else 503."""
    try:
        db.session.execute(sa.text("SELECT 1"))
        db.session.rollback()
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok"}, 200
