"""``flask users create`` and ``flask transcripts export``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import AppGroup
from sqlalchemy.exc import DBAPIError

from curation import exports
from curation.users import UserError, create_user
from models import db
from models.curation import ROLES

users_cli = AppGroup("users", help="Console users (the admin console at /admin).")
transcripts_cli = AppGroup("transcripts", help="Curated conversations.")

_NOT_MIGRATED = "the database cannot be read; is it migrated (flask --app app db upgrade)?"


@users_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the user may do.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (scripts) instead of prompting.",
)
def users_create(email: str, role: str, password_stdin: bool) -> None:
    """Create a console user with EMAIL; prompts for the password (twice)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_user(db.session, email, password, role)
        db.session.commit()
    except UserError as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error
    except DBAPIError as error:
        db.session.rollback()
        raise click.ClickException(f"{_NOT_MIGRATED} ({type(error.orig).__name__})") from error
    click.echo(f"Created {user.role} {user.email}.")


@transcripts_cli.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(exports.FORMATS), default="jsonl", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="File to write (default: standard output).",
)
@click.option(
    "--all", "everything", is_flag=True, help="Every curated conversation, not only published."
)
def transcripts_export(fmt: str, output: Path | None, everything: bool) -> None:
    """Export curated conversations, redacted: JSONL (OpenAI fine-tuning), CSV or YAML tests."""
    conversations = exports.curated(db.session, published_only=not everything)
    try:
        if output is None:
            count = exports.WRITERS[fmt](conversations, sys.stdout)
        else:
            with output.open("w", encoding="utf-8", newline="") as out:
                count = exports.WRITERS[fmt](conversations, out)
    except DBAPIError as error:
        raise click.ClickException(f"{_NOT_MIGRATED} ({type(error.orig).__name__})") from error
    finally:
        db.session.rollback()
    click.echo(f"Exported {count} conversation(s) as {fmt}.", err=True)
