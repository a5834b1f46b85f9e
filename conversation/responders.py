"""Responders: answers given before the flow runs (step 4 of a turn).

Configured in ``FLOWS_DIR/_settings.yaml`` (conversation/responder_settings.py);
`flow_responders` builds them in the order a turn checks them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.paywall import Billing
from conversation.responder_settings import (
    AfterHoursSettings,
    OptOutSettings,
    ResetSettings,
    ResponderSettings,
    WelcomeSettings,
)
from conversation.turn import Preface, Responder
from delivery.optout import is_opted_out, record_opt_in, record_opt_out
from engine.ports import Clock, Contact, EntitlementError
from engine.templating import TemplateFailure, Templates
from engine.text import fold
from models.entities import OPEN_STATUSES, Execution, Message, utcnow

log = logging.getLogger("parley.responders")

NO_SUBSCRIPTION = "You don't have a subscription with us yet."
PORTAL = "Manage or cancel your subscription here: {url}"
PORTAL_DOWN = "Sorry, I can't open your billing page right now. Please try again in a minute."


def billing_keyword(billing: Billing) -> Responder:
    """Answer ``BILLING_KEYWORD`` (default ``billing``) with a Stripe customer-portal link."""

    def respond(contact: Contact, text: str) -> list[str] | None:
        if not billing.is_billing_keyword(text):
            return None
        try:
            url = billing.portal_url(contact.id)
        except EntitlementError as error:
            log.error("billing.portal_failed contact=%s reason=%s", contact.id, error)
            return [PORTAL_DOWN]
        return [PORTAL.format(url=url)] if url else [NO_SUBSCRIPTION]

    return respond


def flow_responders(
    session: Session,
    settings: ResponderSettings,
    clock: Clock,
    templates: Templates,
    others: Sequence[Responder] = (),
) -> list[Responder]:
    """Every responder, in the order a turn checks them.

    Opt-out first (an opted-out contact gets nothing, not even a billing link),
    then the reset code, `others` (the billing keyword), the welcome and the
    after-hours reply.

    Args:
        session: The turn's session (responders read and write in its transaction).
        settings: The settings file (``FLOWS_DIR/_settings.yaml``).
        clock: The time source (welcome silence, business hours).
        templates: The sandboxed Jinja environment, for the welcome text.
        others: Responders that go after the reset code.
    """
    responders = [opt_out(session, settings.opt_out), reset_code(session, settings.reset)]
    responders.extend(others)
    if settings.welcome is not None:
        responders.append(welcome(session, settings.welcome, clock, templates))
    if settings.after_hours is not None:
        responders.append(after_hours(settings.after_hours, clock))
    return responders


def opt_out(session: Session, settings: OptOutSettings) -> Responder:
    """Opt-out keywords stop every message to the contact until an opt-in keyword.

    On SMS, Twilio's Advanced Opt-Out answers ``STOP`` and ``START`` itself, so
    the confirmations go out on SMS only with ``reply_on_sms``. While opted out,
    any other message is stored and answered with silence.
    """
    stops = {fold(keyword): keyword for keyword in settings.keywords}
    starts = {fold(keyword) for keyword in settings.opt_in_keywords}

    def respond(contact: Contact, text: str) -> list[str] | None:
        folded = fold(text)
        speak = contact.channel != "sms" or settings.reply_on_sms
        if folded in stops:
            log.info("responder.opt_out contact=%s", contact.id)
            reply = settings.reply if speak and settings.reply else None
            # From here every send path cancels what goes to the contact, but
            # this confirmation.
            record_opt_out(session, contact.id, stops[folded], contact.channel, reply)
            return [reply] if reply else []
        if not is_opted_out(session, contact.id):
            return None
        if folded in starts:
            log.info("responder.opt_in contact=%s", contact.id)
            record_opt_in(session, contact.id)
            return [settings.opt_in_reply] if speak and settings.opt_in_reply else []
        return []

    return respond


def reset_code(session: Session, settings: ResetSettings) -> Responder:
    """The reset code ends the contact's open executions; the flow then starts afresh."""
    code = fold(settings.code)

    def respond(contact: Contact, text: str) -> Preface | None:
        if fold(text) != code:
            return None
        ended = session.execute(
            sa.update(Execution)
            .where(Execution.contact_id == contact.id, Execution.status.in_(OPEN_STATUSES))
            .values(status="ended", wait_deadline=None, ended_at=utcnow())
        ).rowcount
        log.info("responder.reset contact=%s executions_ended=%s", contact.id, ended)
        return Preface([settings.reply] if settings.reply else [])

    return respond


def welcome(
    session: Session, settings: WelcomeSettings, clock: Clock, templates: Templates
) -> Responder:
    """A welcome before the flow, for a contact's first message or after a silence.

    The contact's earlier messages are those whose turn has run (``turn_status``
    no longer ``pending``): the current one, and any stored while it waits for
    the contact's lock, are not.
    """

    def respond(contact: Contact, text: str) -> Preface | None:
        last = session.scalar(
            sa.select(sa.func.max(Message.created_at)).where(
                Message.contact_id == contact.id,
                Message.direction == "inbound",
                Message.turn_status != "pending",
            )
        )
        if last is not None:
            if settings.after_silence is None:
                return None
            if last.tzinfo is None:  # SQLite gives back naive UTC
                last = last.replace(tzinfo=dt.UTC)
            if clock.now() - last < settings.after_silence:
                return None
        context = {
            "contact": {"name": contact.name, "phone": contact.phone, "channel": contact.channel}
        }
        try:
            return Preface([templates.render(settings.text, context)])
        except TemplateFailure as error:
            log.error("responder.welcome_failed contact=%s reason=%s", contact.id, error)
            return None

    return respond


def after_hours(settings: AfterHoursSettings, clock: Clock) -> Responder:
    """Outside business hours, the after-hours reply (alone, or before the flow)."""

    def respond(contact: Contact, text: str) -> list[str] | Preface | None:
        if settings.is_open(clock.now()):
            return None
        log.info("responder.after_hours contact=%s", contact.id)
        return Preface([settings.reply]) if settings.continue_flow else [settings.reply]

    return respond
