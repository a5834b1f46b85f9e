"""Queued turns, keyed sends, status callbacks, faults and the WhatsApp window.

These run the dispatcher in the test process (`tasks.dispatcher().drain`), on
SQLite and PostgreSQL; tests/test_delivery_scale.py runs real Celery workers.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from kombu.transport.redis import Channel
from twilio.request_validator import RequestValidator

from delivery.dispatcher import Dispatcher
from delivery.outbox import Settings
from delivery.status import failed_deliveries
from delivery.window import OUTSIDE_WINDOW
from models import Contact, Delivery, Message, db
from models.store import OutboundPart, SqlStore, StoredInbound
from tasks import dispatcher, restore_interval
from tests.conftest import AUTH_TOKEN, PUBLIC_BASE_URL
from tests.delivery_support import FLOWS, redis_or_skip
from tests.fakes.openai_server import Error
from tests.twiml import messages_of

ANA = "whatsapp:+15551230001"


@pytest.fixture
def app_config(app_config):
    """The echo flows, turns queued on the tests' Redis database, quick retries."""
    return {
        **app_config,
        "FLOWS_DIR": str(FLOWS),
        "REDIS_URL": redis_or_skip(),
        "TWILIO_RETRY_BACKOFF": "0.01",
        "TWILIO_SEND_DEADLINE": "5",
    }


def drain(app, contact_id: int | None = None) -> None:
    """Run what a worker runs for each contact (all contacts when None)."""
    with app.app_context():
        ids = [contact_id] if contact_id else db.session.scalars(sa.select(Contact.id)).all()
        for cid in ids:
            assert dispatcher().drain(cid)
        db.session.remove()


def outbound(app) -> list[Message]:
    with app.app_context():
        rows = db.session.scalars(
            sa.select(Message).where(Message.direction == "outbound").order_by(Message.id)
        ).all()
        db.session.expunge_all()
        return list(rows)


def turn_statuses(app) -> list[str]:
    with app.app_context():
        return list(
            db.session.scalars(
                sa.select(Message.turn_status)
                .where(Message.direction == "inbound")
                .order_by(Message.id)
            )
        )


def post_status(client, form: dict[str, str], query: str = ""):
    path = "/twilio/status" + (f"?{query}" if query else "")
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_BASE_URL + path, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature})


def test_webhook_answers_at_once_and_the_worker_replies_in_order(app, twilio, fake_twilio):
    responses = [twilio.say(f"m{index}", sender=ANA) for index in range(3)]

    assert [messages_of(response.data) for response in responses] == [[], [], []]
    assert turn_statuses(app) == ["pending"] * 3
    assert fake_twilio.requests == []

    drain(app)

    assert fake_twilio.bodies == ["got m0", "got m1", "got m2"]
    assert {request["form"]["To"] for request in fake_twilio.requests} == {ANA}
    callbacks = [request["form"]["StatusCallback"] for request in fake_twilio.requests]
    assert all(url.startswith(PUBLIC_BASE_URL + "/twilio/status?delivery=") for url in callbacks)
    assert turn_statuses(app) == ["done"] * 3
    rows = outbound(app)
    assert [(row.body, row.status) for row in rows] == [
        ("got m0", "queued"),
        ("got m1", "queued"),
        ("got m2", "queued"),
    ]
    assert all(row.message_sid for row in rows)


def test_a_task_that_runs_twice_sends_nothing_twice(app, twilio, fake_twilio):
    twilio.say("m0", sender=ANA)
    drain(app)
    drain(app)  # the same task, delivered again

    assert fake_twilio.bodies == ["got m0"]
    with app.app_context():
        deliveries = db.session.scalars(sa.select(Delivery)).all()
        assert [(d.state, d.attempts) for d in deliveries] == [("sent", 1)]


def test_a_database_error_after_a_send_does_not_lose_its_outcome(app, twilio, fake_twilio):
    """The REST call went through; writing its outcome fails once: written again."""
    twilio.say("m0", sender=ANA)
    twilio.say("m1", sender=ANA)
    failures = []

    def fail_once(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE delivery") and not failures:
            failures.append(statement)
            raise sa.exc.OperationalError(statement, parameters, Exception("connection lost"))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", fail_once)
    try:
        drain(app)
    finally:
        sa.event.remove(engine, "before_cursor_execute", fail_once)

    assert len(failures) == 1
    # Neither message is held back behind a send left "sending", nor sent twice.
    assert fake_twilio.bodies == ["got m0", "got m1"]
    assert [(row.body, row.status, bool(row.message_sid)) for row in outbound(app)] == [
        ("got m0", "queued", True),
        ("got m1", "queued", True),
    ]
    with app.app_context():
        assert db.session.scalars(sa.select(Delivery.state)).all() == ["sent", "sent"]


def test_a_send_cut_short_is_never_repeated_and_its_callback_fills_it_in(
    app, twilio, fake_twilio, client
):
    twilio.say("m0", sender=ANA)
    with app.app_context():
        worker = dispatcher()
        contact_id = db.session.scalar(sa.select(Contact.id))
        assert worker.run_next_turn(contact_id) == "ran"
        message_id = db.session.scalar(sa.select(Message.id).where(Message.direction == "outbound"))
        # The worker wrote "sending" and died during the REST call.
        claim = worker.outbox._claim(message_id, wait_for_others=True)
        db.session.remove()

    drain(app)  # the redelivered task: the send may be under way elsewhere
    assert fake_twilio.requests == []

    with app.app_context():
        worker = dispatcher()
        worker.outbox.settings = Settings(inflight_seconds=0)  # ... long enough ago
        worker.drain(contact_id)
        row = db.session.get(Message, message_id)
        assert (row.status, row.message_sid) == ("unknown", None)
        assert failed_deliveries(db.session) == [(contact_id, "+15551230001", 1)]
        db.session.remove()
    assert fake_twilio.requests == []

    # Twilio had accepted it: its callback names the delivery.
    sid = "SM" + "e" * 32
    form = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": "AC" + "0" * 32}
    response = post_status(client, form, f"delivery={claim.key}")
    assert (response.status_code, response.get_data(as_text=True).strip()) == (200, "applied")
    with app.app_context():
        row = db.session.get(Message, message_id)
        assert (row.status, row.message_sid) == ("delivered", sid)
        assert db.session.scalar(sa.select(Delivery.state)) == "sent"


def test_status_callbacks_follow_the_lifecycle_whatever_their_order(app, twilio, client):
    twilio.say("m0", sender=ANA)
    drain(app)
    sid = outbound(app)[0].message_sid

    def status_after(status: str, **extra: str) -> str:
        response = post_status(client, {"MessageSid": sid, "MessageStatus": status, **extra})
        assert response.status_code == 200
        with app.app_context():
            return db.session.scalar(sa.select(Message.status).where(Message.message_sid == sid))

    assert status_after("delivered") == "delivered"
    assert status_after("sent") == "delivered"  # late: never backwards
    assert status_after("queued") == "delivered"
    assert status_after("read") == "read"
    assert status_after("delivered") == "read"


def test_failed_status_keeps_its_error_code_and_is_counted(app, twilio, client):
    twilio.say("m0", sender=ANA)
    drain(app)
    sid = outbound(app)[0].message_sid

    form = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "63016"}
    assert post_status(client, form).status_code == 200

    with app.app_context():
        row = db.session.scalars(sa.select(Message).where(Message.message_sid == sid)).one()
        assert (row.status, row.error_code) == ("undelivered", 63016)
    result = app.test_cli_runner().invoke(args=["delivery", "failures"])
    assert result.exit_code == 0
    assert "contact 1 (+15551230001): 1 failed" in result.output


def test_status_callbacks_are_checked(app, client):
    sid = "SM" + "a" * 32
    unsigned = client.post("/twilio/status", data={"MessageSid": sid, "MessageStatus": "sent"})
    assert unsigned.status_code == 403
    bad = post_status(client, {"MessageSid": sid, "MessageStatus": "huh"})
    assert bad.status_code == 400 and b"MessageStatus" in bad.data
    missing = post_status(client, {"MessageStatus": "sent"})
    assert missing.status_code == 400 and b"MessageSid" in missing.data
    unknown = post_status(client, {"MessageSid": sid, "MessageStatus": "sent"})
    assert (unknown.status_code, unknown.get_data(as_text=True).strip()) == (200, "unknown")


def test_twilio_429_and_5xx_are_retried_then_sent_once(app, twilio, fake_twilio):
    fake_twilio.faults[:] = [429, 500, 503]
    twilio.say("m0", sender=ANA)
    drain(app)

    assert fake_twilio.bodies == ["got m0"]
    assert fake_twilio.attempts == 4
    with app.app_context():
        assert db.session.scalar(sa.select(Delivery.attempts)) == 4


def test_twilio_failing_past_the_deadline_is_recorded_failed_and_the_next_still_goes(
    app, twilio, fake_twilio
):
    fake_twilio.faults[:] = [500] * 10
    twilio.say("m0", sender=ANA)
    drain(app)
    fake_twilio.faults.clear()
    twilio.say("m1", sender=ANA)
    drain(app)

    assert fake_twilio.bodies == ["got m1"]
    rows = outbound(app)
    assert [(row.body, row.status) for row in rows] == [
        ("got m0", "failed"),
        ("got m1", "queued"),
    ]
    with app.app_context():
        error = db.session.scalar(sa.select(Delivery.error).order_by(Delivery.id))
        assert "Twilio 500" in error


def test_openai_429_and_5xx_are_retried_by_the_client(app, app_config, fake_openai, fake_twilio):
    from app import create_app
    from tests.conftest import TwilioWebhook

    variant = create_app({**app_config, "OPENAI_MAX_RETRIES": "2"})
    fake_openai.script(Error(429), Error(500), "unused")
    TwilioWebhook(variant.test_client()).say("m0", sender=ANA)
    drain(variant)

    assert len(fake_openai.requests) == 3
    assert fake_twilio.bodies == ["got m0"]
    assert turn_statuses(app) == ["done"]
    with variant.app_context():
        db.engine.dispose()


def test_openai_down_past_its_retries_sends_the_fallback_and_marks_the_turn_failed(
    app, twilio, fake_openai, fake_twilio
):
    fake_openai.default_reply = Error(500)
    twilio.say("m0", sender=ANA)
    drain(app)

    assert fake_twilio.bodies == ["fallback"]
    assert turn_statuses(app) == ["failed"]


def test_openai_timeout_sends_the_fallback(app, app_config, fake_openai, fake_twilio):
    from app import create_app
    from tests.conftest import TwilioWebhook

    variant = create_app({**app_config, "OPENAI_TIMEOUT": "0.2"})
    fake_openai.delay_seconds = 1.0
    TwilioWebhook(variant.test_client()).say("m0", sender=ANA)
    drain(variant)

    assert fake_twilio.bodies == ["fallback"]
    assert turn_statuses(app) == ["failed"]
    with variant.app_context():
        db.engine.dispose()


def test_workers_look_for_a_dead_workers_tasks_within_the_visibility_timeout(app):
    # kombu's defaults scan every 100 s whatever the timeout (an older kombu
    # ignores the two options: it must know them).
    options = app.extensions["celery"].conf.broker_transport_options
    assert options["visibility_timeout"] == 300
    assert options["unacked_restore_interval"] == 10
    assert options["unacked_restore_throttle"] == 1
    assert {"unacked_restore_interval", "unacked_restore_throttle"} <= set(
        Channel.from_transport_options
    )
    assert [restore_interval(seconds) for seconds in (1, 3, 30, 300, 3600)] == [1, 1, 10, 10, 10]


def test_redis_unreachable_runs_the_turn_inline(app, app_config, fake_twilio):
    from app import create_app
    from tests.conftest import TwilioWebhook

    variant = create_app({**app_config, "REDIS_URL": "redis://127.0.0.1:9/0"})
    response = TwilioWebhook(variant.test_client()).say("m0", sender=ANA)

    assert response.status_code == 200
    assert messages_of(response.data) == ["got m0"]
    assert turn_statuses(app) == ["done"]
    with variant.app_context():
        db.engine.dispose()


def test_database_unreachable_is_503_with_nothing_half_written(app_config, fake_twilio):
    from app import create_app
    from tests.conftest import TwilioWebhook

    app = create_app(
        {**app_config, "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/parley"},
    )
    response = TwilioWebhook(app.test_client()).say("m0", sender=ANA)

    assert response.status_code == 503
    assert b"database" in response.data
    import redis

    assert redis.Redis.from_url(app_config["REDIS_URL"]).llen("parley") == 0


def test_the_sweeper_runs_turns_that_never_ran(app, twilio, fake_twilio):
    twilio.say("m0", sender=ANA)  # enqueued, but no worker ever takes it
    with app.app_context():
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        db.session.execute(sa.update(Message).values(created_at=past))
        db.session.commit()
    app.extensions.pop("celery")  # as without REDIS_URL: the sweeper runs them itself

    result = app.test_cli_runner().invoke(args=["delivery", "sweep"])

    assert result.exit_code == 0, result.output
    assert "1 stalled contact(s) run." in result.output
    assert fake_twilio.bodies == ["got m0"]
    again = app.test_cli_runner().invoke(args=["delivery", "sweep"])
    assert "0 stalled contact(s)" in again.output
    assert fake_twilio.bodies == ["got m0"]


def test_typed_input_reaches_the_flow_through_the_queue(app, twilio, fake_twilio):
    twilio.say("", sender=ANA, ButtonPayload="yes-1", ButtonText="Yes")
    twilio.say(
        "",
        sender=ANA,
        Latitude="52.3039",
        Longitude="4.7500",
        Address="Schiphol",
        Label="Office",
    )
    twilio.say(
        "",
        sender=ANA,
        NumMedia="1",
        MediaUrl0="https://api.twilio.com/media/ME1",
        MediaContentType0="image/jpeg",
    )
    drain(app)

    assert fake_twilio.bodies == [
        "got  button=yes-1",
        "got  at=52.3039,4.75",
        "got  media=image/jpeg",
    ]


def test_bad_location_is_a_400(app, twilio):
    response = twilio.say("", sender=ANA, Latitude="north", Longitude="4.75")
    assert response.status_code == 400
    assert b"Latitude" in response.data


def _age_conversation(app, hours: float) -> None:
    with app.app_context():
        past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
        db.session.execute(
            sa.update(Message).where(Message.direction == "inbound").values(created_at=past)
        )
        db.session.commit()


def _store_later(app, parts: list[OutboundPart]) -> list[int]:
    """Store messages as a timer would, long after the contact's last message."""
    with app.app_context():
        message = db.session.scalars(sa.select(Message).order_by(Message.id)).first()
        ids = SqlStore(db.session).store_outbound(
            StoredInbound(0, message.contact_id, message.conversation_id),
            parts,
            execution_id=None,
            flow_id=None,
        )
        db.session.commit()
        return ids


def test_outside_the_whatsapp_window_a_template_is_sent_or_nothing(app, twilio, fake_twilio):
    twilio.say("nudge", sender=ANA, ProfileName="Ana")
    drain(app)
    assert fake_twilio.bodies == ["Still there, Ana?"]  # inside the window: free-form
    template = outbound(app)[0].media["template"]
    assert template == {
        "content_sid": "HXb5b62575e6e4ff6129ad7c8efe1f983e",
        "content_variables": {"1": "Ana"},
    }
    fake_twilio.requests.clear()
    _age_conversation(app, hours=25)
    ids = _store_later(
        app,
        [OutboundPart(body="Still there, Ana?", template=template), OutboundPart(body="Hello?")],
    )

    with app.app_context():
        sent = app.extensions["parley"].send_stored(ids, db.session)

    assert sent == 1
    [request] = fake_twilio.requests
    assert request["form"]["ContentSid"] == "HXb5b62575e6e4ff6129ad7c8efe1f983e"
    assert request["form"]["ContentVariables"] == '{"1": "Ana"}'
    assert "Body" not in request["form"]
    with app.app_context():
        free_form = db.session.get(Message, ids[1])
        assert free_form.status == "failed"
        reason = db.session.scalar(sa.select(Delivery.error).where(Delivery.message_id == ids[1]))
        assert reason == OUTSIDE_WINDOW


def test_sms_has_no_window_and_media_goes_with_the_text(app, twilio, fake_twilio):
    twilio.say("m0", sender="+15551230002")
    drain(app)
    fake_twilio.requests.clear()
    _age_conversation(app, hours=48)
    image = "https://example.com/goal.png"
    ids = _store_later(app, [OutboundPart(body="Hello?", media_url=image)])
    with app.app_context():
        worker = Dispatcher(db.session, None, app.extensions["parley"].sender(), Settings())
        assert worker.send_messages(ids) == 1
    assert fake_twilio.bodies == ["Hello?"]
    assert fake_twilio.requests[0]["form"]["MediaUrl"] == image


def test_a_burst_at_an_llm_step_is_answered_as_one_turn_with_a_debounce(
    app_config, app, fake_openai, fake_twilio
):
    from app import create_app
    from tests.conftest import TwilioWebhook

    variant = create_app({**app_config, "TURN_DEBOUNCE_MS": "1"})
    webhook = TwilioWebhook(variant.test_client())
    webhook.say("m0", sender=ANA)
    drain(variant)  # the execution now waits at the llm step
    for text in ("a", "b", "c"):
        webhook.say(text, sender=ANA)
    drain(variant)

    assert fake_twilio.bodies == ["got m0", "got a\nb\nc"]
    assert turn_statuses(variant) == ["done", "merged", "merged", "done"]
    assert fake_openai.requests[-1]["messages"][-1]["content"] == "a\nb\nc"
    with variant.app_context():
        db.engine.dispose()


def test_without_a_debounce_each_message_is_its_own_turn(app, twilio, fake_twilio):
    twilio.say("m0", sender=ANA)
    drain(app)
    for text in ("a", "b"):
        twilio.say(text, sender=ANA)
    drain(app)

    assert fake_twilio.bodies == ["got m0", "got a", "got b"]


def test_a_task_for_a_contact_erased_since_is_done_not_retried(app):
    """A drain queued before "delete my data" finds no contact: nothing to run, no retry loop
    (retried tasks held by a worker would crowd out the ones that can run)."""
    with app.app_context():
        assert dispatcher().drain(987654) is True
        db.session.remove()


def test_a_turn_moves_its_conversation_to_the_message_it_answered(app, twilio, fake_twilio):
    # The inbox orders conversations by last_message_at; the webhook leaves the
    # row alone (a send may hold its lock) and the turn moves it up, with the
    # read of who controls the conversation.
    from models import Conversation

    def stamps() -> tuple[dt.datetime, list[dt.datetime]]:
        with app.app_context():
            last = db.session.scalar(sa.select(Conversation.last_message_at))
            arrivals = db.session.scalars(
                sa.select(Message.created_at)
                .where(Message.direction == "inbound")
                .order_by(Message.id)
            ).all()
            db.session.remove()
            return last, list(arrivals)

    twilio.say("m0", sender=ANA)
    drain(app)
    created, (first,) = stamps()  # the conversation was made with its first message

    twilio.say("m1", sender=ANA)
    last, (_, second) = stamps()
    assert last == created < second  # stored, not answered yet
    drain(app)
    last, (_, second) = stamps()
    assert last == second > first
    assert fake_twilio.bodies == ["got m0", "got m1"]


def test_a_turn_whose_commit_fails_sends_its_fallback_and_never_its_reply(
    app, app_config, twilio, fake_twilio
):
    # The first reply's send is claimed inside the turn's commit; a commit that
    # fails takes the claim with it, and only what was committed goes out.
    if not app_config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("a deferred trigger fails the commit (PostgreSQL)")
    with app.app_context():
        db.session.execute(
            sa.text(
                """
                CREATE SEQUENCE commit_fault;  -- not rolled back with the commit
                CREATE FUNCTION fail_first_commit() RETURNS trigger AS $$
                BEGIN
                    IF nextval('commit_fault') = 1 THEN
                        RAISE EXCEPTION 'the commit fails';
                    END IF;
                    RETURN NULL;
                END $$ LANGUAGE plpgsql;
                CREATE CONSTRAINT TRIGGER fail_first_commit AFTER INSERT ON delivery
                    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                    EXECUTE FUNCTION fail_first_commit();
                """
            )
        )
        db.session.commit()
        db.session.remove()

    twilio.say("m0", sender=ANA)
    drain(app)

    assert fake_twilio.bodies == ["fallback"]
    assert [(row.body, row.status) for row in outbound(app)] == [("fallback", "queued")]
    assert turn_statuses(app) == ["failed"]
