"""Redaction as curators publish: the console's publish button, then the public API.

Phone numbers written without ``+`` are read in every region of
``REDACTION_REGION`` and in the contact's own country; an e-mail and a street
address in one message are two placeholders, with the words between them kept.
"""

from __future__ import annotations

import pytest

from curation import redaction
from tests.admin_support import add_user, login, post, seed_conversation

UK_NUMBER = "07700 900123"
BRITISH = "+447700900456"
AMERICAN = "+15551230001"


def publish_through_the_console(app, client, conversation_id: int) -> None:
    add_user(app, "cur@example.com", "curator")
    assert login(client, "cur@example.com").status_code == 302
    path = f"/admin/conversations/{conversation_id}"
    saved = post(client, f"{path}/summary", {"question": "Q?", "answer": "A.", "teaser": "T"})
    assert saved.status_code == 302
    assert post(client, f"{path}/publish", {"action": "publish"}).status_code == 302


def published_texts(client, conversation_id: int) -> list[str]:
    response = client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [message["text"] for message in response.json["data"]["messages"]]


@pytest.mark.parametrize(
    ("contact", "regions", "redacted"),
    [
        (BRITISH, "US", True),  # the contact's own country
        (AMERICAN, "US,GB", True),  # a listed region
        (AMERICAN, "US", False),  # under US alone, 07700 900123 is no phone number
    ],
)
def test_a_national_number_is_read_in_the_regions_and_the_contacts_country(
    request, app_config, contact, regions, redacted
):
    app_config["REDACTION_REGION"] = regions
    app = request.getfixturevalue("app")
    client = app.test_client()
    conversation = seed_conversation(app, contact, [(f"call me on {UK_NUMBER} tonight", ["ok"])])

    publish_through_the_console(app, client, conversation)

    text = published_texts(client, conversation)[0]
    if redacted:
        assert text == "call me on [PHONE] tonight"
    else:
        assert UK_NUMBER in text


def test_an_email_and_an_address_stay_apart_and_keep_the_words_between(app, client):
    message = "reach me: ana@example.com, I am at 12 High Street, Oxford OX1 4AA"
    conversation = seed_conversation(app, AMERICAN, [(message, ["Thanks!"])])

    publish_through_the_console(app, client, conversation)

    assert published_texts(client, conversation)[0] == "reach me: [EMAIL], I am at [ADDRESS]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "reach me: 42 ana@example.com, I am at 12 High Street, Oxford OX1 4AA",
            [("email", "ana@example.com"), ("address", "12 High Street, Oxford OX1 4AA")],
        ),
        (
            "My email is ana99@gmail.com and I live at 10 Downing Street, London SW1A 2AA ok",
            [("email", "ana99@gmail.com"), ("address", "10 Downing Street, London SW1A 2AA")],
        ),
    ],
)
def test_spans_of_different_kinds_keep_their_own_labels(text, expected):
    spans = redaction.find(text)
    assert [(span.kind, text[span.start : span.end]) for span in spans] == expected


def test_an_unknown_region_is_refused_by_name():
    with pytest.raises(ValueError, match="XX"):
        redaction.parse_regions("US,XX")
    assert redaction.parse_regions(" us , gb ") == ("US", "GB")
    assert redaction.regions_for("US", BRITISH) == ("US", "GB")
