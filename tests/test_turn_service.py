"""The turn service through its real entry points: the bugs its six copies had, and its lease.

Each entry point (the webhook, a timer, a Studio step endpoint...) is driven as
Twilio, the clock or Studio drives it; what the contact gets is read from the
TwiML or the fake Twilio REST API, and the transcript from the database.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from handover.control import takeover
from models import Execution, Message, db
from models.store import SqlStore
from models.turn_store import SqlTurnStore
from tests.conftest import POSTGRES_ADMIN_URL
from tests.twiml import messages_of

ANA = "whatsapp:+15551230001"
TEMPLATE_SID = "HXb5b62575e6e4ff6129ad7c8efe1f983e"
STUDIO_TOKEN = "studio-token-turns"

FLOW = f"""\
id: coaching
trigger: {{default: true}}
start: welcome
steps:
  welcome:
    say: "Welcome to the coach, {{{{ contact.name or 'there' }}}}."
    next: coach
  coach:
    llm:
      history: 6
      until: "{{{{ false }}}}"   # converse for ever
    timeout: {{after: 1h, next: nudge}}
    next: coach
  nudge:
    say: "Still there? Reply any time to carry on."
    template:
      content_sid: {TEMPLATE_SID}
      variables: {{"1": "{{{{ contact.name }}}}"}}
    next: coach
"""


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path) -> dict:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "coaching.yaml").write_text(FLOW, encoding="utf-8")
    (folder / "thinking.yaml").write_text(SLOW_FLOW, encoding="utf-8")
    return {**app_config, "FLOWS_DIR": str(folder), "STUDIO_TOKEN": STUDIO_TOKEN}


def outbound(app) -> list[Message]:
    with app.app_context():
        rows = db.session.scalars(
            sa.select(Message).where(Message.direction == "outbound").order_by(Message.id)
        ).all()
        db.session.expunge_all()
        return list(rows)


def inbound_statuses(app) -> list[str | None]:
    with app.app_context():
        return list(
            db.session.scalars(
                sa.select(Message.turn_status)
                .where(Message.direction == "inbound")
                .order_by(Message.id)
            )
        )


def tick(app, hours: float) -> str:
    now = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).isoformat()
    result = app.test_cli_runner().invoke(args=["engine", "tick", "--now", now])
    assert result.exit_code == 0, result.output
    return result.output


# -- the drift bugs ------------------------------------------------------------


def test_an_llm_step_sees_what_the_bot_said_earlier_in_the_same_turn(app, twilio, fake_openai):
    fake_openai.script("What would you like to work on?")
    response = twilio.say("hi", sender=ANA, ProfileName="Ana")
    assert messages_of(response.data) == [
        "Welcome to the coach, Ana.",
        "What would you like to work on?",
    ]
    messages = fake_openai.requests[0]["messages"]
    assert {"role": "assistant", "content": "Welcome to the coach, Ana."} in messages
    assert messages[-1] == {"role": "user", "content": "hi"}


def test_a_nudge_reached_by_a_timeout_goes_out_as_its_template_outside_the_window(
    app, twilio, fake_openai, fake_twilio
):
    twilio.say("hi", sender=ANA, ProfileName="Ana")
    with app.app_context():  # the contact last wrote 25 hours ago
        past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)
        db.session.execute(
            sa.update(Message).where(Message.direction == "inbound").values(created_at=past)
        )
        db.session.commit()

    assert "Fired 1 timer(s)" in tick(app, hours=2)

    [request] = fake_twilio.requests  # WhatsApp takes only the template now (error 63016)
    assert request["form"]["ContentSid"] == TEMPLATE_SID
    assert request["form"]["ContentVariables"] == '{"1": "Ana"}'
    [nudge] = [row for row in outbound(app) if row.step_id == "nudge"]
    assert nudge.media["template"]["content_sid"] == TEMPLATE_SID


def studio_step(client, body: str = ""):
    return client.post(
        "/studio/flows/coaching/steps/coach",
        data={"From": ANA, "To": "whatsapp:+14155238886", "Body": body},
        headers={"Authorization": f"Bearer {STUDIO_TOKEN}"},
    )


def test_a_studio_step_is_silent_while_an_agent_has_the_conversation(app, client, fake_openai):
    fake_openai.script("First answer.")
    assert studio_step(client, "hello").json["reply"] == "First answer."
    with app.app_context():
        conversation_id = db.session.scalar(sa.select(Message.conversation_id).limit(1))
        takeover(db.session, conversation_id, 7)
        db.session.commit()
    before = len(outbound(app))

    answer = studio_step(client, "are you there?").json

    assert answer["reply"] == "" and answer["replies"] == []
    assert answer["controlled_by"] == "agent:7"
    assert len(fake_openai.requests) == 1  # the model was not asked
    assert len(outbound(app)) == before  # the bot stored nothing
    assert inbound_statuses(app)[-1] == "skipped"  # the agent reads it


@pytest.mark.settings(TURN_LEASE_SECONDS="1")
def test_the_database_lost_mid_turn_answers_once_through_the_sweeper(
    app, app_config, twilio, fake_openai, fake_twilio
):
    if not app_config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("needs a database server that can refuse connections (PostgreSQL)")
    name = app_config["DATABASE_URL"].rsplit("/", 1)[1]
    admin_url = POSTGRES_ADMIN_URL

    def lose_the_database(_body: dict) -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )

    fake_openai.script("The real answer.")
    fake_openai.on_request = lose_the_database
    try:
        response = twilio.say("hi", sender=ANA, ProfileName="Ana")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        fake_openai.on_request = None

    # Nothing could be written, not even the fallback: nothing is answered now...
    assert response.status_code == 200
    assert messages_of(response.data) == []
    assert inbound_statuses(app) == ["pending"]
    assert outbound(app) == []

    # ...and the sweeper answers, once, when the lease has expired.
    fake_openai.script("The real answer.")
    time.sleep(1.2)  # TURN_LEASE_SECONDS: the lost turn's lease expires
    result = app.test_cli_runner().invoke(args=["delivery", "sweep", "--grace", "0"])
    assert result.exit_code == 0, result.output
    assert fake_twilio.bodies == ["Welcome to the coach, Ana.", "The real answer."]
    assert [row.body for row in outbound(app)] == fake_twilio.bodies
    assert inbound_statuses(app) == ["done"]


# -- no connection held while the model answers ----------------------------------


def test_no_database_connection_is_held_while_the_model_answers(app, twilio, fake_openai):
    held: list[int] = []
    with app.app_context():
        engine = db.engine  # the same engine the request uses
    fake_openai.on_request = lambda _body: held.append(engine.pool.checkedout())

    response = twilio.say("hi", sender=ANA)

    assert messages_of(response.data)[-1] == "OK"
    assert held == [0]


# -- the lease -------------------------------------------------------------------


@pytest.mark.settings(TURN_LEASE_WAIT_SECONDS="0.2")
def test_a_turn_whose_lease_was_taken_over_writes_nothing(app, twilio, fake_openai):
    """A turn that outlived its lease (another worker claimed the contact) must not commit."""
    with app.app_context():
        engine = db.engine

    def another_worker_claims(_body: dict) -> None:
        with sa.orm.Session(engine) as session:
            contact_id = session.scalar(sa.select(Message.contact_id).limit(1))
            store = SqlTurnStore(session)
            later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # ours has expired by then
            assert store.claim(contact_id, later, seconds=3600) is not None
            session.commit()

    fake_openai.on_request = another_worker_claims

    response = twilio.say("hi", sender=ANA)

    assert messages_of(response.data) == []  # discarded, and the contact is still busy
    assert outbound(app) == []
    assert inbound_statuses(app) == ["pending"]  # the worker that holds it answers it
    with app.app_context():
        assert db.session.scalars(sa.select(Execution)).all() == []


def test_leases_claim_fence_and_release(app):
    with app.app_context():
        session = db.session
        contact = SqlStore(session).upsert_contact("+15550000001", None)
        session.commit()
        store = SqlTurnStore(session)
        now = dt.datetime.now(dt.UTC)

        first = store.claim(contact, now, seconds=60)
        assert first == 1
        assert store.claim(contact, now, seconds=60) is None  # held
        expired = store.claim(contact, now + dt.timedelta(seconds=61), seconds=60)
        assert expired == 2  # taken over once expired, with a new token
        assert store.fence(contact, first) is False  # the old holder may not commit
        assert store.fence(contact, expired) is True  # the new one may, and frees it
        session.commit()
        assert store.claim(contact, now, seconds=60) == 3  # free again
        store.release(contact, 3)
        session.commit()
        assert store.claim(contact, now, seconds=60) == 4
        session.commit()


# -- the inline turn's deadline (Twilio waits 15 s for the webhook's answer) ------

SLOW_FLOW = """\
id: thinking
trigger: {keywords: [think]}
fallback: "Sorry, that took too long. Please write again."
start: first
steps:
  first:
    llm: {history: 0}
    next: second
  second:
    llm: {history: 0}
    next: third
  third:
    llm: {history: 0}
"""


@pytest.mark.settings(TURN_DEADLINE_SECONDS="2", OPENAI_TIMEOUT="1.5", OPENAI_MAX_RETRIES="1")
def test_an_inline_turn_answers_within_its_deadline_with_the_fallback(app, twilio, fake_openai):
    fake_openai.delay_seconds = 1.2  # each answer comes, slowly: three would take 3.6 s
    started = time.monotonic()

    response = twilio.say("think", sender=ANA)

    elapsed = time.monotonic() - started
    assert messages_of(response.data) == ["OK", "Sorry, that took too long. Please write again."]
    assert elapsed < 3.0  # the second call got the 0.8 s left, and no retry
    assert len(fake_openai.requests) == 2
    assert inbound_statuses(app) == ["timed_out"]
