"""``flask chat FLOW``: a conversation from the terminal, through the webhook's turn service."""

from __future__ import annotations

import re

import sqlalchemy as sa

from app import create_app
from models import Contact, Conversation, Execution, Message, db
from tests.twiml import messages_of

PHONE = "+15551234567"
GREETING = (
    "Hi {name}! I'm Parley, your well-being companion. Let's pick one small goal for this week."
)
QUESTION = "Which matters most to you right now: 1. sleep, 2. movement or 3. connection?"
CONFIRM = (
    "Great, your goal for this week: {goal}. "
    "I'll be cheering you on. Message me any time to set a new one."
)
FALLBACK = "Sorry, I'm having trouble right now. Please try again in a minute."
NO_LLM_HINT = "No LLM is configured"


def coach(reply: str, goal: str = "", agreed: bool = False) -> dict:
    return {"reply": reply, "goal": goal, "agreed": agreed}


def chat(app, *args: str, lines: list[str]):
    """Run ``flask chat ARGS`` with `lines` typed, one per prompt, then end of input.

    The app context is pushed here as the ``flask`` command (`flask.cli.FlaskGroup`)
    pushes it: ``chat`` is a plain click command that reads `current_app`
    without ``with_appcontext``, so ``app.cli`` alone runs it outside a context.
    """
    runner = app.test_cli_runner()
    with app.app_context():
        return runner.invoke(args=["chat", *args], input="".join(line + "\n" for line in lines))


def bot_lines(output: str) -> list[str]:
    return re.findall(r"bot> (.*)", output)


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_chat_shows_replies_and_stores_the_turns_like_the_webhook(app, fake_openai):
    fake_openai.script(
        coach("What gets in the way of sleep?"),
        coach("Deal: no screens after 22:30.", "no screens after 22:30", agreed=True),
    )

    result = chat(app, "goal_setting", "--as", PHONE, lines=["hello", "sleep", "my phone, ok"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"Chatting with goal_setting as {PHONE} on whatsapp. Ctrl-D or /quit to leave.\n"
    )
    assert NO_LLM_HINT not in result.output
    assert bot_lines(result.stdout) == [
        GREETING.format(name="there"),
        QUESTION,
        "What gets in the way of sleep?",
        "Deal: no screens after 22:30.",
        CONFIRM.format(goal="no screens after 22:30"),
    ]
    assert len(fake_openai.requests) == 2
    assert fake_openai.requests[0]["response_format"]["json_schema"]["strict"] is True

    with app.app_context():
        contact = db.session.scalars(sa.select(Contact)).one()
        assert contact.phone == PHONE
        conversation = db.session.scalars(sa.select(Conversation)).one()
        assert conversation.channel == "whatsapp"
        execution = db.session.scalars(sa.select(Execution)).one()
        assert (execution.flow_id, execution.status) == ("goal_setting", "ended")
        assert execution.variables["area"] == "sleep"
        assert execution.variables["goal"]["goal"] == "no screens after 22:30"
        stored = db.session.scalars(sa.select(Message).order_by(Message.id)).all()
        assert [(m.direction, m.author, m.step_id) for m in stored] == [
            ("inbound", "contact", None),
            ("outbound", "bot", "welcome"),
            ("outbound", "bot", "area"),
            ("inbound", "contact", None),
            ("outbound", "bot", "coach"),
            ("inbound", "contact", None),
            ("outbound", "bot", "coach"),
            ("outbound", "bot", "confirm"),
        ]
        assert {(m.execution_id, m.flow_id, m.contact_id) for m in stored} == {
            (execution.id, "goal_setting", contact.id)
        }
        inbound = [m for m in stored if m.direction == "inbound"]
        assert [m.body for m in inbound] == ["hello", "sleep", "my phone, ok"]
        assert all(m.turn_status == "done" for m in inbound)
        assert len({m.message_sid for m in inbound}) == 3
        for message in (m for m in stored if m.step_id == "coach"):
            assert message.model == "gpt-4o-mini"
            assert message.prompt_tokens > 0
            assert message.completion_tokens > 0
            assert message.latency_ms >= 0


def test_chat_and_webhook_share_the_contact_and_the_execution(app, twilio, fake_openai):
    fake_openai.script(coach("What gets in the way of sleep?"))
    result = chat(app, "goal_setting", "--as", PHONE, "--name", "Ana", lines=["hi", "1", "/quit"])
    assert result.exit_code == 0, result.output
    assert bot_lines(result.stdout) == [
        GREETING.format(name="Ana"),
        QUESTION,
        "What gets in the way of sleep?",
    ]

    fake_openai.script(coach("Deal!", "bed by 23:00", agreed=True))
    response = twilio.say("bed by 23:00, fine", sender=f"whatsapp:{PHONE}")
    assert messages_of(response.data) == ["Deal!", CONFIRM.format(goal="bed by 23:00")]

    with app.app_context():
        assert count(Contact) == 1
        execution = db.session.scalars(sa.select(Execution)).one()
        assert execution.status == "ended"
        executions = db.session.scalars(sa.select(Message.execution_id)).all()
        assert set(executions) == {execution.id}
        assert count(Message) == 3 + 2 + 3
    # The webhook's LLM call saw what was said in the terminal.
    history = fake_openai.requests[-1]["messages"][1:-1]
    assert {"role": "user", "content": "hi"} in history
    assert {"role": "assistant", "content": "What gets in the way of sleep?"} in history


def test_chat_without_an_llm_says_so_once_and_llm_steps_answer_the_fallback(
    app, app_config, fake_openai
):
    app_config["OPENAI_API_KEY"] = None
    app_config["OPENAI_BASE_URL"] = None
    unconfigured = create_app(app_config)
    try:
        result = chat(
            unconfigured, "goal_setting", "--as", PHONE, lines=["hello", "sleep", "still there?"]
        )

        assert result.exit_code == 0, result.output
        assert result.output.count(NO_LLM_HINT) == 1
        assert NO_LLM_HINT in result.stderr
        assert "OPENAI_API_KEY" in result.stderr
        assert bot_lines(result.stdout) == [
            GREETING.format(name="there"),
            QUESTION,
            FALLBACK,
            FALLBACK,
        ]
        assert fake_openai.requests == []
        with unconfigured.app_context():
            execution = db.session.scalars(sa.select(Execution)).one()
            # The LLM step may be retried once an LLM is configured.
            assert (execution.status, execution.current_step) == ("waiting", "coach")
            assert "No LLM is configured" in execution.error
            fallbacks = db.session.scalars(
                sa.select(Message).where(Message.body == FALLBACK).order_by(Message.id)
            ).all()
            assert [(m.author, m.step_id) for m in fallbacks] == [
                ("system", "coach"),
                ("system", "coach"),
            ]
            turn_statuses = db.session.scalars(
                sa.select(Message.turn_status)
                .where(Message.direction == "inbound")
                .order_by(Message.id)
            ).all()
            assert turn_statuses == ["done", "failed", "failed"]
    finally:
        with unconfigured.app_context():
            db.session.remove()
            db.engine.dispose()


def test_chat_with_a_flow_without_llm_step_runs_without_an_llm(app, app_config, fake_openai):
    app_config["OPENAI_API_KEY"] = None
    app_config["OPENAI_BASE_URL"] = None
    unconfigured = create_app(app_config)
    try:
        result = chat(unconfigured, "menu", "--as", PHONE, "--channel", "sms", lines=["x", "4"])
        assert result.exit_code == 0, result.output
        assert result.output.count(NO_LLM_HINT) == 1
        assert bot_lines(result.stdout)[-1] == "Bye for now! Reply MENU any time."
        with unconfigured.app_context():
            conversation = db.session.scalars(sa.select(Conversation)).one()
            assert conversation.channel == "sms"
            execution = db.session.scalars(sa.select(Execution)).one()
            assert (execution.flow_id, execution.status) == ("menu", "ended")
    finally:
        with unconfigured.app_context():
            db.session.remove()
            db.engine.dispose()


def test_unknown_flow_exits_non_zero_naming_the_known_flows(app):
    result = chat(app, "nope", "--as", PHONE, lines=["hello"])

    assert result.exit_code != 0
    assert "'nope'" in result.stderr
    assert "goal_setting" in result.stderr
    assert "menu" in result.stderr
    assert "bot> " not in result.output
    with app.app_context():
        assert count(Message) == 0


def test_invalid_phone_exits_non_zero(app):
    result = chat(app, "goal_setting", "--as", "5551234567", lines=["hello"])

    assert result.exit_code != 0
    assert "--as" in result.stderr
    assert "5551234567" in result.stderr
    assert "bot> " not in result.output
    with app.app_context():
        assert count(Message) == 0
        assert count(Contact) == 0
