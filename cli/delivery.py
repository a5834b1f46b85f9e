"""``flask delivery sweep | failures``: nothing waits forever, failures are visible."""

from __future__ import annotations

import logging
import time

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.exc import DBAPIError

from delivery.status import failed_deliveries
from models import db
from tasks import sweep_stalled

log = logging.getLogger("parley.sweep")

delivery_cli = AppGroup("delivery", help="Queued turns and REST sends: sweep, failures.")


@delivery_cli.command("sweep")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds a turn or send may take before it counts as stalled "
    "[default: SWEEP_GRACE_SECONDS].",
)
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=None,
    help="Sweep forever, every this many seconds (a clock process); once when absent.",
)
def sweep_command(grace: float | None, every: int | None) -> None:
    """Run every stored inbound message whose turn never ran or never finished.

    Also sends replies that were stored but never sent. With REDIS_URL the
    contacts are re-enqueued on Celery (or run here if Redis is down);
    without it they are run here, the replies sent through the Twilio REST API.
    """
    celery = current_app.extensions.get("celery")
    while True:
        started = time.monotonic()
        try:
            count = sweep_stalled(celery, grace)
            if count or every is None:
                click.echo(f"{count} stalled contact(s) {'re-enqueued' if celery else 'run'}.")
        except DBAPIError as error:
            if every is None:
                raise click.ClickException(f"the database cannot be reached: {error}") from error
            log.exception("sweep.failed")
        finally:
            db.session.remove()
        if every is None:
            return
        time.sleep(max(0.0, every - (time.monotonic() - started)))


@delivery_cli.command("failures")
def failures_command() -> None:
    """Count failed, undelivered and unknown outbound messages per contact."""
    rows = failed_deliveries(db.session)
    if not rows:
        click.echo("No failed deliveries.")
        return
    for contact_id, phone, count in rows:
        click.echo(f"contact {contact_id} ({phone}): {count} failed")
    click.echo(f"{sum(row[2] for row in rows)} failed deliveries, {len(rows)} contact(s).")
