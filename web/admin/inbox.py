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

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from handover import control as handover
from handover import inbox as queries
from handover.routing import hand_back, set_available
from models import db
from models.entities import Conversation
from web.admin import bp, requires

log = logging.getLogger("parley.web.inbox")


def _me() -> str:
    return handover.agent(current_user.id)


@bp.get("/inbox")
@requires("agent")
def inbox() -> str:
    """Conversations waiting for an agent, mine, or all away from the bot."""
    view = request.args.get("view", "waiting")
    if view not in queries.VIEWS:
        abort(400, description=f"view: one of {', '.join(queries.VIEWS)}, not {view!r}")
    return render_template(
        "admin/inbox.html",
        rows=queries.rows(db.session, view, _me()),
        view=view,
        views=queries.VIEWS,
        available=queries.is_available(db.session, current_user.id),
    )


@bp.post("/inbox/availability")
@requires("agent")
def availability() -> Response:
    """Mark me available (``available=yes``) for ``handover: available`` steps, or not."""
    set_available(db.session, current_user.id, request.form.get("available") == "yes")
    db.session.commit()
    return redirect(url_for("admin.inbox"))


def _conversation(conversation_id: int) -> Conversation:
    row = queries.conversation(db.session, conversation_id)
    if row is None:
        abort(404, description=f"no conversation {conversation_id}")
    return row


@bp.get("/inbox/<int:conversation_id>")
@requires("agent")
def inbox_conversation(conversation_id: int) -> str:
    """The chat, the contact's profile, the reply box and the control buttons."""
    panel = queries.panel(db.session, _conversation(conversation_id), current_user.id)
    flow = None
    if panel.execution is not None:
        flow = current_app.extensions["parley"].flows.get(panel.execution.flow_id)
    return render_template(
        "admin/inbox_conversation.html",
        panel=panel,
        conversation=panel.conversation,
        contact=panel.contact,
        steps=list(flow.steps) if flow else [],
        lines=queries.chat(db.session, conversation_id),
        me=_me(),
        handover_queue=current_app.extensions["parley"].settings.handover_queue,
    )


@bp.get("/inbox/<int:conversation_id>/entries")
@requires("agent")
def inbox_entries(conversation_id: int) -> Response:
    """The chat as JSON, for polling: ``{"lines": [...], "controlled_by", "holder", "pending"}``.

    Lines come back whole each time: a message already shown may have changed
    status (sent, delivered, failed) since.
    """
    panel = queries.panel(db.session, _conversation(conversation_id), current_user.id)
    return jsonify(
        lines=[line.as_json() for line in queries.chat(db.session, conversation_id)],
        controlled_by=panel.control.controlled_by,
        holder=panel.holder,
        pending=panel.control.pending,
    )


def _act(conversation_id: int, change: Callable[[], Any], done: str) -> Response:
    """Run one control change, commit it, send what it stored, and say truly what happened."""
    back = redirect(url_for("admin.inbox_conversation", conversation_id=conversation_id))
    try:
        result = change()
        db.session.commit()
    except handover.ControlError as error:
        db.session.rollback()
        flash(error.reason, "error")
        return back
    ids = result if isinstance(result, list) else []
    if ids:
        current_app.extensions["parley"].send_stored(ids, db.session)
        outcome = queries.send_outcome(db.session, ids)
        db.session.rollback()
        if outcome.failed:
            flash(f"Not sent: {'; '.join(outcome.failed)}.", "error")
            return back
    flash(done, "ok")
    return back


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
    to = queries.names(db.session)(target)
    return _act(
        conversation_id,
        lambda: handover.handover(db.session, conversation_id, _me(), target),
        f"Transferred to {to}.",
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
