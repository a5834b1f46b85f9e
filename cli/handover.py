"""``flask handover expire``: give handovers nobody accepted back to the bot."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.exc import DBAPIError

from cli.runtime import _NOT_MIGRATED, _parse_now
from handover.expiry import expire_due_handovers
from models import db

handover_cli = AppGroup("handover", help="Human handover: control of conversations.")


@handover_cli.command("expire")
@click.option(
    "--now",
    metavar="TIME",
    default=None,
    help="Expire what is due at this ISO 8601 time (UTC unless it says) instead of now.",
)
def expire_command(now: str | None) -> None:
    """Give back to the bot each handover not accepted within HANDOVER_CONFIRM_SECONDS.

    The contact is told HANDOVER_EXPIRED_MESSAGE (through the Twilio REST API).
    ``flask engine tick`` and ``clock`` do this too, before the timers.
    """
    moment = _parse_now(now)
    try:
        parley = current_app.extensions["parley"]
        expired, ids = expire_due_handovers(
            db.session, moment, parley.settings, send=lambda ids: parley.send_stored(ids)
        )
    except DBAPIError as error:
        raise click.ClickException(f"{_NOT_MIGRATED} ({type(error.orig).__name__})") from error
    finally:
        db.session.remove()
    click.echo(f"Gave back {expired} handover(s), stored {len(ids)} message(s).")
