"""The ``flask`` commands read well in a terminal: plain help, no log lines, chat's own commands."""

from __future__ import annotations

import click
import sqlalchemy as sa

from cli import one_shot, plain
from models import Execution, Message, db
from tests.test_chat_cli import PHONE, bot_lines, chat, coach


def _commands(command: click.Command, path: str = "flask"):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_help_texts_have_no_rest_marks(app):
    parley = [name for name in app.cli.commands if name not in ("db", "run", "shell", "routes")]
    seen = 0
    for name in parley:
        for path, command in _commands(app.cli.commands[name], f"flask {name}"):
            texts = [command.help or "", command.short_help or ""]
            texts += [p.help or "" for p in command.params if isinstance(p, click.Option)]
            for text in texts:
                assert "``" not in text and "`" not in text, f"{path}: {text!r}"
            seen += 1
    assert seen > 15


def test_plain_drops_literal_and_reference_marks():
    assert plain("Needs Graphviz's ``dot`` and `flask engine tick`.") == (
        "Needs Graphviz's dot and flask engine tick."
    )
    assert plain(None) is None


def test_one_shot_commands_keep_log_lines_off_the_terminal():
    assert one_shot(["flask", "--app", "app", "paywall", "off"])
    assert one_shot(["flask", "users", "create", "a@example.org", "--role", "agent"])
    assert one_shot(["flask", "--app", "app", "db", "upgrade", "heads"])
    for argv in (
        ["flask", "--app", "app", "run", "--port", "5000"],
        ["flask", "engine", "clock"],
        ["flask", "delivery", "sweep", "--every", "30"],
        ["flask", "--app", "app", "chat", "goal_setting"],
        ["flask", "--help"],
    ):
        assert not one_shot(argv), argv


def test_chat_answers_help_reset_and_quit_itself_and_stores_replies_as_simulated(app, fake_openai):
    fake_openai.script(coach("What gets in the way of sleep?"))
    result = chat(
        app,
        "goal_setting",
        "--as",
        PHONE,
        lines=["hello", "/help", "sleep", "/reset", "/nope", "hi", "/quit", "never sent"],
    )
    assert result.exit_code == 0, result.output
    assert "/reset" in result.stdout and "/quit" in result.stdout  # the /help listing
    assert "Reset: ended 1 execution(s)" in result.stdout
    assert "Unknown command /nope" in result.stderr
    assert bot_lines(result.stdout)[-2].startswith("Hi there! I'm Parley")  # afresh after /reset
    with app.app_context():
        bodies = db.session.scalars(
            sa.select(Message.body).where(Message.direction == "inbound").order_by(Message.id)
        ).all()
        assert bodies == ["hello", "sleep", "hi"]  # no command reached the flow
        statuses = set(
            db.session.scalars(sa.select(Message.status).where(Message.direction == "outbound"))
        )
        assert statuses == {"simulated"}
        assert db.session.scalars(sa.select(Execution.status).order_by(Execution.id)).all() == [
            "ended",
            "waiting",
        ]
