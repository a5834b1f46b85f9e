"""Imported Studio flows run as Studio runs them (issue 13), through the signed webhook.

Each widget the importer accepts has a synthetic Studio flow in
``tests/data/studio/``; each test imports it as ``flask studio import`` does,
talks to it through the real webhook (or the Executions API) and checks what
Studio would send. The numbered items of issue 13 are named in the tests.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from engine.flow import DEFAULT_FALLBACK, FlowSet, parse_flow
from engine.ports import HTTPResponse
from handover.expiry import expire_handovers
from integrations.liquid import flow_sid
from models import Conversation, Execution, db
from studio.importer import import_studio
from tests.conftest import OUR_WHATSAPP
from tests.fakes.api_server import FakeAPI
from tests.twiml import messages_of

json_text = json.dumps

DATA = Path(__file__).resolve().parent / "data" / "studio"
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "studio"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json")) if FIXTURES.is_dir() else []
needs_fixtures = pytest.mark.skipif(not FIXTURE_FILES, reason=f"no Studio exports in {FIXTURES}")
SENDER = "whatsapp:+15551230007"
TOKEN = "studio-token-13"
SUBFLOWS = {
    "FW11111111111111111111111111111111": "run_subflow_child",
    "FW50120385f4d1e8dcf30c0bcd83695969": "daily_sitdown_child_subflow",
}


def definition(name: str, api: FakeAPI | None = None) -> dict:
    """A synthetic Studio flow of tests/data/studio, its API host pointed at `api`."""
    text = (DATA / f"{name}.json").read_text(encoding="utf-8")
    if api is not None:
        text = text.replace("http://api.test", api.base_url)
    return json.loads(text)


@pytest.fixture(scope="module")
def api() -> Iterator[FakeAPI]:
    """The outside API and Twilio Functions the synthetic flows call."""
    with FakeAPI() as server:
        yield server


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path, api: FakeAPI) -> dict:
    api.reset()
    api.answer("/orders", {"id": "A1", "items": [1, 2]})
    api.answer("/notes", "noted!", content_type="text/plain")
    api.answer("/broken", {"error": "down"}, status=500)
    api.answer("/horoscope", {"text": "Stars align."})
    # The Twilio Functions of the real exports (their path, or /<widget name>).
    api.answer("/get_horoscope", {"description": "A bright day.", "mood": "Proud"})
    api.answer("/get_compatibility", {"list": ["Leo", "Aries"]})
    api.answer("/get_celebrity_match", {"name": "Kristen", "description": "A star."})
    for name in ("/SaveToAirtable", "/save_to_airtable", "/get_assignment"):
        api.answer(name, {})
    for path in [*sorted(DATA.glob("*.json")), *FIXTURE_FILES]:
        numbers = [OUR_WHATSAPP] if path.stem == "send_message" else None
        source = path if path.parent == DATA else None
        imported = import_studio(
            definition(path.stem, api) if source else json.loads(path.read_text()),
            path.stem,
            functions_url=api.base_url,
            subflows=SUBFLOWS,
            numbers=numbers,
        )
        text = yaml.safe_dump(imported.flow, sort_keys=False, allow_unicode=True)
        (tmp_path / f"{path.stem}.yaml").write_text(text, encoding="utf-8")
    return {**app_config, "FLOWS_DIR": str(tmp_path), "STUDIO_TOKEN": TOKEN}


def says(twilio, text: str) -> list[str]:
    return messages_of(twilio.say(text, sender=SENDER).data)


def execution(app) -> Execution:
    with app.app_context():
        row = db.session.scalars(sa.select(Execution).order_by(Execution.id.desc())).first()
        db.session.expunge(row)
        return row


def later(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def test_send_message_any_message_starts_the_flow_bound_to_the_number(twilio, app):
    # Item 3: not only the flow id as a keyword; trigger.message.Body is that message.
    assert says(twilio, "hello there") == [
        f"Hi {SENDER}, you wrote: hello there",
        "Bye!",
    ]
    assert execution(app).status == "ended"


def test_send_and_wait_an_unwired_timeout_ends_the_execution(app, client, twilio, fake_twilio):
    # Item 1: Studio ends the execution when the timeout passes; the REST trigger works again.
    contact = SENDER.removeprefix("whatsapp:")
    request = {"To": contact, "From": "+15557650000", "Flow": "send_and_wait"}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    first = client.post("/api/v1/executions", data=request, headers=headers)
    assert first.status_code == 201, first.json
    assert fake_twilio.bodies == ["What is your name?"]
    assert client.post("/api/v1/executions", data=request, headers=headers).status_code == 409

    result = app.test_cli_runner().invoke(args=["engine", "tick", "--now", later(601)])
    assert "Fired 1 timer(s)" in result.output, result.output
    assert execution(app).status == "ended"
    assert fake_twilio.bodies == ["What is your name?"]  # ended silently

    again = client.post("/api/v1/executions", data=request, headers=headers)
    assert again.status_code == 201, again.json


def test_send_and_wait_an_answer_in_time(twilio):
    assert says(twilio, "send_and_wait") == ["What is your name?"]
    assert says(twilio, "Ana") == ["Thanks, Ana."]


@pytest.mark.parametrize("age", ["abc", "n/a", "-"])
def test_split_greater_than_on_a_non_number_takes_no_match(twilio, age):
    # Item 8: Studio takes noMatch; the turn does not fail.
    assert says(twilio, "split_based_on") == ["How old are you?"]
    assert says(twilio, age) == ["Reply CANCEL to cancel your booking, or AGENT for a person."]


def test_split_an_unwired_no_match_ends_silently(twilio, app):
    # Item 2: no fallback text, the execution ended rather than failed.
    assert says(twilio, "split_based_on") == ["How old are you?"]
    assert says(twilio, "30") == [
        "You are an adult.",
        "Reply CANCEL to cancel your booking, or AGENT for a person.",
    ]
    assert says(twilio, "maybe later") == []
    assert execution(app).status == "ended"


@pytest.mark.parametrize(
    ("word", "answer"),
    [("CANCEL", "Your booking is cancelled."), ("agent", "An agent will call you.")],
)
def test_split_the_flows_own_keywords_are_not_taken_by_responders(twilio, word, answer):
    # Item 6: an imported flow runs with no Parley responders (`responders: false`).
    says(twilio, "split_based_on")
    says(twilio, "30")
    assert says(twilio, word) == [answer]


def test_set_variables_an_unset_variable_is_nil(twilio):
    # Item 5: the loop counts from 0, as in Studio; objects render as JSON (item 10).
    assert says(twilio, "set_variables") == [
        "Result 0",
        "Result 1",
        "Result 2",
        'Done: {"i":"2"}',
    ]


def test_make_http_request_as_studio_sends_it(twilio, api, app):
    # Item 4: GET parameters in the query string; a JSON body; item 7: the raw body
    # of a text answer; item 10: objects as JSON; item 2: an unwired failure ends silently.
    assert says(twilio, "make_http_request") == [
        'Order A1: [1,2] {"id":"A1","items":[1,2]}',
        "Noted: noted!",
    ]
    lookup, notes, broken = api.requests
    assert (lookup["method"], lookup["query"]) == (
        "GET",
        {"caller": SENDER, "q": "make_http_request"},
    )
    assert (notes["method"], notes["json"]) == ("POST", {"order": "A1", "count": 2})
    assert (broken["method"], broken["form"]) == ("POST", {"order": "A1"})
    ended = execution(app)
    assert (ended.status, ended.current_step, ended.error) == ("ended", "studio_end", None)


def test_run_function_posts_its_parameters_and_one_without_url_fails(twilio, api):
    # Item 12: an empty URL takes the `fail` transition, never a silent pass-through.
    assert says(twilio, "run_function") == ["Stars align.", "The second function is not deployed."]
    assert api.requests[0]["form"] == {"sign": "run_function"}
    imported = import_studio(definition("run_function"), "run_function")
    assert [(s.widget, s.reason.split(":")[0]) for s in imported.skipped] == [
        ("undeployed", "no function URL"),
        ("never", "unreachable from the messaging trigger"),
    ]
    assert imported.flow["steps"]["undeployed"] == {
        "set": {"studio_skipped": "undeployed"},
        "next": "sorry",
    }


def test_run_subflow_passes_parameters_and_gets_the_childs_variables(twilio):
    assert says(twilio, "run_subflow") == [
        "Child: hello RUN_SUBFLOW",
        "The child said hello RUN_SUBFLOW.",
    ]


def test_send_to_flex_keeps_workflow_and_attributes_and_stays_queued(twilio, app):
    # Item 13: the workflow and the attributes are kept; no handback after 5 minutes.
    assert says(twilio, "send_to_flex") == ["What is it about?"]
    assert says(twilio, "my bill") == ["Connecting you with someone."]
    held = execution(app)
    assert held.variables["studio_flex"] == {
        "workflow": "WW00000000000000000000000000000001",
        "channel": "TC00000000000000000000000000000001",
    }
    assert json.loads(held.variables["studio_flex_attributes"]) == {
        "topic": "my bill",
        "from": SENDER,
    }
    with app.app_context():
        queue = "queue:WW00000000000000000000000000000001"
        assert db.session.scalars(sa.select(Conversation.controlled_by)).all() == [queue]
        now = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
        assert expire_handovers(db.session, now, 300, "Back to the bot.") == (0, [])
        assert db.session.scalars(sa.select(Conversation.controlled_by)).all() == [queue]


def test_rest_trigger_flow_data_is_the_parameters_only(app, client, twilio, fake_twilio):
    # Item 10: flow.data holds only the REST trigger's parameters; flow.flow_sid is set.
    contact = SENDER.removeprefix("whatsapp:")
    response = client.post(
        "/api/v1/executions",
        json={
            "To": contact,
            "From": "+15557650000",
            "Flow": "rest_trigger",
            "Parameters": {"name": "Ana", "time": "9:00"},
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 201, response.json
    assert fake_twilio.bodies == [
        'Reminder for Ana at 9:00 (FW); data {"name":"Ana","time":"9:00"}.'
    ]
    assert flow_sid("rest_trigger").startswith("FW") and len(flow_sid("rest_trigger")) == 34
    # A message starts where the message trigger leads, with no flow.data.
    assert says(twilio, "rest_trigger") == ["You wrote rest_trigger; data [{}], name []."]


def test_conversation_trigger_fills_trigger_conversation(twilio):
    # Item 9: trigger.conversation.* for incomingConversationMessage.
    assert says(twilio, "conversation_trigger") == [
        f"{SENDER} wrote conversation_trigger on WHATSAPP"
    ]


def test_no_imported_flow_answers_with_the_fallback(twilio):
    for name in ("send_and_wait", "split_based_on", "set_variables", "run_subflow"):
        assert DEFAULT_FALLBACK not in says(twilio, name)
        twilio.say("resetmyhistory", sender=SENDER)


def test_a_flow_bound_to_numbers_answers_only_there():
    # One deployment, several numbers, each with its own default flow.
    def flow(flow_id: str, numbers: list[str], default: bool = True):
        text = yaml.safe_dump(
            {
                "id": flow_id,
                "numbers": numbers,
                "trigger": {"default": default},
                "start": "a",
                "steps": {"a": {"say": flow_id}},
            }
        )
        parsed, problems = parse_flow(text, f"{flow_id}.yaml")
        assert problems == []
        return parsed

    brand_a = flow("brand_a", ["whatsapp:+14155550001", "+14155550001"])
    brand_b = flow("brand_b", ["whatsapp:+14155550002"], default=False)
    anywhere = flow("anywhere", [], default=True)
    flows = FlowSet({f.id: f for f in (brand_a, brand_b, anywhere)})
    assert flows.match("hi", "whatsapp:+14155550001") is brand_a
    assert flows.match("hi", "+14155550001") is brand_a
    assert flows.match("hi", "whatsapp:+14155550002") is brand_b  # the only one there
    assert flows.match("hi", "whatsapp:+14155559999") is anywhere
    assert flows.responders_apply(None, "hi", "whatsapp:+14155550001") is True


def test_the_import_report_is_clean():
    # Item 14: hyphenated widget names are not "missing"; a voice widget is reported once.
    studio = {
        "description": "report",
        "states": [
            {
                "name": "Trigger",
                "type": "trigger",
                "transitions": [
                    {"event": "incomingMessage", "next": "ask-name"},
                    {"event": "incomingCall", "next": "greet-call"},
                ],
                "properties": {},
            },
            {
                "name": "ask-name",
                "type": "send-and-wait-for-reply",
                "transitions": [{"event": "incomingMessage", "next": "thanks"}],
                "properties": {"body": "Name?", "timeout": "60"},
            },
            {
                "name": "thanks",
                "type": "send-message",
                "transitions": [{"event": "sent"}],
                "properties": {"body": "Thanks {{widgets.ask-name.inbound.Body}}"},
            },
            {
                "name": "greet-call",
                "type": "say-play",
                "transitions": [{"event": "audioComplete"}],
                "properties": {"say": "Hello caller"},
            },
        ],
    }
    imported = import_studio(studio, "report")
    assert imported.warnings == []
    assert [(s.widget, s.reason) for s in imported.skipped] == [
        ("Trigger", "trigger 'incomingCall' is voice-only"),
        ("greet-call", "voice-only widget"),
    ]
    assert any("1 unwired timeout transition(s) end the execution" in c for c in imported.changes)
    assert any(c.startswith("responders: false") for c in imported.changes)


def test_the_command_binds_a_number_and_says_what_it_changed(app, tmp_path):
    output = tmp_path / "bound.yaml"
    result = app.test_cli_runner().invoke(
        args=[
            "studio",
            "import",
            str(DATA / "send_message.json"),
            "-o",
            str(output),
            "--number",
            "whatsapp:+14155550001",
            "--number",
            "+14155550001",
        ]
    )
    assert result.exit_code == 0, result.output
    flow = yaml.safe_load(output.read_text())
    assert flow["numbers"] == ["whatsapp:+14155550001", "+14155550001"]
    assert flow["trigger"] == {"default": True} and flow["responders"] is False
    assert "changed: bound to whatsapp:+14155550001, +14155550001" in result.output


def test_a_liquid_mistake_renders_leniently_as_in_studio():
    # Item 11: validation warns (tests/test_validate.py); the turn does not fail.
    from integrations.liquid import render

    values = {"vars": {"x": 1}, "flow": {"id": "f"}}
    assert render("a {{flow.variables.x}} b {{flow.variables.x}", values) == (
        "a 1 b {{flow.variables.x}"
    )
    assert render("[{{ flow.variables.x }}]{% nosuchtag %}", values) == "[1]"


def test_round_trip_keeps_the_same_flow():
    # Item 15: import → export → import gives the same steps, so the same conversations.
    from studio.export import export_studio

    for path in [*sorted(DATA.glob("*.json")), *FIXTURE_FILES]:
        first = import_studio(json.loads(path.read_text()), path.stem, subflows=SUBFLOWS)
        flow, problems = parse_flow(yaml.safe_dump(first.flow), f"{path.stem}.yaml")
        assert problems == [], path.stem
        exported = export_studio(flow, "https://parley.example.org")
        mapped = {flow_sid(flow_id): flow_id for flow_id in SUBFLOWS.values()}
        again = import_studio(exported, path.stem, subflows=mapped)
        assert again.flow["steps"] == first.flow["steps"], path.stem


class FakeHTTP:
    """The HTTP port answering by method and URL (without its query), recording requests."""

    def __init__(self, answers: dict[tuple[str, str], object]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str, object]] = []

    def request(self, method, url, *, headers, json=None, form=None, timeout):
        """Answer as scripted (404 for anything else)."""
        self.requests.append((method, url, json if json is not None else form))
        body = self.answers.get((method, url.split("?")[0]), {"error": "not found"})
        status = 200 if (method, url.split("?")[0]) in self.answers else 404
        return HTTPResponse(status=status, json=body, text=json_text(body))


@needs_fixtures
def test_fixture_vaccine_standby_list_as_studio_answers(twilio):
    assert says(twilio, "vaccine_standby_list")[0].startswith("You can get notified")
    script = [
        ("maybe", "You can get notified"),  # noMatch goes back to Welcome
        ("YES", "What is your full name?"),
        ("Ana Lima", "OK, Ana Lima, how old are you?"),
        ("34", "What's your 5-digit zip code?"),
        ("94110", "Thanks. Are you considered an essential worker?"),
        ("no", "Do you currently work from home? Reply yes/no."),
        ("yes", "Do you live in a nursing home"),
        ("no", "Do you live in a congregate setting"),
        ("no", "Do you have one or more health conditions"),
        ("no", "When it's your turn, would you like to be notifified via SMS or email?"),
        ("1", "What is your preferred language?"),
        ("1", "Thank you, you're now on the vaccine wait-list."),
    ]
    for text, expected in script:
        answer = says(twilio, text)
        assert len(answer) == 1 and answer[0].startswith(expected), (text, answer)


@needs_fixtures
def test_fixture_pride_astrology_as_studio_answers(twilio, api):
    assert says(twilio, "pride_astrology") == [
        "Hi there, tell us your sign and get a special Pride horoscope 🔮"
    ]
    assert says(twilio, "Leo") == [
        "Oh you're a Leo? Please hold while we consult the stars ✨",
        "📅  Today's horoscope 📅  \nA bright day.\n💭 Today's mood 💭   Proud\n"
        '💗 Your compatibility 💗  ["Leo","Aries"]',
        "Would you like to see who your celebrity match is and what lesbian bar you should go to?",
    ]
    match = says(twilio, "yes please")
    assert match[0] == "Oh la la your match is Kristen! A star."
    assert match[1].startswith("Learn more about and support the last 21 Lesbian bars")
    sign = next(r for r in api.requests if r["path"] == "/get_horoscope")
    assert sign["form"] == {"sign": "Leo"}

    # Its noMatch branch asks again but splits on the first answer, as in Studio: a
    # contact who first wrote no sign is told the dates again, whatever they write.
    other = "whatsapp:+15551230008"
    twilio.say("pride_astrology", sender=other)
    help_text = "If you need help with your sign"
    assert messages_of(twilio.say("rainbow", sender=other).data)[0].startswith(help_text)
    assert messages_of(twilio.say("Leo", sender=other).data)[0].startswith(help_text)


@needs_fixtures
def test_fixture_eppo_feature_flag_ends_silently_as_studio_does(twilio, app):
    # Its split reads a widget the flow does not have: noMatch, unwired: Studio ends.
    assert says(twilio, "eppo_feature_flag") == []
    assert execution(app).status == "ended"


@needs_fixtures
def test_fixture_daily_sitdown_parent_and_its_subflow(twilio, app):
    base = "https://ngrok.anthonydellavecchia.com/v1"
    http = FakeHTTP(
        {
            ("POST", f"{base}/users/validate"): {"ok": True},
            ("GET", f"{base}/users/names"): {"name": "ana"},
        }
    )
    app.extensions["parley"].runner.http = http
    assert says(twilio, "daily_sitdown_parent") == ["ANA what did you do yesterday?"]
    assert http.requests[0] == ("POST", f"{base}/users/validate", {"caller": SENDER})
    assert http.requests[1][:2] == ("GET", f"{base}/users/names?caller=whatsapp%3A%2B15551230007")
    assert says(twilio, "tests") == ["ANA what will you do today?"]
    assert says(twilio, "tests") == [
        "Weren’t you working on that yesterday? Why aren’t you done yet?",
        "ANA what impediments do you have?",
    ]
    assert says(twilio, "none") == [
        "Thanks, ana now get back to work.\n\nReply with 1 to view the Daily Sit-Down."
    ]
    assert says(twilio, "1") == ["https://airtable.com/shrgxvKyKIJ9pJItw"]


@needs_fixtures
def test_fixture_daily_sitdown_an_unknown_caller_is_refused(twilio, app):
    app.extensions["parley"].runner.http = FakeHTTP({})
    assert says(twilio, "daily_sitdown_parent") == [
        "Daily Sit-Down is a sacred ritual, and you are not allowed to join."
    ]


@needs_fixtures
def test_fixture_webchat_hls_conversations_to_flex(twilio, app):
    assert says(twilio, "webchat_hls_conversations") == [
        "Hello! In order for us to assist you today, please answer a few questions.",
        "Please select a reason for your visit today from the following options:",
    ]
    assert says(twilio, "Parking") == ["Are you a new or existing patient?"]
    assert says(twilio, "New") == ["Please enter your first name."]
    assert says(twilio, "Ana") == ["Please enter your last name."]
    assert says(twilio, "Lima") == ["Please enter your date of birth (YYYY-mm-dd)."]
    assert says(twilio, "1990-01-01") == [
        "Thank you! Please hold on for just a few moments while I connect you with someone "
        "who can help."
    ]
    held = execution(app)
    assert held.variables["count"] == "0"  # the loop counter starts at 0, as in Studio
    attributes = json.loads(held.variables["studio_flex_attributes"])
    assert attributes["name"] == "Ana Lima" and attributes["dob"] == "1990-01-01"
    with app.app_context():
        assert db.session.scalars(sa.select(Conversation.controlled_by)).all() == [
            "queue:WWd8cd0445d2df474f0744283a8cac96b7"
        ]


def test_each_number_starts_its_own_flow_through_the_webhook(app_config, tmp_path, twilio):
    # The app fixture already bound send_message to OUR_WHATSAPP; a second brand's
    # number starts its own imported flow on any message.
    other = "whatsapp:+14155550002"
    imported = import_studio(definition("conversation_trigger"), "brand_b", numbers=[other])
    assert imported.flow["numbers"] == [other]
    folder = Path(app_config["FLOWS_DIR"])
    (folder / "brand_b.yaml").write_text(yaml.safe_dump(imported.flow), encoding="utf-8")
    from app import create_app

    second = create_app(app_config)
    answers = []
    try:
        for sender, to in ((SENDER, other), ("whatsapp:+15551230009", OUR_WHATSAPP)):
            form = twilio.form("hello", sender=sender, to=to)
            response = second.test_client().post(
                twilio.path, data=form, headers={"X-Twilio-Signature": twilio.sign(form)}
            )
            answers.append(messages_of(response.data))
    finally:
        with second.app_context():
            db.session.remove()
            db.engine.dispose()
    assert answers == [
        [f"{SENDER} wrote hello on WHATSAPP"],
        ["Hi whatsapp:+15551230009, you wrote: hello", "Bye!"],
    ]
