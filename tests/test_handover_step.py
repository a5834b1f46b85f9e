"""The ``handover`` step: to a queue, an agent by email, or the available agent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.steps.handover import HandoverStep
from handover.control import confirm, control, handback
from handover.routing import set_available
from models import AgentPresence, Conversation, Execution, User, db
from tests.admin_support import add_user
from tests.twiml import messages_of

SENDER = "whatsapp:+15551230001"

FLOW = """\
id: support
trigger: {keywords: [support], default: true}
start: help
steps:
  help:
    handover: "{{ vars.to }}"
    message: "One moment, {{ contact.name or 'friend' }}."
    next: after
  after:
    say: "Welcome back to the bot."
    next: finish
  finish:
    end: true
variables: {to: available}
"""


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path) -> dict:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "support.yaml").write_text(FLOW, encoding="utf-8")
    return {**app_config, "FLOWS_DIR": str(folder), "HANDOVER_QUEUE": "desk"}


def user_id(app, email: str) -> int:
    with app.app_context():
        return db.session.scalars(sa.select(User.id).where(User.email == email)).one()


def closed_now(folder: Path, continue_flow: bool = False) -> dt.datetime:
    """Write `_settings.yaml` with the team closed now and open in about three hours.

    Returns:
        When the team opens (UTC).
    """
    now = dt.datetime.now(dt.UTC)
    opening = (now + dt.timedelta(hours=3)).replace(second=0, microsecond=0)
    opening -= dt.timedelta(minutes=opening.minute % 15)
    end = (
        "24:00"
        if opening.hour == 23 and opening.minute == 45
        else ((opening + dt.timedelta(minutes=15)).strftime("%H:%M"))
    )
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[opening.weekday()]
    flow_too = "  continue_flow: true\n" if continue_flow else ""
    (folder / "_settings.yaml").write_text(
        f"after_hours:\n  timezone: UTC\n  reply: We're closed.\n{flow_too}"
        f"  hours: {{{day}: '{opening:%H:%M}-{end}'}}\n",
        encoding="utf-8",
    )
    return opening


def state(app):
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
        status = db.session.scalars(sa.select(Execution.status)).one()
        return cid, control(db.session, cid), status


def test_available_goes_to_the_agent_who_waited_longest_and_the_bot_carries_on_after(
    app, twilio, fake_twilio
):
    for email in ("ann@example.org", "bob@example.org", "cy@example.org"):
        add_user(app, email, "agent")
    ann, bob, cy = (user_id(app, f"{n}@example.org") for n in ("ann", "bob", "cy"))
    with app.app_context():
        set_available(db.session, ann, True)
        set_available(db.session, bob, True)
        set_available(db.session, cy, False)  # never assigned, but not available
        db.session.get_one(AgentPresence, ann).last_assigned_at = dt.datetime.now(dt.UTC)
        db.session.commit()

    assert messages_of(twilio.say("support", sender=SENDER).data) == ["One moment, friend."]
    cid, now, status = state(app)
    assert (now.controlled_by, now.pending, status) == (f"agent:{bob}", True, "handed_over")
    assert messages_of(twilio.say("hello?", sender=SENDER).data) == []

    with app.app_context():
        confirm(db.session, cid, bob)
        handback(db.session, cid, f"agent:{bob}")
        db.session.commit()
    assert messages_of(twilio.say("thanks", sender=SENDER).data) == ["Welcome back to the bot."]
    assert fake_twilio.requests == []


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("agent:ann@example.org", "agent:1"),
        ("agent:nobody@example.org", "queue:desk"),
        ("queue:billing", "queue:billing"),
        ("available", "queue:desk"),
    ],
)
def test_targets(app, app_config, twilio, to, expected):
    add_user(app, "ann@example.org", "agent")
    expected = expected.replace("1", str(user_id(app, "ann@example.org")))
    with app.app_context():
        from models import Contact

        db.session.add(Contact(phone="+15551230001"))
        db.session.commit()
    # The flow reads its target from a variable: start it with that variable set.
    flow = FLOW.replace("{to: available}", f"{{to: '{to}'}}")
    Path(app_config["FLOWS_DIR"], "support.yaml").write_text(flow, encoding="utf-8")
    from app import create_app

    other = create_app(app_config)
    try:
        from tests.conftest import TwilioWebhook

        TwilioWebhook(other.test_client()).say("support", sender=SENDER)
        _, now, status = state(other)
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
    assert (now.controlled_by, status) == (expected, "handed_over")


def test_a_bad_target_is_refused_when_the_flow_loads():
    with pytest.raises(ValueError, match="queue:<name>, agent:<email> or available"):
        HandoverStep.model_validate({"handover": "somebody"})


def test_a_timeout_can_lead_to_a_handover(app, app_config, twilio, fake_twilio):
    flow = """\
id: support
trigger: {default: true}
start: area
steps:
  area:
    ask: "Sleep or movement?"
    choices: [sleep, movement]
    timeout: {after: 1h, next: help}
    next: help
  help:
    handover: queue:coaches
    message: "A coach will write to you here."
"""
    Path(app_config["FLOWS_DIR"], "support.yaml").write_text(flow, encoding="utf-8")
    from app import create_app

    other = create_app(app_config)
    try:
        from tests.conftest import TwilioWebhook

        TwilioWebhook(other.test_client()).say("hi", sender=SENDER)
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
        result = other.test_cli_runner().invoke(args=["engine", "tick", "--now", later])
        assert "Fired 1 timer(s)" in result.output, result.output
        _, now, status = state(other)
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
    assert (now.controlled_by, now.pending, status) == ("queue:coaches", True, "handed_over")
    assert fake_twilio.bodies == ["A coach will write to you here."]


def test_an_unaccepted_handover_goes_to_the_next_available_agent_then_the_bot(
    app, app_config, twilio, fake_twilio
):
    for email in ("ann@example.org", "bob@example.org"):
        add_user(app, email, "agent")
    ann, bob = (user_id(app, f"{n}@example.org") for n in ("ann", "bob"))
    with app.app_context():
        set_available(db.session, ann, True)
        set_available(db.session, bob, True)
        db.session.commit()
    from app import create_app

    other = create_app({**app_config, "HANDOVER_EXPIRED_TO": "next_agent"})
    try:
        from tests.conftest import TwilioWebhook

        TwilioWebhook(other.test_client()).say("support", sender=SENDER)
        holders = [state(other)[1].controlled_by]
        for minutes in (6, 12, 18):  # past HANDOVER_CONFIRM_SECONDS each time
            moment = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
            result = other.test_cli_runner().invoke(
                args=["handover", "expire", "--now", moment.isoformat()]
            )
            assert result.exit_code == 0, result.output
            holders.append(state(other)[1].controlled_by)
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
    # Ann (never assigned: waited longest), then Bob, then nobody else: the bot.
    assert holders == [f"agent:{ann}", f"agent:{bob}", "bot", "bot"]
    assert fake_twilio.bodies == [app.extensions["parley"].settings.handover_expired_message]


def test_outside_the_agents_hours_the_contact_is_told_when_someone_answers(
    app_config, request, fake_twilio
):
    opening = closed_now(Path(app_config["FLOWS_DIR"]))
    app = request.getfixturevalue("app")  # built now, with the settings file
    answer = request.getfixturevalue("twilio").say("human", sender=SENDER)
    assert messages_of(answer.data) == [
        app.extensions["parley"].settings.handover_message,
        f"Our team is away now; someone will answer from {opening:%A %H:%M}.",
    ]


def test_a_handover_step_outside_the_agents_hours_says_when_someone_answers(
    app_config, request, fake_twilio
):
    opening = closed_now(Path(app_config["FLOWS_DIR"]), continue_flow=True)
    app = request.getfixturevalue("app")
    answer = request.getfixturevalue("twilio").say("support", sender=SENDER)

    assert messages_of(answer.data) == [
        "We're closed.",
        "One moment, friend.",
        f"Our team is away now; someone will answer from {opening:%A %H:%M}.",
    ]
    assert state(app)[1].controlled_by == "queue:desk"
