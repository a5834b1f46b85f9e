"""``flask studio import``: Studio flow definitions become Parley flows that hold a conversation.

The conformance part runs over real Studio exports in ``../shared/fixtures/studio/``
and skips, saying so, where that folder is absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from engine.flow import DEFAULT_FALLBACK
from studio.importer import import_studio
from tests.fakes.api_server import FakeAPI
from tests.twiml import messages_of

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "studio"
FILES = sorted(FIXTURES.glob("*.json")) if FIXTURES.is_dir() else []
SUBFLOWS = {"FW50120385f4d1e8dcf30c0bcd83695969": "daily_sitdown_child_subflow"}
needs_fixtures = pytest.mark.skipif(not FILES, reason=f"no Studio exports in {FIXTURES}")
SENDER = "whatsapp:+15551230004"


def write_flow(folder: Path, name: str, definition: dict, **options) -> list:
    imported = import_studio(definition, name, subflows=SUBFLOWS, **options)
    text = yaml.safe_dump(imported.flow, sort_keys=False, allow_unicode=True)
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return imported.skipped


LIQUID = {
    "description": "Liquid as Studio has it",
    "initial_state": "Trigger",
    "flags": {"allow_concurrent_calls": True},
    "states": [
        {
            "name": "Trigger",
            "type": "trigger",
            "transitions": [
                {"event": "incomingMessage", "next": "remember"},
                {"event": "incomingCall"},
            ],
            "properties": {},
        },
        {
            "name": "remember",
            "type": "set-variables",
            "transitions": [{"event": "next", "next": "pick"}],
            "properties": {
                "variables": [
                    {
                        "key": "shout",
                        "value": "{% assign n = trigger.message.Body | upcase %}{{ n }}",
                    },
                    {
                        "key": "visits",
                        "value": "{% if flow.variables.visits %}"
                        "{{ flow.variables.visits | plus: 1 }}{% else %}1{% endif %}",
                    },
                ]
            },
        },
        {
            "name": "pick",
            "type": "send-and-wait-for-reply",
            "transitions": [{"event": "incomingMessage", "next": "check"}, {"event": "timeout"}],
            "properties": {
                "body": "{{flow.variables.shout}} #{{flow.variables.visits}}: "
                "{% for x in (1..3) %}{{ x }}"
                "{% unless forloop.last %}/{% endunless %}{% endfor %}?",
                "timeout": "3600",
            },
        },
        {
            "name": "check",
            "type": "split-based-on",
            "transitions": [
                {"event": "noMatch", "next": "ring"},
                {
                    "event": "match",
                    "next": "yes",
                    "conditions": [
                        {
                            "type": "matches_any_of",
                            "arguments": ["{{widgets.pick.inbound.Body}}"],
                            "value": "{{ '1, 2' }}",
                        }
                    ],
                },
            ],
            "properties": {"input": "{{widgets.pick.inbound.Body}}"},
        },
        {
            "name": "yes",
            "type": "send-message",
            "transitions": [{"event": "sent"}],
            "properties": {
                "body": "You said {{widgets.pick.inbound.Body | default: 'nothing'}}"
                " (after {{trigger.message.Body}})."
            },
        },
        {
            "name": "ring",
            "type": "say-play",
            "transitions": [{"event": "audioComplete", "next": "no"}],
            "properties": {"say": "hello"},
        },
        {
            "name": "no",
            "type": "send-message",
            "transitions": [{"event": "sent"}],
            "properties": {"body": "Not 1 or 2 from {{contact.channel.address}}."},
        },
    ],
}


@pytest.fixture(scope="module")
def functions() -> Iterator[FakeAPI]:
    """Twilio Functions on 127.0.0.1: each run-function widget of the exports answers {}."""
    with FakeAPI() as api:
        yield api


@pytest.fixture
def app_config(app_config: dict, tmp_path, functions: FakeAPI) -> dict:
    for path in FILES:
        definition = json.loads(path.read_text())
        for state in definition["states"]:
            if state["type"] == "run-function":
                url = state["properties"].get("url") or ""
                functions.answer(urlsplit(url).path if url else f"/{state['name']}", {})
        write_flow(tmp_path, path.stem, definition, functions_url=functions.base_url)
    write_flow(tmp_path, "liquid", LIQUID)
    app_config["FLOWS_DIR"] = str(tmp_path)
    return app_config


def test_liquid_renders_as_in_studio(twilio):
    assert messages_of(twilio.say("liquid", sender=SENDER).data) == ["LIQUID #1: 1/2/3?"]
    assert messages_of(twilio.say("2", sender=SENDER).data) == ["You said 2 (after liquid)."]
    assert messages_of(twilio.say("liquid", sender=SENDER).data) == ["LIQUID #1: 1/2/3?"]
    assert messages_of(twilio.say("9", sender=SENDER).data) == [f"Not 1 or 2 from {SENDER}."]


def test_what_is_not_imported_is_reported_and_the_rest_imports():
    imported = import_studio(LIQUID, "liquid")
    assert [(s.widget, s.type, s.reason) for s in imported.skipped] == [
        ("ring", "say-play", "voice-only widget")
    ]
    assert imported.flow["steps"]["ring"] == {"set": {"studio_skipped": "ring"}, "next": "no"}
    # Its timeout leads nowhere: Studio ends the execution then (issue 13, item 1).
    assert imported.flow["steps"]["pick"]["timeout"] == {"after": "3600s", "next": "studio_end"}


def test_the_command_writes_the_flow_and_reports(app, tmp_path):
    source = tmp_path / "liquid.json"
    source.write_text(json.dumps(LIQUID))
    output = tmp_path / "out" / "coach.yaml"
    output.parent.mkdir()
    result = app.test_cli_runner().invoke(args=["studio", "import", str(source), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "not imported: ring (say-play): voice-only widget" in result.output
    assert yaml.safe_load(output.read_text())["id"] == "coach"

    source.write_text('{"states": []}')
    result = app.test_cli_runner().invoke(args=["studio", "import", str(source)])
    assert result.exit_code == 1
    assert "not a Studio flow definition" in result.output


@needs_fixtures
@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_each_export_imports_validates_and_answers(twilio, path):
    # The app fixture loaded and validated every imported flow; now talk to this one.
    answer = messages_of(twilio.say(path.stem, sender=SENDER).data)
    assert DEFAULT_FALLBACK not in answer
    imported = import_studio(json.loads(path.read_text()), path.stem, subflows=SUBFLOWS)
    # A flow says something, unless its own templates name a widget it does not
    # have (an export edited by hand): the report says so.
    assert answer or imported.warnings, "the flow said nothing and the report says nothing"


@needs_fixtures
def test_a_scripted_conversation_through_an_export(twilio):
    assert messages_of(twilio.say("vaccine_standby_list", sender=SENDER).data)[0].startswith(
        "You can get notified"
    )
    assert messages_of(twilio.say("YES", sender=SENDER).data) == ["What is your full name?"]
    assert messages_of(twilio.say("Ana Lima", sender=SENDER).data) == [
        "OK, Ana Lima, how old are you?"
    ]
