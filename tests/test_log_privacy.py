"""Nothing personal in the logs: bad inputs are run and the captured log lines grepped."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from log_privacy import mask_phones
from models import db
from models.entities import Contact
from tests.admin_support import add_user, login, seed_conversation

PHONE = "+15551230001"
NAME = "Ana Quixotic"
BODY = "my very private words"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("From is not a phone number: 'whatsapp: 15551230001'", "whatsapp: [PHONE]"),
        ("phone=+1 (555) 123-0001 next", "phone=[PHONE] next"),
        ("url=/x?phone=%2B15551230001", "url=/x?phone=[PHONE]"),
        ("wa_id=447700900123", "wa_id=[PHONE]"),
    ],
)
def test_phone_numbers_are_masked_however_written(text, masked):
    assert masked in mask_phones(text)


@pytest.mark.parametrize(
    "text", ["message=SM0123456789abcdef0123456789abcdef", "user=12 ms=1500", "page=2"]
)
def test_ids_and_counts_are_left_alone(text):
    assert mask_phones(text) == text


def test_bad_inputs_leave_no_phone_name_or_body_in_the_logs(app, client, twilio, caplog):
    caplog.set_level(logging.DEBUG)
    seed_conversation(app, PHONE, [(BODY, ["hi"])], name=NAME)
    add_user(app, "admin@example.com", "admin")

    twilio.post(twilio.form("hi", sender="whatsapp: 15551230001"))  # '+' not URL-encoded
    twilio.post(twilio.form(BODY + "\x00", sender="whatsapp:" + PHONE, ProfileName=NAME))
    twilio.post(twilio.form(BODY, sender="whatsapp:" + PHONE, to="whatsapp:+" + "1" * 100_000))
    for path in (
        "/api/v1/conversations?page=²",
        "/api/v1/conversations?page=99999999999999999999",
        "/api/v1/conversations/search?query=%00",
        "/api/v1/messages?conversation_id=²",
        "/api/v1/conversations/99999999999999999999",
        f"/api/v1/conversations/search?query={PHONE}%00",
    ):
        client.get(path)
    login(client, "admin@example.com")
    for query in ("q=%00", f"q={PHONE}%00", "rating=99999999999999999999", "until=9999-12-31"):
        client.get("/admin/conversations?" + query)

    # An SQL error names its statement, never its values (hide_parameters).
    with app.app_context(), pytest.raises(IntegrityError) as raised:
        db.session.execute(sa.insert(Contact).values(phone=PHONE, name=NAME))
        db.session.execute(sa.insert(Contact).values(phone=PHONE, name=NAME))
    logging.getLogger("parley.test").error("store failed: %s", raised.value)

    logged = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    assert "hide_parameters" in logged
    for secret in (PHONE, PHONE[1:], NAME, BODY):
        assert secret not in logged
