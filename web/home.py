"""The landing page and the health check."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, url_for

from curation.users import has_users_if_readable
from integrations.scripted import describe_llm
from models import db
from models.health import database_answers

bp = Blueprint("home", __name__)


@bp.get("/")
def index() -> str:
    """What is running, what is missing, and where to go next."""
    parley = current_app.extensions["parley"]
    settings = parley.settings
    base = settings.public_base_url
    webhook = (
        (base.rstrip("/") + "/twilio/messages")
        if base
        else url_for("twilio.inbound_message", _external=True)
    )
    # Not migrated yet (None): the page says so rather than failing.
    has_users = has_users_if_readable(db.session)
    return render_template(
        "admin/home.html",
        flows=list(parley.flows.flows.values()),
        webhook=webhook,
        token=settings.twilio_auth_token is not None,
        model=describe_llm(parley.runner.llm),
        has_users=has_users,
        development=bool(current_app.config.get("DEVELOPMENT")),
    )


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    """``{"status": "ok"}`` when the database answers, else 503."""
    if not database_answers(db.session):
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok"}, 200
