"""``flask users create``, ``flask transcripts export`` and ``flask transcripts to-test``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.exc import DBAPIError

from curation import conversation_tests, exports
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


@transcripts_cli.command("to-test")
@click.argument("conversation_id", metavar="CONVERSATION", type=int)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="The test file to write (default: FLOWS_DIR/tests/<flow>_conversation_<id>.yaml).",
)
@click.option("--name", default=None, help="The test's name (default: conversation N).")
@click.option(
    "--not-contains",
    "not_contains",
    nargs=2,
    type=(int, str),
    multiple=True,
    metavar="TURN TEXT",
    help="Mark TURN wrong: its replies must not contain TEXT. Repeatable.",
)
@click.option(
    "--correct",
    nargs=2,
    type=(int, str),
    multiple=True,
    metavar="TURN REPLY",
    help="Mark TURN wrong: the bot should have said REPLY. Repeatable.",
)
def transcripts_to_test(
    conversation_id: int,
    output: Path | None,
    name: str | None,
    not_contains: tuple[tuple[int, str], ...],
    correct: tuple[tuple[int, str], ...],
) -> None:
    """Save CONVERSATION (its id in the console) as a conversation test, redacted, and run it.

    The contact's messages become ``say``, the model's recorded answers the
    scripted ``llm`` answers, the bot's replies ``expect`` (see
    curation/conversation_tests.py). Exits 1 when the saved test does not pass.
    """
    marks = [conversation_tests.Mark(turn, not_contains=text) for turn, text in not_contains]
    marks += [conversation_tests.Mark(turn, reply=text) for turn, text in correct]
    region = current_app.extensions["parley"].settings.redaction_region
    runner = current_app.extensions["parley"].runner
    try:
        test = conversation_tests.build(
            db.session, conversation_id, marks, region, name, runner.flows
        )
    except conversation_tests.ConversionError as error:
        raise click.ClickException(str(error)) from error
    except DBAPIError as error:
        raise click.ClickException(f"{_NOT_MIGRATED} ({type(error.orig).__name__})") from error
    finally:
        db.session.rollback()
    tests_dir = Path(current_app.extensions["parley"].settings.flows_dir) / "tests"
    path = output or conversation_tests.default_path(tests_dir, test)
    result = conversation_tests.save(test, path, runner)
    turns = len(test.document["tests"][0]["turns"])
    click.echo(f"Wrote {path}: {turns} turn(s) of flow {test.flow_id}.")
    for note in test.notes:
        click.echo(f"  note: {note}")
    if result.passed:
        click.echo("It passes: `flask flows test " + str(path) + "`.")
        return
    click.echo(f"It does not pass yet:\n{result.report}")
    sys.exit(1)
