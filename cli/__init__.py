"""``flask`` commands: ``flows validate``, ``chat`` and ``paywall on|off|status``.

(``db ...`` comes from Flask-Migrate.)
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import DBAPIError

from billing.paywall import missing_stripe_settings
from config import ConfigError
from engine.templating import Templates
from integrations.http import env_names
from integrations.liquid import install as install_liquid
from models import db

flows_cli = AppGroup("flows", help="Check the flows in FLOWS_DIR (or a given path).")


@flows_cli.command("validate")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
def validate_command(path: Path | None) -> None:
    """Check shape and graph of flows; print every problem as file:line; exit 1 on an error.

    PATH is a flow file or a folder of them (default: FLOWS_DIR).
    """
    from cli.flows_design import report_problems, validate_path

    settings = current_app.extensions["parley"].settings
    templates = install_liquid(
        Templates(Path(settings.prompts_dir), env_names=env_names(settings.http_env_allowlist))
    )
    target = path or Path(settings.flows_dir)
    report_problems(*validate_path(target, templates))


#: What ``flask chat`` answers itself; anything else goes to the flow.
CHAT_COMMANDS = {
    "/help": "show these commands",
    "/reset": "end the contact's execution: the next message starts the flow afresh",
    "/quit": "leave (Ctrl-D works too)",
}


@click.command("chat")
@with_appcontext
@click.argument("flow_id", metavar="FLOW")
@click.option(
    "--as", "phone", default="+15550100100", show_default=True, help="The contact's E.164 number."
)
@click.option(
    "--channel", type=click.Choice(["whatsapp", "sms"]), default="whatsapp", show_default=True
)
@click.option("--name", default=None, help="The contact's profile name.")
@click.option("--verbose", is_flag=True, help="Show the engine's log lines.")
def chat_command(flow_id: str, phone: str, channel: str, name: str | None, verbose: bool) -> None:
    """Talk to FLOW from the terminal, through the same runner and database as the webhook.

    Replies are stored with the status "simulated" (nothing is sent to
    Twilio). Type /help for the commands chat answers itself: /reset, /quit.
    """
    logger = logging.getLogger("parley")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL)
    try:
        _chat(flow_id, phone, channel, name)
    finally:
        logger.setLevel(level)


def _chat(flow_id: str, phone: str, channel: str, name: str | None) -> None:
    import dataclasses

    from conversation.reset import end_open_executions
    from conversation.turn import Incoming
    from integrations.scripted import describe_llm
    from integrations.twilio import parse_address
    from web.simulator import SIMULATED, SIMULATOR_NUMBER

    parley = current_app.extensions["parley"]
    if parley.flow_error is not None:
        raise click.ClickException(str(parley.flow_error))
    if parley.flows.get(flow_id) is None:
        known = ", ".join(parley.flows.flows) or "none"
        raise click.ClickException(f"no flow {flow_id!r}; flows: {known}")
    try:
        _, phone = parse_address(phone)
    except ValueError as error:
        raise click.ClickException(f"--as: {error}") from error
    model = describe_llm(parley.runner.llm)
    if model.kind == "none":
        click.echo(
            "No LLM is configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for an "
            "OpenAI-compatible server) in the environment or .env. Until then, LLM steps "
            "answer with the flow's fallback.",
            err=True,
        )
    elif model.kind == "scripted":
        click.echo(
            "Using the built-in scripted demo model: canned replies, no LLM account needed. "
            "Set OPENAI_API_KEY in .env for a real model.",
            err=True,
        )
    click.echo(f"Chatting with {flow_id} as {phone} on {channel}. Ctrl-D or /quit to leave.")
    address = f"whatsapp:{SIMULATOR_NUMBER}" if channel == "whatsapp" else SIMULATOR_NUMBER
    while True:
        try:
            text = click.prompt("you", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo()
            return
        command = text.strip().lower()
        if command == "/quit":
            return
        if command == "/help":
            for name_, meaning in CHAT_COMMANDS.items():
                click.echo(f"  {name_:<8} {meaning}")
            continue
        if command == "/reset":
            ended = end_open_executions(db.session, phone)
            db.session.commit()
            click.echo(f"Reset: ended {ended} execution(s); the next message starts {flow_id}.")
            continue
        if command.startswith("/") and " " not in command:
            click.echo(f"Unknown command {command}: type /help for the commands.", err=True)
            continue
        incoming = Incoming(
            phone=phone,
            channel=channel,  # type: ignore[arg-type]
            address=address,
            body=text,
            message_sid=f"chat-{uuid.uuid4().hex}",
            name=name,
        )
        turns = parley.turns()
        turns.settings = dataclasses.replace(turns.settings, outbound_status=SIMULATED)
        outcome = turns.handle(incoming, flow_id=flow_id)
        for reply in outcome.replies:
            click.echo(f"bot> {reply}")


paywall_cli = AppGroup(
    "paywall", help="Switch the paywall on or off at runtime (stored in the database)."
)

_by_option = click.option(
    "--by",
    "who",
    default=lambda: os.environ.get("USER") or "cli",
    show_default="$USER or cli",
    help="Who is switching (recorded with the time).",
)


_NOT_MIGRATED = "the database cannot be read; is it migrated (flask --app app db upgrade)?"


def _switch(enabled: bool, who: str) -> None:
    billing = current_app.extensions["parley"].billing(db.session)
    try:
        billing.set_paywall(enabled, who)
        db.session.commit()
    except ConfigError as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error
    except DBAPIError as error:
        db.session.rollback()
        raise click.ClickException(f"{_NOT_MIGRATED} ({type(error.orig).__name__})") from error
    click.echo(f"Paywall switched {'on' if enabled else 'off'} by {who}; the next turn uses it.")


@paywall_cli.command("on")
@_by_option
def paywall_on(who: str) -> None:
    """Switch the paywall on (fails, naming them, while Stripe settings are missing)."""
    _switch(True, who)


@paywall_cli.command("off")
@_by_option
def paywall_off(who: str) -> None:
    """Switch the paywall off: no flow asks for payment."""
    _switch(False, who)


@paywall_cli.command("status")
def paywall_status() -> None:
    """Say whether the paywall is on, and what decides it."""
    billing = current_app.extensions["parley"].billing(db.session)
    try:
        enabled = billing.paywall_enabled()
        setting = billing.paywall_setting()
        source = (
            f"switched {setting.value} by {setting.updated_by} at "
            f"{setting.updated_at:%Y-%m-%d %H:%M:%S} UTC"
            if setting is not None
            else "from PAYWALL_ENABLED; never switched at runtime"
        )
    except DBAPIError as error:
        raise click.ClickException(f"{_NOT_MIGRATED} ({type(error.orig).__name__})") from error
    finally:
        db.session.rollback()
    click.echo(f"Paywall is {'on' if enabled else 'off'} ({source}).")
    missing = missing_stripe_settings(billing.settings)
    if enabled and missing:
        click.echo(f"Warning: {', '.join(missing)} is not set.", err=True)


#: Commands that keep their log lines: the long-running ones (the Procfile's
#: processes report through the log) and ``chat``, which has its own --verbose.
LOGGING_COMMANDS = frozenset({("engine", "clock"), ("delivery", "sweep"), ("chat",)})

_LITERAL = re.compile(r"``([^`]+)``")
_REFERENCE = re.compile(r"(?<![`\w])`([^`\s][^`]*)`(?![`\w])")


def one_shot(argv: list[str]) -> bool:
    """Whether the ``flask`` command line `argv` runs a one-shot Parley command.

    Such a command's output is its answer, so the app's INFO log lines (the
    flows stored at start-up, the change the command made) stay off the
    terminal; ``flask run``, ``flask chat`` and the Procfile's long-running
    processes keep theirs.
    """
    words: list[str] = []
    skip = False
    for word in argv[1:]:
        if skip:
            skip = False
        elif word in ("--app", "-A", "--env-file", "-e"):
            skip = True  # the option's value follows
        elif not word.startswith("-"):
            words.append(word)
    if not words or words[0] in ("run", "chat", "shell"):
        return False
    return tuple(words[:2]) not in LOGGING_COMMANDS


def plain(text: str | None) -> str | None:
    """A docstring as help text for a terminal, without reST's literal and reference marks."""
    if not text:
        return text
    return _REFERENCE.sub(r"\1", _LITERAL.sub(r"\1", text))


def _tidy(command: click.Command) -> None:
    """Plain help texts on `command` and its subcommands."""
    command.help = plain(command.help)
    command.short_help = plain(command.short_help)
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            parameter.help = plain(parameter.help)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _tidy(sub)


def register_commands(app: Flask) -> None:
    """Add Parley's commands to ``flask``, with plain help texts (no reST marks)."""
    from cli.flows_design import graph_command, schema_command, test_command

    for command in (schema_command, graph_command, test_command):
        flows_cli.add_command(command)
    from cli.runtime import engine_cli, status_command

    flows_cli.add_command(status_command)
    app.cli.add_command(engine_cli)
    from cli.delivery import delivery_cli

    app.cli.add_command(delivery_cli)
    from cli.handover import handover_cli

    app.cli.add_command(handover_cli)
    from cli.studio import studio_cli

    app.cli.add_command(studio_cli)
    app.cli.add_command(flows_cli)
    app.cli.add_command(chat_command)
    app.cli.add_command(paywall_cli)
    from cli.admin import transcripts_cli, users_cli

    app.cli.add_command(users_cli)
    app.cli.add_command(transcripts_cli)
    for command in (
        flows_cli,
        engine_cli,
        delivery_cli,
        handover_cli,
        studio_cli,
        chat_command,
        paywall_cli,
        users_cli,
        transcripts_cli,
    ):
        if not getattr(command, "_parley_tidied", False):  # the groups are module-level
            _tidy(command)
            command._parley_tidied = True  # type: ignore[attr-defined]
