"""``flask engine tick | clock`` (timers) and ``flask flows status`` (who waits where)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import DBAPIError

from conversation.timers import TickReport, tick
from conversation.versions import stored_versions, waiting_by_step
from handover.expiry import expire_due_handovers
from models import db

log = logging.getLogger("parley.clock")

engine_cli = AppGroup("engine", help="Run the flow engine's timers (timeouts) from the database.")

_NOT_MIGRATED = "the database cannot be read; is it migrated (flask --app app db upgrade heads)?"


def _parse_now(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def run_tick(now: dt.datetime) -> TickReport:
    """Fire every timer due at `now` and send what they say through the Twilio REST API."""
    parley = current_app.extensions["parley"]
    turns = parley.turns()
    try:
        with parley.twilio_sender() as sender:

            def send(ids: Sequence[int]) -> int:
                return parley.send_stored(ids, db.session, sender)

            # A handover nobody accepted goes back to the bot, before the timers.
            expire_due_handovers(db.session, now, parley.settings, send)
            return tick(turns, now, send=send)
    finally:
        db.session.remove()


@engine_cli.command("tick")
@click.option(
    "--now",
    metavar="TIME",
    default=None,
    help="Fire what is due at this ISO 8601 time (UTC unless it says) instead of now.",
)
def tick_command(now: str | None) -> None:
    """Fire every due timer once: move each waiting execution on along its timeout.

    Safe to run from several processes at once and as often as you like: a
    timer fires once. Run it every minute (the Procfile's clock process, or cron).
    """
    moment = _parse_now(now)
    try:
        report = run_tick(moment)
    except DBAPIError as error:
        raise click.ClickException(f"{_NOT_MIGRATED} ({type(error.orig).__name__})") from error
    click.echo(
        f"Fired {report.fired} timer(s), stored {len(report.message_ids)} message(s)"
        + (f"; {report.skipped} left for the next tick." if report.skipped else ".")
    )


@engine_cli.command("clock")
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Seconds between ticks.",
)
def clock_command(every: int) -> None:
    """Run `flask engine tick` forever, every --every seconds (the Procfile's clock process)."""
    click.echo(f"Firing due timers every {every} s; Ctrl-C to stop.")
    while True:
        started = time.monotonic()
        try:
            report = run_tick(dt.datetime.now(dt.UTC))
            if report.fired or report.skipped:
                log.info("clock.tick fired=%d skipped=%d", report.fired, report.skipped)
        except Exception:  # keep ticking: the next minute may work (database back)
            log.exception("clock.tick_failed")
        time.sleep(max(0.0, every - (time.monotonic() - started)))


@click.command("status")
@with_appcontext
def status_command() -> None:
    """Show, per flow and version, how many contacts are at each step.

    Counts contacts with an open execution (active, waiting or handed over), so
    a designer sees who a change to a flow affects before publishing it.
    """
    parley = current_app.extensions["parley"]
    try:
        counts = waiting_by_step(db.session)
        versions = stored_versions(db.session)
    except DBAPIError as error:
        raise click.ClickException(f"{_NOT_MIGRATED} ({type(error.orig).__name__})") from error
    finally:
        db.session.rollback()
    loaded = {(row.flow_id, row.version): row.loaded_at for row in versions}
    flow_ids = sorted({*parley.flows.flows, *(count.flow_id for count in counts)})
    if not flow_ids:
        click.echo("No flows loaded and no contacts in a flow.")
        return
    for flow_id in flow_ids:
        flow = parley.flows.get(flow_id)
        rows = [count for count in counts if count.flow_id == flow_id]
        click.echo(f"{flow_id}{'' if flow else ' (no longer in FLOWS_DIR)'}")
        seen = {count.version for count in rows}
        if flow is not None and flow.version not in seen:
            click.echo(f"  version {flow.version} (current): no contacts")
        current = flow.version if flow else None
        for version in sorted(seen, key=lambda v: (v == current, str(loaded.get((flow_id, v))))):
            label = _version_label(version, current, loaded.get((flow_id, version)))
            in_version = [count for count in rows if count.version == version]
            total = sum(count.contacts for count in in_version)
            click.echo(f"  version {label}: {total} contact(s)")
            for count in in_version:
                click.echo(f"    {count.step:<24} {count.contacts}")


def _version_label(version: str, current: str | None, loaded_at: dt.datetime | None) -> str:
    notes = []
    if version == current:
        notes.append("current")
    if loaded_at is not None:
        notes.append(f"loaded {loaded_at:%Y-%m-%d %H:%M}")
    else:
        notes.append("not stored")
    return f"{version} ({', '.join(notes)})"
