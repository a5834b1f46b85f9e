"""Transcripts and their curation: list, search, read, redact, summarise, publish."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any, Literal

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from werkzeug.wrappers import Response

from curation import transcripts
from curation.curator import CurationError, Curator
from handover import inbox
from models import db
from web.admin import bp, requires
from web.api.problems import reasons
from web.api.schemas import TEXT_PATTERN

log = logging.getLogger("parley.web.admin")


def _int(value: str | None, name: str) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 18:
        abort(400, description=f"{name}: {value[:40]!r} is not a number")
    return int(text)


#: A search term or a filter's value: no control characters (PostgreSQL refuses NUL).
_TERM = Annotated[str, StringConstraints(max_length=200, pattern=TEXT_PATTERN)]
_DAY = Annotated[dt.date, Field(ge=dt.date(2000, 1, 1), le=dt.date(9998, 12, 31))]


class SearchArgs(BaseModel):
    """The conversations page's query string; an empty value means "any"."""

    model_config = ConfigDict(extra="ignore")

    q: _TERM = ""
    flow: _TERM = ""
    step: _TERM = ""
    channel: Literal["", "whatsapp", "sms"] = ""
    tag: _TERM = ""
    rating: int | None = Field(default=None, ge=1, le=5)
    published: Literal["", "yes", "no"] = ""
    moderated: Literal["", "yes"] = ""
    since: _DAY | None = None
    until: _DAY | None = None
    page: int = Field(default=1, ge=1, le=1_000_000)

    @field_validator("rating", "since", "until", "page", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip():
            return 1 if info.field_name == "page" else None
        return value


def _filters() -> transcripts.Filters:
    try:
        args = SearchArgs.model_validate(request.args.to_dict())
    except ValidationError as error:
        abort(400, description=reasons(error))
    return transcripts.Filters(
        query=args.q,
        flow=args.flow,
        step=args.step,
        channel=args.channel,
        tag=args.tag,
        rating=args.rating,
        published={"yes": True, "no": False}.get(args.published),
        moderated=args.moderated == "yes",
        since=args.since,
        until=args.until,
        page=args.page,
    )


def _curator() -> Curator:
    return Curator(
        db.session, current_user.email, current_app.extensions["parley"].settings.redaction_region
    )


@bp.get("/")
@requires("agent")
def index() -> Response:
    """The console's home: the conversations."""
    return redirect(url_for("admin.conversations"))


@bp.get("/conversations")
@requires("agent")
def conversations() -> str:
    """Search and filter conversations."""
    filters = _filters()
    page = transcripts.search(db.session, filters)
    options = transcripts.choices(db.session)
    args = {key: value for key, value in request.args.items() if key != "page"}
    return render_template(
        "admin/conversations.html", page=page, filters=filters, options=options, args=args
    )


@bp.get("/conversations/<int:conversation_id>")
@requires("agent")
def conversation(conversation_id: int) -> str:
    """A transcript, with its curation for curators."""
    return _render_conversation(conversation_id)


def _render_conversation(conversation_id: int, draft: dict | None = None, status: int = 200):
    found = transcripts.detail(db.session, conversation_id)
    if found is None:
        abort(404, description=f"no conversation {conversation_id}")
    body = render_template(
        "admin/conversation.html",
        conversation=found.conversation,
        contact=found.contact,
        suggestions=_curator().suggestions(conversation_id),
        curation=found.curation,
        tags=found.tags,
        draft=draft,
        events=found.events,
        who=inbox.names(db.session, found.contact),
    )
    return body, status


def _curate(conversation_id: int, change) -> Response:
    """Run one curation change, commit it, and go back to the conversation."""
    try:
        message = change(_curator())
        db.session.commit()
        if message:
            flash(message, "ok")
    except CurationError as error:
        db.session.rollback()
        flash(str(error), "error")
    return redirect(url_for("admin.conversation", conversation_id=conversation_id))


@bp.post("/conversations/<int:conversation_id>/redactions")
@requires("curator")
def redact(conversation_id: int) -> Response:
    """Accept the suggestions (all messages, or one) or store an edited text."""
    form = request.form
    message_id = _int(form.get("message_id"), "message_id")
    if message_id is None:
        return _curate(
            conversation_id,
            lambda c: f"Accepted suggestions for {c.accept_all(conversation_id)} message(s).",
        )
    text = form.get("text") if form.get("action") == "save" else None
    return _curate(
        conversation_id,
        lambda c: c.redact_message(conversation_id, message_id, text) or "Redaction saved.",
    )


@bp.post("/conversations/<int:conversation_id>/summary")
@requires("curator")
def summary(conversation_id: int) -> Response | tuple[str, int]:
    """Save the summary, or (``action=draft``) show an LLM draft to approve."""
    form = request.form
    if form.get("action") == "draft":
        parley = current_app.extensions["parley"]
        try:
            draft = _curator().draft_summary(
                conversation_id, parley.runner.llm, parley.settings.openai_model
            )
        except CurationError as error:
            db.session.rollback()
            flash(str(error), "error")
            return redirect(url_for("admin.conversation", conversation_id=conversation_id))
        flash("Draft written by the LLM: check it, edit it, then save.", "ok")
        return _render_conversation(conversation_id, draft=draft)
    return _curate(
        conversation_id,
        lambda c: (
            c.set_summary(
                conversation_id,
                form.get("question", ""),
                form.get("answer", ""),
                form.get("teaser", ""),
            )
            or "Summary saved."
        ),
    )


@bp.post("/conversations/<int:conversation_id>/labels")
@requires("curator")
def labels(conversation_id: int) -> Response:
    """Save the tags (comma-separated) and the rating."""
    form = request.form
    tags = form.get("tags", "").split(",")
    rating = _int(form.get("rating"), "rating")

    def change(curator: Curator) -> str:
        curator.set_tags(conversation_id, tags)
        curator.set_rating(conversation_id, rating)
        return "Tags and rating saved."

    return _curate(conversation_id, change)


@bp.post("/conversations/<int:conversation_id>/publish")
@requires("curator")
def publish(conversation_id: int) -> Response:
    """Publish (``action=publish``) or unpublish the conversation."""
    if request.form.get("action") == "unpublish":
        return _curate(conversation_id, lambda c: c.unpublish(conversation_id) or "Unpublished.")

    def change(curator: Curator) -> str:
        filled = curator.publish(conversation_id)
        note = f" ({filled} message(s) redacted from the suggestions)" if filled else ""
        return "Published" + note + "."

    return _curate(conversation_id, change)
