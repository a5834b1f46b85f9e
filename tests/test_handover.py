"""Human handover: control events, a silent bot while an agent has it, and the bot back after.

Through the real webhook (TwiML answers) and the Twilio REST fake for what an
agent or a handback sends, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from handover.control import (
    ControlError,
    agent_message,
    confirm,
    control,
    events,
    handback,
    takeover,
)
from handover.expiry import expire_handovers
from handover.routing import hand_back
from models import Conversation, Execution, Message, db
from tests.twiml import messages_of

SENDER = "whatsapp:+15551230001"
QUESTION = "Sleep or movement?"
HANDOVER_MESSAGE = "Connecting you with a person. Someone will answer here shortly."

FLOW = """\
id: helpdesk
trigger: {default: true}
start: area
steps:
  area:
    ask: "Sleep or movement?"
    choices: [sleep, movement]
    save_as: area
    timeout: {after: 1h, next: nudge}
    next: done
  nudge:
    say: "Still there? Reply any time to carry on."
    next: area_again
  area_again:
    ask: "Sleep or movement?"
    choices: [sleep, movement]
    save_as: area
    next: done
  done:
    say: "Noted: {{ vars.area }}."
    next: finish
  finish:
    end: true
"""


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path) -> dict:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "helpdesk.yaml").write_text(FLOW, encoding="utf-8")
    return {**app_config, "FLOWS_DIR": str(folder)}


def conversation_id(app) -> int:
    with app.app_context():
        return db.session.scalars(sa.select(Conversation.id)).one()


def act(app, action, *args, **kwargs):
    """Run a control change in its own transaction and send what it stored."""
    with app.app_context():
        result = action(db.session, *args, **kwargs)
        db.session.commit()
        ids = result[1] if isinstance(result, tuple) else []
        if isinstance(result, int):
            ids = [result]
        if ids:
            app.extensions["parley"].send_stored(ids, db.session)
        db.session.remove()
    return result


def kinds(app, cid: int) -> list[tuple[str, str, str]]:
    with app.app_context():
        return [(event.kind, event.actor, event.target) for event in events(db.session, cid)]


def tick(app, now: dt.datetime) -> str:
    result = app.test_cli_runner().invoke(args=["engine", "tick", "--now", now.isoformat()])
    assert result.exit_code == 0, result.output
    return result.output


def later(hours: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)


def test_a_contact_asks_for_a_human_an_agent_answers_and_the_bot_speaks_again(
    app, twilio, fake_twilio
):
    assert messages_of(twilio.say("hi", sender=SENDER).data) == [QUESTION]
    assert messages_of(twilio.say("Human", sender=SENDER).data) == [HANDOVER_MESSAGE]
    cid = conversation_id(app)
    with app.app_context():
        state = control(db.session, cid)
        assert (state.controlled_by, state.pending) == ("queue:support", True)

    # While nobody has accepted yet, the bot already stays silent.
    assert messages_of(twilio.say("hello?", sender=SENDER).data) == []

    act(app, confirm, cid, 7)
    act(app, agent_message, cid, "agent:7", "Hi, I'm Sam. How can I help?")
    assert messages_of(twilio.say("sleep", sender=SENDER).data) == []  # to the agent
    act(app, handback, cid, "agent:7")

    assert messages_of(twilio.say("movement", sender=SENDER).data) == ["Noted: movement."]
    assert fake_twilio.bodies == ["Hi, I'm Sam. How can I help?"]
    assert kinds(app, cid) == [
        ("handover", "bot", "queue:support"),
        ("handover_confirmed", "agent:7", "agent:7"),
        ("handback", "agent:7", "bot"),
    ]
    with app.app_context():
        rows = db.session.execute(
            sa.select(
                Message.direction, Message.author, Message.body, Message.turn_status
            ).order_by(Message.id)
        ).all()
    assert [tuple(row) for row in rows] == [
        ("inbound", "contact", "hi", "done"),
        ("outbound", "bot", QUESTION, None),
        ("inbound", "contact", "Human", "done"),
        ("outbound", "system", HANDOVER_MESSAGE, None),
        ("inbound", "contact", "hello?", "skipped"),
        ("outbound", "agent:7", "Hi, I'm Sam. How can I help?", None),
        ("inbound", "contact", "sleep", "skipped"),
        ("inbound", "contact", "movement", "done"),
        ("outbound", "bot", "Noted: movement.", None),
    ]


def test_timers_pause_while_an_agent_has_the_conversation(app, twilio, fake_twilio):
    twilio.say("hi", sender=SENDER)
    cid = conversation_id(app)
    act(app, takeover, cid, 7)

    assert "Fired 0 timer(s)" in tick(app, later(2))
    assert fake_twilio.requests == []

    act(app, handback, cid, "agent:7")
    with app.app_context():
        row = db.session.scalars(sa.select(Execution)).one()
        deadline = row.wait_deadline.replace(tzinfo=dt.UTC)
        assert (row.status, row.current_step) == ("waiting", "area")
    # The hour it had left, counted again from the handback.
    assert later(0.9) < deadline < later(1.1)
    assert "Fired 0 timer(s)" in tick(app, later(0.5))
    assert "Fired 1 timer(s)" in tick(app, later(1.5))
    assert fake_twilio.bodies == ["Still there? Reply any time to carry on.", QUESTION]


def test_a_handback_at_a_chosen_step_enters_it_at_once(app, twilio, fake_twilio):
    twilio.say("hi", sender=SENDER)
    cid = conversation_id(app)
    act(app, takeover, cid, 7)
    with app.app_context(), pytest.raises(ControlError, match="no step 'nowhere'"):
        hand_back(app.extensions["parley"].turns(), cid, "agent:7", "nowhere")
    with app.app_context():
        ids = hand_back(app.extensions["parley"].turns(), cid, "agent:7", "nudge")
        app.extensions["parley"].send_stored(ids, db.session)

    assert fake_twilio.bodies == ["Still there? Reply any time to carry on.", QUESTION]
    assert messages_of(twilio.say("sleep", sender=SENDER).data) == ["Noted: sleep."]
    assert [kind for kind, _, _ in kinds(app, cid)] == ["takeover", "handback"]


def test_only_the_agent_in_control_may_reply_or_hand_back(app, twilio, fake_twilio):
    twilio.say("hi", sender=SENDER)
    cid = conversation_id(app)
    with app.app_context(), pytest.raises(ControlError, match="take the conversation over"):
        agent_message(db.session, cid, "agent:7", "hello")
    act(app, takeover, cid, 7)
    with app.app_context():
        with pytest.raises(ControlError, match="agent:7 has the conversation"):
            takeover(db.session, cid, 8)
        db.session.rollback()
        with pytest.raises(ControlError, match="agent:8 does not have"):
            handback(db.session, cid, "agent:8")
        db.session.rollback()
    assert fake_twilio.requests == []


def test_an_unconfirmed_handover_goes_back_to_the_bot_with_a_message(app, twilio, fake_twilio):
    twilio.say("hi", sender=SENDER)
    twilio.say("agent", sender=SENDER)
    cid = conversation_id(app)
    result = app.test_cli_runner().invoke(
        args=["handover", "expire", "--now", later(0.01).isoformat()]
    )
    assert result.exit_code == 0, result.output
    assert "Gave back 0 handover(s)" in result.output  # 36 s: not yet (300 s)

    result = app.test_cli_runner().invoke(
        args=["handover", "expire", "--now", later(0.1).isoformat()]
    )
    assert "Gave back 1 handover(s)" in result.output

    assert fake_twilio.bodies == [app.extensions["parley"].settings.handover_expired_message]
    assert [kind for kind, _, _ in kinds(app, cid)] == ["handover", "handover_expired"]
    assert messages_of(twilio.say("sleep", sender=SENDER).data) == ["Noted: sleep."]


def test_expire_handovers_leaves_accepted_ones_alone(app, twilio, fake_twilio):
    twilio.say("agent", sender=SENDER)
    cid = conversation_id(app)
    act(app, confirm, cid, 7)
    with app.app_context():
        assert expire_handovers(db.session, later(1), 300, "bye") == (0, [])
        assert control(db.session, cid).controlled_by == "agent:7"


def test_the_clock_gives_back_a_handover_nobody_accepted(app, twilio, fake_twilio):
    twilio.say("hi", sender=SENDER)
    twilio.say("human", sender=SENDER)
    cid = conversation_id(app)

    assert "Fired 0 timer(s)" in tick(app, later(0.01))
    assert [kind for kind, _, _ in kinds(app, cid)] == ["handover"]
    assert "Fired 0 timer(s)" in tick(app, later(0.1))  # the timer resumed: 1 h left

    assert [kind for kind, _, _ in kinds(app, cid)] == ["handover", "handover_expired"]
    assert fake_twilio.bodies == [app.extensions["parley"].settings.handover_expired_message]
    assert messages_of(twilio.say("movement", sender=SENDER).data) == ["Noted: movement."]
