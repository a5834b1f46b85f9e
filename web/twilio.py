"""Twilio's Messaging webhook (``POST /twilio/messages``) and status callbacks (``/twilio/status``).

Configure it as the "A message comes in" webhook (HTTP POST) of a Twilio phone
number, WhatsApp sender or Messaging Service, at ``PUBLIC_BASE_URL`` +
``/twilio/messages``.
"""

from __future__ import annotations

import logging

from celery import Celery
from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import OperationalError

from config import reveal
from conversation.turn import Incoming, TurnOutcome, store_incoming
from delivery.status import CALLBACK_STATUSES, record_status
from integrations.twilio import (
    is_message_sid,
    parse_inbound,
    public_url,
    signature_is_valid,
    twiml_reply,
)
from models import db
from tasks import enqueue_drain

log = logging.getLogger("parley.web.twilio")

bp = Blueprint("twilio", __name__, url_prefix="/twilio")


def _plain(status: int, reason: str) -> Response:
    return Response(reason + "\n", status=status, mimetype="text/plain")


def verify_twilio_request() -> Response | None:
    """Check ``X-Twilio-Signature``; an error response, or None when it is valid.

    The signed URL is ``PUBLIC_BASE_URL`` + path + query when that is set (the
    URL Twilio called, which an HTTPS-terminating proxy hides from the app),
    else the URL of the request. There is no bypass, in debug mode or otherwise.
    (Twilio docs, "Webhooks security".)
    """
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        log.warning("twilio.signature.missing path=%s", request.path)
        return _plain(403, "Forbidden: missing X-Twilio-Signature header")
    settings = current_app.extensions["parley"].settings
    auth_token = reveal(settings.twilio_auth_token)
    if not auth_token:
        log.error("twilio.signature.unconfigured: TWILIO_AUTH_TOKEN is not set")
        return _plain(503, "Service unavailable: TWILIO_AUTH_TOKEN is not set on the server")
    base = settings.public_base_url
    query = request.query_string.decode()
    url = public_url(base, request.path, query) if base else request.url
    if not signature_is_valid(auth_token, url, request.form.to_dict(flat=False), signature):
        log.warning("twilio.signature.invalid path=%s url_checked=%s", request.path, url)
        return _plain(403, "Forbidden: X-Twilio-Signature does not match")
    return None


@bp.post("/messages")
def inbound_message() -> Response:
    """Take one inbound WhatsApp or SMS message and answer with TwiML."""
    refused = verify_twilio_request()
    if refused is not None:
        return refused
    try:
        form = parse_inbound(request.form.to_dict())
    except ValueError as error:
        log.warning("twilio.inbound.malformed reason=%s", error)
        return _plain(400, f"Bad request: {error}")
    incoming = Incoming(
        phone=form.phone,
        channel=form.channel,
        address=form.to_address,
        body=form.body,
        message_sid=form.message_sid,
        name=form.profile_name,
        media=form.media,
        media_types=form.media_types,
        button=form.button,
        location=form.location,
    )
    celery = current_app.extensions.get("celery")
    try:
        if celery is None:
            outcome = current_app.extensions["parley"].turns().handle(incoming)
        else:
            outcome = _queue(celery, incoming)
    except OperationalError:
        log.exception("twilio.inbound.database_unavailable")
        return _plain(503, "Service unavailable: the database cannot be reached")
    return Response(twiml_reply(outcome.replies, outcome.media), mimetype="text/xml")


def _queue(celery: Celery, incoming: Incoming) -> TurnOutcome:
    """Store the message and enqueue its contact's turns; inline if Redis is down.

    Raises:
        sqlalchemy.exc.OperationalError: the message could not be stored.
    """
    stored = store_incoming(db.session, incoming)
    if stored is None:
        log.info("turn.duplicate message_sid=%s", incoming.message_sid)
        return TurnOutcome(duplicate=True)
    debounce = current_app.extensions["parley"].delivery.debounce_seconds
    try:
        enqueue_drain(celery, stored.contact_id, countdown=debounce or None)
    except Exception:  # kombu/redis errors: the broker is unreachable
        log.exception("twilio.inbound.queue_unavailable message=%s", stored.message_id)
        return current_app.extensions["parley"].turns().run(stored, incoming)
    return TurnOutcome(message_id=stored.message_id)


@bp.post("/status")
def message_status() -> Response:
    """Record a Twilio status callback (``MessageStatus``, ``ErrorCode``) for a sent message.

    Statuses follow Twilio's lifecycle and never move backwards, whatever the
    order the callbacks arrive in. Twilio retries nothing on an error answer,
    so a well-formed callback for an unknown message still gets 200.
    """
    refused = verify_twilio_request()
    if refused is not None:
        return refused
    message_sid = request.form.get("MessageSid") or ""
    status = request.form.get("MessageStatus") or request.form.get("SmsStatus") or ""
    raw_code = request.form.get("ErrorCode") or ""
    delivery = request.args.get("delivery") or None
    if not message_sid:
        return _plain(400, "Bad request: MessageSid is missing")
    if not is_message_sid(message_sid):
        return _plain(400, "Bad request: MessageSid is not a message SID (SM or MM, 32 hex)")
    if delivery is not None and not (
        len(delivery) <= 64 and delivery.isascii() and delivery.isprintable()
    ):
        return _plain(400, "Bad request: delivery is not a key Parley gave")
    if status not in CALLBACK_STATUSES:
        return _plain(400, f"Bad request: MessageStatus is not a message status: {status[:40]!r}")
    if raw_code and not (raw_code.isascii() and raw_code.isdecimal() and len(raw_code) <= 9):
        return _plain(400, f"Bad request: ErrorCode is not a number: {raw_code[:40]!r}")
    try:
        result = record_status(
            db.session,
            message_sid,
            status,
            int(raw_code) if raw_code else None,
            delivery,
        )
    except OperationalError:
        db.session.rollback()
        log.exception("twilio.status.database_unavailable")
        return _plain(503, "Service unavailable: the database cannot be reached")
    log.info("twilio.status message_sid=%s status=%s result=%s", message_sid, status, result)
    return _plain(200, result)
