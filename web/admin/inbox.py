"""The agents' inbox at ``/admin/inbox``: take a conversation from the bot, reply, hand it back.

Lists (``waiting``: handovers nobody accepted yet; ``mine``; ``all`` that are
not with the bot), one conversation's whole transcript with the contact's
profile, a reply box (sent through the Twilio REST API, a WhatsApp template
outside the 24-hour window), and the control events: accept, take over,
hand back (where the flow left off, or at a chosen step), transfer. The page
polls ``/admin/inbox/<id>/entries`` for new lines every few seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from delivery.status import window_open
from handover import control as handover
from handover.routing import hand_back, set_available
from handover.transcript import transcript
from models import db
from models.billing import Entitlement
from models.curation import User
from models.entities import Contact, Conversation, Execution
from models.handover import AgentPresence
from web.admin import bp, requires

log = logging.getLogger("parley.web.inbox")

VIEWS = ("waiting", "mine", "all")


def _me() -> str:
    return handover.agent(current_user.id)


@bp.get("/inbox")
@requires("agent")
def inbox() -> str:
    """Conversations waiting for an agent, mine, or all away from the bot."""
    view = request.args.get("view", "waiting")
    if view not in VIEWS:
        abort(400, description=f"view: one of {', '.join(VIEWS)}, not {view!r}")
    query = (
        sa.select(Conversation, Contact)
        .join(Contact, Contact.id == Conversation.contact_id)
        .order_by(Conversation.last_message_at.desc())
        .limit(200)
    )
    if view == "mine":
        query = query.where(Conversation.controlled_by == _me())
    else:
        query = query.where(Conversation.controlled_by != handover.BOT)
    rows = []
    for conversation, contact in db.session.execute(query).all():
        state = handover.control(db.session, conversation.id)
        if view == "waiting" and not state.pending:
            continue
        rows.append((conversation, contact, state))
    presence = db.session.get(AgentPresence, current_user.id)
    return render_template(
        "admin/inbox.html",
        rows=rows,
        view=view,
        views=VIEWS,
        available=bool(presence and presence.available),
    )


@bp.post("/inbox/availability")
@requires("agent")
def availability() -> Response:
    """Mark me available (``available=yes``) for ``handover: available`` steps, or not."""
    set_available(db.session, current_user.id, request.form.get("available") == "yes")
    db.session.commit()
    return redirect(url_for("admin.inbox"))


def _conversation(conversation_id: int) -> Conversation:
    row = db.session.get(Conversation, conversation_id)
    if row is None:
        abort(404, description=f"no conversation {conversation_id}")
    return row


@bp.get("/inbox/<int:conversation_id>")
@requires("agent")
def inbox_conversation(conversation_id: int) -> str:
    """The transcript, the contact's profile, the reply box and the control buttons."""
    conversation = _conversation(conversation_id)
    contact = db.session.get_one(Contact, conversation.contact_id)
    execution = db.session.scalars(
        sa.select(Execution)
        .where(Execution.contact_id == contact.id)
        .order_by(Execution.id.desc())
        .limit(1)
    ).first()
    entitlement = db.session.scalars(
        sa.select(Entitlement.status).where(Entitlement.contact_id == contact.id)
    ).first()
    flow = None
    if execution is not None:
        flow = current_app.extensions["parley"].flows.get(execution.flow_id)
    agents = db.session.scalars(
        sa.select(User)
        .where(User.active.is_(True), User.id != current_user.id)
        .order_by(User.email)
    ).all()
    return render_template(
        "admin/inbox_conversation.html",
        conversation=conversation,
        contact=contact,
        execution=execution,
        entitlement=entitlement or "none",
        steps=list(flow.steps) if flow else [],
        entries=transcript(db.session, conversation_id),
        state=handover.control(db.session, conversation_id),
        me=_me(),
        agents=agents,
        window_open=conversation.channel != "whatsapp" or window_open(db.session, conversation.id),
        handover_queue=current_app.extensions["parley"].settings.handover_queue,
    )


@bp.get("/inbox/<int:conversation_id>/entries")
@requires("agent")
def inbox_entries(conversation_id: int) -> Response:
    """The transcript as JSON, for polling: ``{"entries": [...], "controlled_by": ...}``."""
    _conversation(conversation_id)
    state = handover.control(db.session, conversation_id)
    return jsonify(
        entries=[entry.as_json() for entry in transcript(db.session, conversation_id)],
        controlled_by=state.controlled_by,
        pending=state.pending,
    )


def _act(conversation_id: int, change: Callable[[], Any], done: str) -> Response:
    """Run one control change, commit it, send what it stored, and go back to the page."""
    try:
        result = change()
        db.session.commit()
    except handover.ControlError as error:
        db.session.rollback()
        flash(error.reason, "error")
        return redirect(url_for("admin.inbox_conversation", conversation_id=conversation_id))
    ids = result if isinstance(result, list) else []
    if ids:
        current_app.extensions["parley"].send_stored(ids, db.session)
    flash(done, "ok")
    return redirect(url_for("admin.inbox_conversation", conversation_id=conversation_id))


@bp.post("/inbox/<int:conversation_id>/takeover")
@requires("agent")
def inbox_takeover(conversation_id: int) -> Response:
    """Take the conversation at once; the bot's queued messages are canceled."""
    _conversation(conversation_id)
    return _act(
        conversation_id,
        lambda: handover.takeover(db.session, conversation_id, current_user.id),
        "You have the conversation: the bot is silent.",
    )


@bp.post("/inbox/<int:conversation_id>/accept")
@requires("agent")
def inbox_accept(conversation_id: int) -> Response:
    """Accept the handover waiting for me or my queue."""
    _conversation(conversation_id)
    return _act(
        conversation_id,
        lambda: handover.confirm(db.session, conversation_id, current_user.id),
        "Handover accepted: the bot is silent.",
    )


@bp.post("/inbox/<int:conversation_id>/handback")
@requires("agent")
def inbox_handback(conversation_id: int) -> Response:
    """Hand back to the bot, where the flow left off or at the chosen step."""
    _conversation(conversation_id)
    step = request.form.get("step", "").strip() or None
    turns = current_app.extensions["parley"].turns()
    return _act(
        conversation_id,
        lambda: hand_back(turns, conversation_id, _me(), step),
        "Handed back to the bot.",
    )


@bp.post("/inbox/<int:conversation_id>/transfer")
@requires("agent")
def inbox_transfer(conversation_id: int) -> Response:
    """Pass the conversation to another agent (``agent:<id>``) or a queue (``queue:<name>``)."""
    _conversation(conversation_id)
    target = request.form.get("to", "").strip()
    return _act(
        conversation_id,
        lambda: handover.handover(db.session, conversation_id, _me(), target),
        f"Transferred to {target}.",
    )


@bp.post("/inbox/<int:conversation_id>/reply")
@requires("agent")
def inbox_reply(conversation_id: int) -> Response:
    """Send the agent's message through Twilio (a template outside the WhatsApp window)."""
    _conversation(conversation_id)
    form = request.form
    template = None
    if form.get("content_sid", "").strip():
        template = {"content_sid": form["content_sid"].strip(), "content_variables": {}}
    return _act(
        conversation_id,
        lambda: [
            handover.agent_message(
                db.session, conversation_id, _me(), form.get("body", ""), template
            )
        ],
        "Sent.",
    )
