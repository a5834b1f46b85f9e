"""Agent apps' webhooks: every control event, and every message while an agent has control.

When ``AGENT_WEBHOOK_URL`` is set, each event is POSTed there as JSON after
the transaction that wrote it commits (nothing is announced that was rolled
back), signed the way Stripe signs its webhooks: the header

    X-Parley-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">

with ``AGENT_WEBHOOK_SECRET`` as the key; a receiver recomputes it (`verify`)
and refuses a timestamp older than a few minutes (replays). Refused
connections, timeouts, 429 and 5xx answers are retried with exponential
backoff and full jitter (`tenacity`) until ``AGENT_WEBHOOK_DEADLINE`` seconds.

Payloads::

    {"type": "control", "conversation_id": 7, "kind": "takeover",
     "actor": "agent:3", "target": "agent:3", "created_at": "..."}
    {"type": "message", "conversation_id": 7, "message_id": 42,
     "direction": "inbound", "author": "contact", "body": "...", "created_at": "..."}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from config import Settings, reveal

log = logging.getLogger("parley.handover.hooks")

SIGNATURE_HEADER = "X-Parley-Signature"

#: How old a signed timestamp a receiver should accept, in seconds.
TOLERANCE_SECONDS = 300

_PENDING = "parley_agent_hooks"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Parley-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance: float = TOLERANCE_SECONDS
) -> bool:
    """Whether `header` signs `body` with `secret` at a time within `tolerance` of `now`."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def queue(session: Session, payload: dict[str, Any]) -> None:
    """Announce `payload` once the session's transaction commits (see `take_pending`)."""
    session.info.setdefault(_PENDING, []).append(payload)


def take_pending(session: Session) -> list[dict[str, Any]]:
    """The payloads queued in the transaction `session` just committed, now forgotten.

    The app's wiring (app.py) calls it after every commit and passes them to
    `announce` with its settings.
    """
    return session.info.pop(_PENDING, None) or []


def announce(settings: Settings, payloads: Iterable[dict[str, Any]]) -> None:
    """`post` each payload, in order, when ``AGENT_WEBHOOK_URL`` is set."""
    if not settings.agent_webhook_url:
        return
    for payload in payloads:
        post(settings, payload)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, requests.HTTPError):
        status = error.response.status_code if error.response is not None else 0
        return status == 429 or status >= 500
    return isinstance(error, requests.ConnectionError | requests.Timeout)


def post(settings: Settings, payload: dict[str, Any]) -> bool:
    """POST one signed payload, retried with backoff. Returns whether it was accepted (2xx).

    Args:
        settings: The app's settings (``AGENT_WEBHOOK_*``).
        payload: The JSON payload.
    """
    url, secret = settings.agent_webhook_url, reveal(settings.agent_webhook_secret)
    if not url:
        return False
    if not secret:
        log.error("agent_hook.unsigned: AGENT_WEBHOOK_SECRET is not set; nothing sent")
        return False
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    retrying = Retrying(
        retry=retry_if_exception(_retryable),
        wait=wait_random_exponential(multiplier=settings.agent_webhook_backoff, max=8),
        stop=stop_after_delay(settings.agent_webhook_deadline) | stop_after_attempt(10),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(secret, int(time.time()), body),
                }
                response = requests.post(url, data=body, headers=headers, timeout=5)
                response.raise_for_status()
    except requests.RequestException as error:
        log.error("agent_hook.failed type=%s reason=%s", payload.get("type"), error)
        return False
    return True


@sa.event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
