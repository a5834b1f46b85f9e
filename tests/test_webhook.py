"""The Twilio Messaging webhook, driven as Twilio drives it: form-encoded and signed."""

from __future__ import annotations

import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from app import create_app
from models import Contact, Conversation, Execution, Message, db
from tests.conftest import TwilioWebhook, base_config
from tests.fakes.openai_server import Error
from tests.twiml import messages_of

GREETING = (
    "Hi {name}! I'm Parley, your well-being companion. Let's pick one small goal for this week."
)
QUESTION = "Which matters most to you right now: 1. sleep, 2. movement or 3. connection?"


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_signed_whatsapp_message_gets_twiml_reply(app, twilio):
    response = twilio.say("hello", ProfileName="Ana")

    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert messages_of(response.data) == [GREETING.format(name="Ana"), QUESTION]
    with app.app_context():
        inbound = db.session.scalars(sa.select(Message).where(Message.direction == "inbound")).one()
        assert (inbound.body, inbound.author, inbound.turn_status) == ("hello", "contact", "done")
        outbound = db.session.scalars(
            sa.select(Message).where(Message.direction == "outbound").order_by(Message.id)
        ).all()
        assert [(m.author, m.step_id, m.flow_id) for m in outbound] == [
            ("bot", "welcome", "goal_setting"),
            ("bot", "area", "goal_setting"),
        ]
        execution = db.session.scalars(sa.select(Execution)).one()
        assert (execution.status, execution.current_step) == ("waiting", "area")


def test_same_message_sid_twice_gets_one_reply_and_one_stored_message(app, twilio):
    form = twilio.form("hello")
    first = twilio.post(form)
    second = twilio.post(form)

    assert messages_of(first.data) == [GREETING.format(name="there"), QUESTION]
    assert second.status_code == 200
    assert messages_of(second.data) == []
    with app.app_context():
        assert count(Message) == 3  # one inbound, two replies
        assert count(Execution) == 1


def test_a_new_whatsapp_profile_name_is_kept_and_the_message_stored_once(app, twilio):
    twilio.say("hello", ProfileName="Ana")
    twilio.say("1", ProfileName="Ana B.")
    twilio.say("2")  # SMS-like: no ProfileName, the name stays

    with app.app_context():
        contact = db.session.scalars(sa.select(Contact)).one()
        assert contact.name == "Ana B."
        inbound = db.session.scalars(
            sa.select(Message).where(Message.direction == "inbound").order_by(Message.id)
        ).all()
        assert [(m.body, m.media) for m in inbound] == [("hello", None), ("1", None), ("2", None)]
        # SQL NULL on both paths (a new contact's first message, a known one's).
        null_media = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Message)
            .where(Message.direction == "inbound", Message.media.is_(None))
        )
        assert null_media == 3
        assert count(Conversation) == 1


def test_unsigned_request_is_forbidden_and_nothing_is_stored(app, twilio):
    response = twilio.post(twilio.form("hello"), signature=None)

    assert response.status_code == 403
    assert b"X-Twilio-Signature" in response.data
    with app.app_context():
        assert count(Message) == 0


def test_wrong_signature_is_forbidden(app, twilio):
    form = twilio.form("hello")
    forged = twilio.form("hello")  # a different MessageSid: another message's signature
    response = twilio.post(form, signature=twilio.sign(forged))

    assert response.status_code == 403
    with app.app_context():
        assert count(Message) == 0


def test_signature_is_checked_against_public_base_url(app, twilio):
    form = twilio.form("hello")
    # Signed for the URL the app sees (http://localhost/...), not PUBLIC_BASE_URL.
    local = RequestValidator(twilio.auth_token).compute_signature(
        "http://localhost/twilio/messages", form
    )
    assert local != twilio.sign(form)
    assert twilio.post(form, signature=local).status_code == 403
    assert twilio.post(form).status_code == 200


def test_signature_is_checked_in_debug_mode_too(app_config, fake_openai):
    app_config["DEBUG"] = True
    app = create_app(app_config)
    webhook = TwilioWebhook(app.test_client())
    assert webhook.post(webhook.form("hello"), signature=None).status_code == 403
    with app.app_context():
        db.engine.dispose()


def test_missing_auth_token_is_a_clear_server_error(app_config, twilio):
    app_config["TWILIO_AUTH_TOKEN"] = None
    app = create_app(app_config)
    webhook = TwilioWebhook(app.test_client())
    response = webhook.post(webhook.form("hello"))
    assert response.status_code == 503
    assert b"TWILIO_AUTH_TOKEN" in response.data
    with app.app_context():
        db.engine.dispose()


def test_malformed_forms_get_400_with_a_reason(app, twilio):
    no_sid = twilio.form("hello")
    del no_sid["MessageSid"]
    bad_from = twilio.form("hello", sender="whatsapp:not-a-number")

    first = twilio.post(no_sid)
    second = twilio.post(bad_from)

    assert first.status_code == 400
    assert b"MessageSid" in first.data
    assert second.status_code == 400
    assert b"From" in second.data
    with app.app_context():
        assert count(Message) == 0


def test_whatsapp_and_sms_are_one_contact_on_two_conversations(app, twilio):
    twilio.say("hello", sender="whatsapp:+15551230001")
    twilio.say("menu", sender="+15551230001", to="+15550001111")

    with app.app_context():
        assert count(Contact) == 1
        channels = db.session.scalars(sa.select(Conversation.channel).order_by(Conversation.id))
        assert list(channels) == ["whatsapp", "sms"]


def test_long_llm_reply_is_split_into_ordered_messages(app, twilio, fake_openai):
    sentences = [f"Sentence number {i} is here to make this reply long." for i in range(80)]
    long_reply = " ".join(sentences)
    assert len(long_reply) > 3200
    fake_openai.script({"reply": long_reply, "goal": "", "agreed": False})

    twilio.say("hello")
    response = twilio.say("sleep")

    parts = messages_of(response.data)
    assert len(parts) >= 3
    assert all(len(part) <= 1600 for part in parts)
    assert " ".join(parts) == long_reply
    assert all(part.endswith(".") for part in parts)  # cut at sentence ends
    with app.app_context():
        stored = db.session.scalars(
            sa.select(Message.body).where(Message.step_id == "coach").order_by(Message.id)
        ).all()
        assert stored == parts


def test_what_a_contact_types_is_never_rendered_as_a_template(app, twilio, fake_openai):
    fake_openai.script({"reply": "Tell me more.", "goal": "", "agreed": False})
    twilio.say("hello")
    twilio.say("sleep")
    fake_openai.script({"reply": "Noted.", "goal": "", "agreed": False})
    response = twilio.say("{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %} {{ vars }}")

    assert messages_of(response.data) == ["Noted."]
    sent = fake_openai.requests[-1]["messages"][-1]["content"]
    assert sent == "{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %} {{ vars }}"


def test_llm_failure_answers_with_fallback_and_the_next_message_retries(app, twilio, fake_openai):
    fake_openai.script(Error(500))
    twilio.say("hello")
    failed = twilio.say("sleep")

    assert messages_of(failed.data) == [
        "Sorry, I'm having trouble right now. Please try again in a minute."
    ]
    with app.app_context():
        inbound = db.session.scalars(
            sa.select(Message).where(Message.body == "sleep", Message.direction == "inbound")
        ).one()
        assert inbound.turn_status == "failed"
        execution = db.session.scalars(sa.select(Execution)).one()
        assert (execution.status, execution.current_step) == ("waiting", "coach")
        assert "LLM call failed" in execution.error

    fake_openai.script({"reply": "Let's talk about sleep.", "goal": "", "agreed": False})
    retried = twilio.say("sleep, please")
    assert messages_of(retried.data) == ["Let's talk about sleep."]


def test_database_unreachable_is_503(fake_openai, tmp_path):
    config = base_config("postgresql://nobody@127.0.0.1:9/nowhere", fake_openai)
    app = create_app(config)
    webhook = TwilioWebhook(app.test_client())
    response = webhook.post(webhook.form("hello"))
    assert response.status_code == 503
    assert b"database" in response.data
