"""Endpoints for Twilio Studio's *Make HTTP Request* widget.

``POST /studio/entitlement`` answers whether a contact may use the paid flows,
from Parley's entitlement store, so a Studio flow can branch on
``{{widgets.<name>.parsed.is_active}}``:

    request:  From=whatsapp:+15551234567   (form-encoded or JSON; or +15551234567)
    response: {"has_account": true, "is_active": true, "status": "active"}

It is protected by ``STUDIO_TOKEN``, sent as ``Authorization: Bearer <token>``,
an ``X-Parley-Token`` header, or a ``?token=`` query parameter (for widgets that
cannot set headers; the query string may end up in access logs, so prefer a
header). Answers 401 without the right token, 503 while ``STUDIO_TOKEN`` is not
set, 400 for a missing or malformed ``From``.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import OperationalError

from config import reveal
from integrations.twilio import parse_address
from models import db
from web.api.problems import problem

log = logging.getLogger("parley.web.studio")

bp = Blueprint("studio", __name__, url_prefix="/studio")


def _error(status: int, reason: str) -> Response:
    if request.path.startswith("/api/"):  # POST /api/v1/executions: problem details
        return problem(status, reason)
    response = jsonify(error=reason)
    response.status_code = status
    return response


def _given_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("X-Parley-Token") or request.args.get("token") or None


def verify_studio_request() -> Response | None:
    """Check ``STUDIO_TOKEN``; an error response, or None when the token matches."""
    expected = reveal(current_app.extensions["parley"].settings.studio_token)
    if not expected:
        log.error("studio.token.unconfigured: STUDIO_TOKEN is not set")
        return _error(503, "STUDIO_TOKEN is not set on the server")
    given = _given_token()
    if given is None or not hmac.compare_digest(given.encode(), str(expected).encode()):
        problem = "missing" if given is None else "wrong"
        log.warning("studio.token.%s path=%s", problem, request.path)
        response = _error(401, "missing or wrong token (Authorization: Bearer <STUDIO_TOKEN>)")
        response.headers["WWW-Authenticate"] = 'Bearer realm="parley-studio"'
        return response
    return None


@bp.post("/entitlement")
def entitlement() -> Response:
    """``{has_account, is_active, status}`` for the contact in ``From``."""
    refused = verify_studio_request()
    if refused is not None:
        return refused
    if request.is_json:
        data = request.get_json(silent=True)
        raw = data.get("From") if isinstance(data, dict) else None
    else:
        raw = request.form.get("From")
    if not isinstance(raw, str) or not raw:
        return _error(400, "From is required: whatsapp:+E164 or +E164")
    try:
        _, phone = parse_address(raw.strip())
    except ValueError as error:
        log.warning("studio.entitlement.bad_from reason=%s", error)
        return _error(400, f"From: {error}")
    try:
        status = current_app.extensions["parley"].billing(db.session).studio_status(phone)
    except OperationalError:
        log.exception("studio.entitlement.database_unavailable")
        return _error(503, "the database cannot be reached")
    finally:
        db.session.rollback()
    return jsonify(status)
