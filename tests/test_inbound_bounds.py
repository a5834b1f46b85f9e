"""Bounds on what a contact sends: a clean 400 for a bad value, never a 5xx; a cap on prompts.

Every request is signed as Twilio signs it (tests/conftest.py), so it gets past
the signature check and reaches the parsing and the store, where a NUL byte, an
absurd length or a strange number used to end in a 500 (PostgreSQL refuses NUL
in text) and left half-written rows.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.openai import TRUNCATED
from models import db
from models.entities import Contact, Message

SID = "SM" + "0" * 32
FIELDS = (
    "Body",
    "From",
    "To",
    "ProfileName",
    "WaId",
    "NumMedia",
    "MediaUrl0",
    "MediaContentType0",
    "ButtonText",
    "ButtonPayload",
    "Latitude",
    "Longitude",
    "Address",
    "Label",
    "MessageSid",
    "AccountSid",
)
#: Text as a careless or hostile sender writes it: NUL and other controls,
#: non-ASCII digits, surrogates are impossible in a form, so not generated.
TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["\x00", "²", "-1", "99999999999999999999", "+15551230001\x00", "nan"])

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def contact_count(app) -> int:
    with app.app_context():
        count = db.session.scalar(sa.select(sa.func.count()).select_from(Contact))
        db.session.rollback()
        return count


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(FIELDS), TEXT, max_size=4))
def test_inbound_messages_with_generated_fields_never_get_a_5xx(twilio, changes):
    form = twilio.form("hello", message_sid="SM" + f"{twilio.sent:032x}")
    form.update(changes)

    response = twilio.post(form)

    assert response.status_code < 500, (changes, response.get_data(as_text=True))


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["MessageSid", "MessageStatus", "ErrorCode", "SmsStatus"]),
        TEXT,
        max_size=3,
    ),
    delivery=TEXT,
)
def test_status_callbacks_with_generated_fields_never_get_a_5xx(twilio, changes, delivery):
    form = {"MessageSid": SID, "MessageStatus": "delivered", **changes}
    path = "/twilio/status"
    query = f"?delivery={quote(delivery, safe='')}" if delivery else ""
    headers = {"X-Twilio-Signature": twilio.sign(form, path + query)}

    response = twilio.client.post(path + query, data=form, headers=headers)

    assert response.status_code < 500, (changes, delivery, response.get_data(as_text=True))


def test_nul_bytes_in_any_text_field_get_a_400_that_names_the_field(app, twilio):
    for name in ("Body", "ProfileName", "MediaUrl0", "ButtonText", "Address"):
        extra = {"NumMedia": "1"} if name == "MediaUrl0" else {}
        if name == "Address":
            extra = {"Latitude": "1", "Longitude": "2"}
        form = twilio.form("hi", **extra)
        form[name] = "a\x00b"

        response = twilio.post(form)

        assert response.status_code == 400, name
        assert name in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


def test_a_huge_to_gets_a_400_and_leaves_no_contact(app, twilio):
    response = twilio.post(twilio.form("hi", to="whatsapp:+" + "1" * 100_000))

    assert response.status_code == 400
    assert "To has 100010 characters" in response.get_data(as_text=True)
    assert contact_count(app) == 0


def test_bodies_are_bounded_by_twilio_limits_per_channel(app, twilio):
    assert twilio.post(twilio.form("x" * 4096)).status_code == 200  # WhatsApp: 4,096
    too_long = twilio.post(twilio.form("x" * 4097))
    assert too_long.status_code == 400 and "at most 4096" in too_long.get_data(as_text=True)

    sms = twilio.post(twilio.form("x" * 1601, sender="+15551230002", to="+15557654321"))
    assert sms.status_code == 400 and "at most 1600 on sms" in sms.get_data(as_text=True)


@pytest.fixture
def app_config(app_config):
    """A small cap on what reaches the model, to see it work with short texts."""
    return {**app_config, "PROMPT_MAX_CONTACT_CHARS": "500"}


def test_a_contact_s_long_messages_are_cut_before_they_reach_the_model(app, twilio, fake_openai):
    fake_openai.script({"reply": "Tell me more.", "goal": "", "agreed": False})
    twilio.say("hello")
    twilio.say("sleep")
    fake_openai.script({"reply": "Noted.", "goal": "", "agreed": False})
    twilio.say("z" * 4000)
    fake_openai.script({"reply": "Noted again.", "goal": "", "agreed": False})
    twilio.say("y" * 4000)

    sent = fake_openai.requests[-1]["messages"]
    users = [message["content"] for message in sent if message["role"] == "user"]
    assert users[-1] == "y" * 500 + TRUNCATED
    assert "z" * 500 + TRUNCATED in users  # the earlier one, in the history
    assert sum(len(message["content"]) for message in sent) < 5000
