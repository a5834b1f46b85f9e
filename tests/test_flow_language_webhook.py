"""Every step kind in one conversation through the signed webhook (tests/data/flows_language/).

The flow asks typed questions (number, yes/no, date, email, phone, choice with
synonyms, media, location), evaluates every branch operator, calls an outside
API (`http`, with its base URL from an allow-listed environment variable),
runs a subflow (`call`) whose `llm` step extracts a mood, routes with an `llm`
classifier and hands over to another flow (`goto`); the first `say` carries a
picture, sent as TwiML ``<Media>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from models import Execution, Message, db
from tests.fakes.api_server import FakeAPI
from tests.flows.script import Turn, run_script
from tests.twiml import messages_of

FLOWS = Path(__file__).resolve().parent / "data" / "flows_language"
SENDER = "whatsapp:+15551230001"


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeAPI]:
    with FakeAPI() as server:
        yield server


@pytest.fixture
def api(api_server: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPI]:
    monkeypatch.setenv("PARLEY_TEST_API", api_server.base_url)
    yield api_server.reset()
    api_server.reset()


@pytest.fixture
def app_config(app_config, api):
    """The test flows, with the API's base URL readable by `http` steps."""
    app_config.update(FLOWS_DIR=str(FLOWS), HTTP_ENV_ALLOWLIST="PARLEY_TEST_API")
    return app_config


def bodies_and_media(twiml: bytes) -> list[tuple[str, list[str]]]:
    """Each ``<Message>``'s text (or ``<Body>``) and its ``<Media>`` URLs."""
    root = ET.fromstring(twiml)
    result = []
    for message in root.iter("Message"):
        body = message.find("Body")
        text = body.text if body is not None else message.text
        result.append((text or "", [media.text or "" for media in message.iter("Media")]))
    return result


def test_every_step_kind_in_one_conversation(app, twilio, fake_openai, api):
    api.answer("/tips", {"tip": "Dim the lights an hour before bed."})

    first = twilio.say("hi", sender=SENDER)
    assert bodies_and_media(first.data) == [
        ("Welcome to the intake!", ["https://example.org/welcome.png"]),
        ("How old are you?", []),
    ]

    run_script(
        twilio,
        fake_openai,
        [
            Turn("two hundred", ["Please answer with a number from 1 to 120."]),
            Turn("34", ["Shall we go on? (yes/no)"]),
            Turn("Sí", ["Which day shall we start?"]),
            Turn("15/04/2030", ["Your email?"]),
            Turn(
                "not an email",
                ["That doesn't look like an email address. Please send one like name@example.com."],
            ),
            Turn("ada@EXAMPLE.org", ["Your phone number?"]),
            Turn("(415) 555-2671", ["Which area?\n1. Sleep\n2. Movement"]),
            Turn("Bed", ["Send a photo of your bedroom."]),
        ],
        sender=SENDER,
    )

    voice = twilio.say(
        "",
        sender=SENDER,
        NumMedia="1",
        MediaUrl0="https://api.twilio.com/m/1",
        MediaContentType0="audio/ogg",
    )
    assert messages_of(voice.data) == ["A photo, please."]
    photo = twilio.say(
        "",
        sender=SENDER,
        NumMedia="1",
        MediaUrl0="https://api.twilio.com/m/2",
        MediaContentType0="image/jpeg",
    )
    assert messages_of(photo.data) == ["Share your location."]
    place = twilio.say(
        "",
        sender=SENDER,
        Latitude="48.8584",
        Longitude="2.2945",
        Address="Champ de Mars",
    )
    assert messages_of(place.data) == [
        "Tip: Dim the lights an hour before bed.",
        "How do you feel about your sleep?",
    ]
    assert api.requests[-1]["method"] == "POST"
    assert api.requests[-1]["json"] == {"area": "sleep", "age": 34}

    run_script(
        twilio,
        fake_openai,
        [
            Turn(
                "Pretty tired, honestly",
                ["Thanks! You feel tired.", "Menu or bye?"],
                llm=[{"mood": "tired"}],
            ),
            Turn("the menu please", ["Extras menu. Bye for now."], llm=[{"label": "menu"}]),
        ],
        sender=SENDER,
    )
    classify = fake_openai.requests[-1]
    schema = classify["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["menu", "bye"]

    with app.app_context():
        executions = db.session.scalars(sa.select(Execution).order_by(Execution.id)).all()
        assert [(e.flow_id, e.status) for e in executions] == [
            ("intake", "ended"),
            ("extras", "ended"),
        ]
        variables = executions[0].variables
        assert {key: variables[key] for key in ("age", "consent", "start_day", "email")} == {
            "age": 34,
            "consent": True,
            "start_day": "2030-04-15",
            "email": "ada@example.org",
        }
        assert variables["checks"] == [True] * 10 + [False, True]
        assert variables["phone"] == "+14155552671"
        assert variables["area"] == "sleep"
        assert variables["photo"] == [
            {"url": "https://api.twilio.com/m/2", "content_type": "image/jpeg", "kind": "image"}
        ]
        assert variables["place"]["latitude"] == 48.8584
        assert variables["place"]["address"] == "Champ de Mars"
        assert variables["feedback"] == {"area": "sleep", "mood": "tired"}
        welcome = db.session.scalars(sa.select(Message).where(Message.step_id == "welcome")).one()
        assert welcome.media == {"urls": ["https://example.org/welcome.png"], "delay_seconds": 1.0}


def start(twilio) -> None:
    """The first turn: the welcome (with its picture, a ``<Body>``) and the first question."""
    texts = [text for text, _ in bodies_and_media(twilio.say("hi", sender=SENDER).data)]
    assert texts == ["Welcome to the intake!", "How old are you?"]


def test_a_minor_is_routed_by_a_branch_operator(app, twilio, fake_openai, api):
    start(twilio)
    run_script(
        twilio, fake_openai, [Turn("16", ["Sorry, this service is for adults."])], sender=SENDER
    )


def test_the_api_failing_goes_to_the_fail_transition(app, twilio, fake_openai, api):
    api.answer("/tips", {"error": "down"}, status=503)
    start(twilio)
    script = [
        Turn("40", ["Shall we go on? (yes/no)"]),
        Turn("yes", ["Which day shall we start?"]),
        Turn("tomorrow", ["Your email?"]),
        Turn("ada@example.org", ["Your phone number?"]),
        Turn("+44 7400 123456", ["Which area?\n1. Sleep\n2. Movement"]),
        Turn("2", ["Send a photo of your bedroom."]),
    ]
    run_script(twilio, fake_openai, script, sender=SENDER)
    twilio.say(
        "", sender=SENDER, NumMedia="1", MediaUrl0="https://m/3", MediaContentType0="image/png"
    )
    place = twilio.say("", sender=SENDER, Latitude="51.5", Longitude="-0.12")
    assert messages_of(place.data) == ["No tip today.", "How do you feel about your move?"]
