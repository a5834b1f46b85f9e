"""Timers fire from the database: `flask engine tick` after a restart of the server."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import create_app
from models import Execution, Message, db
from tests.conftest import OUR_WHATSAPP
from tests.twiml import messages_of

SENDER = "whatsapp:+15551230001"
QUESTION = "Sleep or movement?"
NUDGE = "Still there, Ana? Reply any time to carry on."

FLOW = """\
id: nudging
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
    say: "Still there, {{ contact.name }}? Reply any time to carry on."
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
    (folder / "nudging.yaml").write_text(FLOW, encoding="utf-8")
    return {**app_config, "FLOWS_DIR": str(folder)}


def later(hours: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).isoformat()


def tick(app, now: str) -> str:
    result = app.test_cli_runner().invoke(args=["engine", "tick", "--now", now])
    assert result.exit_code == 0, result.output
    return result.output


def execution(app) -> Execution:
    with app.app_context():
        row = db.session.scalars(sa.select(Execution)).one()
        db.session.expunge(row)
        return row


def test_a_timeout_fires_after_a_restart_of_the_server(app, twilio, fake_twilio, app_config):
    response = twilio.say("hi", sender=SENDER, ProfileName="Ana")
    assert messages_of(response.data) == [QUESTION]
    assert execution(app).wait_deadline is not None

    restarted = create_app(app_config)  # a new process: nothing of the old one in memory
    try:
        assert "Fired 0 timer(s)" in tick(restarted, later(0.5))  # not due yet
        assert fake_twilio.requests == []

        assert "Fired 1 timer(s), stored 2 message(s)" in tick(restarted, later(2))

        assert fake_twilio.bodies == [NUDGE, QUESTION]
        assert {request["form"]["To"] for request in fake_twilio.requests} == {SENDER}
        assert {request["form"]["From"] for request in fake_twilio.requests} == {OUR_WHATSAPP}
        moved = execution(restarted)
        assert (moved.current_step, moved.status, moved.wait_deadline) == (
            "area_again",
            "waiting",
            None,
        )
        with restarted.app_context():
            sent = db.session.scalars(
                sa.select(Message).where(Message.direction == "outbound").order_by(Message.id)
            ).all()
            assert [(m.body, m.step_id, m.execution_id) for m in sent[-2:]] == [
                (NUDGE, "nudge", moved.id),
                (QUESTION, "area_again", moved.id),
            ]
            assert all(m.message_sid and m.message_sid.startswith("SM") for m in sent[-2:])

        # Idempotent: fired once, however often the clock ticks.
        assert "Fired 0 timer(s)" in tick(restarted, later(3))
        assert len(fake_twilio.requests) == 2

        # And the conversation carries on from where the timer left it.
        answer = twilio.say("movement", sender=SENDER, ProfileName="Ana")
        assert messages_of(answer.data) == ["Noted: movement."]
    finally:
        with restarted.app_context():
            db.session.remove()
            db.engine.dispose()


def test_an_answer_in_time_cancels_the_timer(app, twilio, fake_twilio):
    twilio.say("hi", sender=SENDER, ProfileName="Ana")
    twilio.say("sleep", sender=SENDER, ProfileName="Ana")

    assert "Fired 0 timer(s)" in tick(app, later(2))
    assert fake_twilio.requests == []


def test_a_contact_who_opted_out_gets_nothing_from_a_timer(app, twilio, fake_twilio):
    twilio.say("hi", sender=SENDER, ProfileName="Ana")
    twilio.say("STOP", sender=SENDER, ProfileName="Ana")

    assert "Fired 1 timer(s)" in tick(app, later(2))

    assert fake_twilio.requests == []
    with app.app_context():
        statuses = db.session.scalars(
            sa.select(Message.status).where(Message.step_id.in_(["nudge", "area_again"]))
        ).all()
        assert statuses == ["canceled", "canceled"]


def test_two_clocks_at_once_fire_each_timer_once(app, twilio, fake_twilio, app_config):
    for number in range(4):
        twilio.say("hi", sender=f"whatsapp:+1555123100{number}", ProfileName="Ana")
    other = create_app(app_config)
    barrier = threading.Barrier(2)
    outputs: list[str] = []

    def run(instance) -> None:
        barrier.wait()
        outputs.append(tick(instance, later(2)))

    threads = [threading.Thread(target=run, args=(instance,)) for instance in (app, other)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()

    assert len(outputs) == 2
    assert sorted(fake_twilio.bodies) == sorted([NUDGE, QUESTION] * 4)
    recipients = Counter(request["form"]["To"] for request in fake_twilio.requests)
    assert recipients == {f"whatsapp:+1555123100{number}": 2 for number in range(4)}


def test_tick_refuses_a_time_that_is_not_iso_8601(app):
    result = app.test_cli_runner().invoke(args=["engine", "tick", "--now", "tomorrow"])
    assert result.exit_code != 0
    assert "not an ISO 8601 time" in result.output
