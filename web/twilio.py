"""Twilio's Messaging webhook: ``POST /twilio/messages``.

Configure it as the "A message comes in" webhook (HTTP POST) of a Twilio phone
number, WhatsApp sender or Messaging Service, at ``PUBLIC_BASE_URL`` +
``/twilio/messages``.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import OperationalError

from integrations.twilio import parse_inbound, public_url, signature_is_valid, twiml_reply
from services.turns import Incoming

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
    auth_token = current_app.config.get("TWILIO_AUTH_TOKEN")
    if not auth_token:
        log.error("twilio.signature.unconfigured: TWILIO_AUTH_TOKEN is not set")
        return _plain(503, "Service unavailable: TWILIO_AUTH_TOKEN is not set on the server")
    base = current_app.config.get("PUBLIC_BASE_URL")
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
    )
    try:
        outcome = current_app.extensions["parley"].turns().handle(incoming)
    except OperationalError:
        log.exception("twilio.inbound.database_unavailable")
        return _plain(503, "Service unavailable: the database cannot be reached")
    return Response(twiml_reply(outcome.replies), mimetype="text/xml")
