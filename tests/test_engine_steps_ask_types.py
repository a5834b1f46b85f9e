"""``ask`` with typed answers, through the real runner: each type's normalising and re-prompt."""

from __future__ import annotations

import pytest

from engine.flow import parse_flow
from engine.ports import Contact, InboundMessage
from engine.runner import TurnResult
from tests.test_engine_steps import Chat

UK = Contact(id=8, phone="+447700900123", name="Bea", channel="sms")


def ask_flow(fields: str) -> str:
    """A flow that asks one typed question, stores the answer and says it back."""
    return f"""
    id: typed
    trigger: {{default: true}}
    start: question
    steps:
      question:
        ask: "Your answer?"
        {fields}
        save_as: answer
        retry: {{max: 3}}
        next: echo
      echo:
        say: "Got {{{{ vars.answer }}}}."
    """


def answer(chat: Chat, message: InboundMessage) -> TurnResult:
    """One turn with a full inbound message (media, location)."""
    result = chat.runner.run_turn(chat.execution, message, chat.contact, chat.history)
    chat.execution = result.execution
    return result


def asked(tmp_path, fields: str, contact: Contact | None = None) -> Chat:
    chat = Chat(tmp_path, ask_flow(fields), **({"contact": contact} if contact else {}))
    assert chat.says("hi") == ["Your answer?"]
    return chat


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42), (" -3 ", -3), ("1.5", 1.5), ("2,25", 2.25), ("1 000", 1000)],
)
def test_number_answers_are_stored_as_int_or_float(tmp_path, text, value):
    chat = asked(tmp_path, "type: number")
    chat.says(text)
    assert chat.vars["answer"] == value
    assert type(chat.vars["answer"]) is type(value)


def test_number_outside_min_max_gets_a_reprompt_naming_the_range(tmp_path):
    chat = asked(tmp_path, "type: number\n        min: 1\n        max: 10")
    assert chat.says("eleven") == ["Please answer with a number from 1 to 10."]
    assert chat.says("11") == ["Please answer with a number from 1 to 10."]
    assert chat.says("0") == ["Please answer with a number from 1 to 10."]
    assert chat.says("10") == ["Got 10."]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yes", True),
        ("Y", True),
        ("Yeah!", True),
        ("Sí", True),
        ("OUI", True),
        ("yes please", True),
        ("no", False),
        ("N", False),
        ("nope", False),
        ("Non.", False),
        ("não", False),
    ],
)
def test_yes_no_reads_many_words_case_and_accents_ignored(tmp_path, text, value):
    chat = asked(tmp_path, "type: yes_no")
    chat.says(text)
    assert chat.vars["answer"] is value


def test_yes_no_reprompts_on_anything_else(tmp_path):
    chat = asked(tmp_path, "type: yes_no")
    assert chat.says("maybe") == ["Please answer yes or no."]
    assert chat.at == ("waiting", "question")


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2025-04-01", "2025-04-01"),
        ("tomorrow", "2025-03-15"),  # the test clock says 2025-03-14
        ("in 3 days", "2025-03-17"),
        ("3 mars 2025", "2025-03-03"),
        ("April 2, 2025", "2025-04-02"),
    ],
)
def test_dates_are_stored_iso_8601(tmp_path, text, iso):
    chat = asked(tmp_path, "type: date")
    chat.says(text)
    assert chat.vars["answer"] == iso


def test_date_order_reads_numeric_dates_as_told(tmp_path):
    chat = asked(tmp_path, "type: date\n        date_order: DMY")
    chat.says("03/04/2025")
    assert chat.vars["answer"] == "2025-04-03"


@pytest.mark.parametrize("text", ["banana", "12", ""])
def test_something_that_is_no_date_gets_the_date_reprompt(tmp_path, text):
    chat = asked(tmp_path, "type: date")
    assert chat.says(text) == ["Please answer with a date, for example 14/03/2025 or 'tomorrow'."]


def test_email_is_normalised_and_a_bad_one_reprompted(tmp_path):
    chat = asked(tmp_path, "type: email")
    assert chat.says("ada@@example") == [
        "That doesn't look like an email address. Please send one like name@example.com."
    ]
    chat.says(" Ada.Lovelace@EXAMPLE.org ")
    assert chat.vars["answer"] == "Ada.Lovelace@example.org"


def test_phone_is_stored_e164_read_in_the_contacts_country(tmp_path):
    chat = asked(tmp_path, "type: phone", contact=UK)
    assert chat.says("12345") == [
        "That doesn't look like a phone number. Please send one like +44 7700 900123."
    ]
    chat.says("07400 123456")  # a UK number written the British way
    assert chat.vars["answer"] == "+447400123456"


def test_phone_with_a_country_code_is_read_as_written(tmp_path):
    chat = asked(tmp_path, "type: phone", contact=UK)
    chat.says("+1 (202) 555-0143")
    assert chat.vars["answer"] == "+12025550143"


CHOICES = """type: choice
        choices:
          - {value: sleep, label: Sleep better, synonyms: [rest, bed]}
          - {value: move, label: Move more}
          - connection
        numbered: true"""


def test_choices_are_listed_numbered_under_the_question(tmp_path):
    chat = Chat(tmp_path, ask_flow(CHOICES))
    assert chat.says("hi") == ["Your answer?\n1. Sleep better\n2. Move more\n3. connection"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", "sleep"),
        ("SLEEP BETTER", "sleep"),
        ("sleep", "sleep"),
        ("Rest", "sleep"),
        ("béd!", "sleep"),
        ("2", "move"),
        ("move more", "move"),
        ("Connection", "connection"),
        ("3", "connection"),
    ],
)
def test_a_choice_matches_by_number_label_value_or_synonym(tmp_path, text, value):
    chat = asked(tmp_path, CHOICES.replace("numbered: true", "numbered: false"))
    chat.says(text)
    assert chat.vars["answer"] == value


def test_a_wrong_choice_gets_the_numbered_question_again(tmp_path):
    chat = Chat(tmp_path, ask_flow(CHOICES))
    chat.says("hi")
    assert chat.says("4") == ["Your answer?\n1. Sleep better\n2. Move more\n3. connection"]


def test_media_answers_keep_url_content_type_and_kind(tmp_path):
    chat = asked(tmp_path, "type: media")
    assert [r.text for r in answer(chat, InboundMessage(text="here")).replies] == [
        "Please send a photo, a voice note or a document."
    ]
    answer(
        chat,
        InboundMessage(
            text="",
            media=("https://api.twilio.com/m/1", "https://api.twilio.com/m/2"),
            media_types=("audio/ogg", "application/pdf"),
        ),
    )
    assert chat.vars["answer"] == [
        {"url": "https://api.twilio.com/m/1", "content_type": "audio/ogg", "kind": "audio"},
        {
            "url": "https://api.twilio.com/m/2",
            "content_type": "application/pdf",
            "kind": "document",
        },
    ]


def test_media_accept_refuses_other_kinds(tmp_path):
    chat = asked(tmp_path, "type: media\n        accept: [image]")
    voice = InboundMessage(text="", media=("https://m/1",), media_types=("audio/ogg",))
    assert [r.text for r in answer(chat, voice).replies] == [
        "Please send a photo, a voice note or a document."
    ]
    photo = InboundMessage(text="", media=("https://m/2",), media_types=("image/jpeg",))
    answer(chat, photo)
    assert chat.vars["answer"] == [
        {"url": "https://m/2", "content_type": "image/jpeg", "kind": "image"}
    ]


def test_location_answers_keep_coordinates_and_address(tmp_path):
    chat = asked(tmp_path, "type: location")
    assert [r.text for r in answer(chat, InboundMessage(text="Paris")).replies] == [
        "Please share a location (on WhatsApp: 📎, then Location)."
    ]
    place = {"latitude": 48.8584, "longitude": 2.2945, "address": "Champ de Mars", "label": None}
    answer(chat, InboundMessage(text="", location=place))
    assert chat.vars["answer"] == place
    assert chat.execution.step_results["question"]["answer"] == place


def test_retry_say_wins_over_the_types_reprompt(tmp_path):
    flow = ask_flow("type: number").replace("retry: {max: 3}", 'retry: {max: 3, say: "Digits!"}')
    chat = Chat(tmp_path, flow)
    chat.says("hi")
    assert chat.says("ten") == ["Digits!"]


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ("type: choice", "needs `choices`"),
        ("type: number\n        choices: [a, b]", "`choices` go with `type: choice`"),
        ("type: text\n        min: 3", "`min` and `max` go with `type: number`"),
        ("type: number\n        min: 5\n        max: 1", "larger than `max`"),
        ("type: image", "type"),
        ("type: date\n        accept: [image]", "`accept` goes with `type: media`"),
        ("type: number\n        numbered: true", "`numbered`"),
    ],
)
def test_options_that_do_not_fit_the_type_are_flow_problems(fields, word):
    import textwrap

    flow, problems = parse_flow(textwrap.dedent(ask_flow(fields)), "typed.yaml")
    assert flow is None
    assert any(word in problem.message for problem in problems), problems
    assert all(problem.line == 7 or problem.step_id == "question" for problem in problems)
