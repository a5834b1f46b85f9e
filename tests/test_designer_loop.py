"""The designer's quality loop (issue 16): a real conversation becomes a conversation test.

A conversation runs through the signed webhook with the model answering from
the fake OpenAI server; it is saved as a test (CLI and console), the test
passes at once, fails with a turn-by-turn diff after a change to the flow, and
holds none of the contact's private details.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from flask import Flask

from app import create_app
from conversation.versions import store_versions
from models import Message, db
from tests.admin_support import add_user, login, post
from tests.designer_support import (
    COACH,
    ROOT,
    assert_private_details_absent,
    conversation_id,
    copy_flows,
    run_a_conversation,
)
from tests.fakes.openai_server import Error, prompt_of, schema_name_of


@pytest.fixture
def own_flows(app_config, tmp_path) -> Path:
    """A copy of the shipped flows for `app` (ask for it before `app`): tests get saved there."""
    return copy_flows(app_config, tmp_path)


@pytest.fixture
def restarted(app_config, tmp_path) -> Iterator[Callable[[Path], Flask]]:
    """Start the app again on another flows folder (a deploy); closes its pool afterwards."""
    apps: list[Flask] = []

    def start(flows: Path) -> Flask:
        apps.append(create_app({**app_config, "FLOWS_DIR": str(flows)}))
        return apps[-1]

    yield start
    for instance in apps:
        with instance.app_context():
            db.session.remove()
            db.engine.dispose()


def test_each_turn_keeps_the_model_calls_it_made(app, twilio, fake_openai):
    fake_openai.script(COACH[0])
    twilio.say("hello", ProfileName="Ana")
    twilio.say("2")

    with app.app_context():
        inbound = db.session.scalars(
            sa.select(Message).where(Message.direction == "inbound").order_by(Message.id)
        ).all()
        assert [m.llm_calls for m in inbound] == [None, [{"step": "coach", "output": COACH[0]}]]


def test_a_webhook_conversation_saved_from_the_cli_passes_then_fails_on_a_changed_say(
    app, restarted, twilio, fake_openai, tmp_path
):
    with app.app_context():  # the fixture emptied the tables after the app stored them
        store_versions(db.session, app.extensions["parley"].runner.flows.flows.values())
        db.session.commit()
    run_a_conversation(twilio, fake_openai)
    conversation = conversation_id(app)
    path = tmp_path / "saved.yaml"
    cli = app.test_cli_runner()

    saved = cli.invoke(args=["transcripts", "to-test", str(conversation), "-o", str(path)])

    assert saved.exit_code == 0, saved.output
    assert "It passes" in saved.output
    text = path.read_text()
    assert_private_details_absent(text)
    document = yaml.safe_load(text)
    assert document["flow"] == "goal_setting"
    assert document["source"] == {"conversation": conversation}
    assert (
        document["flow_version"]
        == app.extensions["parley"].runner.flows.get("goal_setting").version
    )
    turns = document["tests"][0]["turns"]
    assert [turn["say"] for turn in turns] == [
        "hello",
        "2",
        "I walk from [ADDRESS] most days; write to [EMAIL] or call [PHONE]",
        "Yes, let's do it!",
    ]
    assert turns[0]["expect"][0].startswith("Hi [NAME]! I'm Parley")
    assert turns[2]["llm"] == [{**COACH[1], "goal": "walks logged to [EMAIL]"}]
    assert turns[3]["expect"][1].startswith("Great, your goal for this week: a 10-minute walk")

    passed = cli.invoke(args=["flows", "test", str(path)])
    assert passed.exit_code == 0, passed.output
    assert "1 passed, 0 failed" in passed.output

    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    flow_file = flows / "goal_setting.yaml"
    flow_file.write_text(
        flow_file.read_text().replace("Let's pick one small goal", "Let's choose one small goal")
    )

    changed = restarted(flows)  # stores the new version
    failed = changed.test_cli_runner().invoke(args=["flows", "test", str(path)])

    assert failed.exit_code == 1
    assert "turn 1 of 4 ('hello'): reply 1 (step welcome) differs." in failed.output
    assert "written for version " in failed.output
    assert "  ✗ turn 1  contact: 'hello'   steps: welcome → area" in failed.output
    assert "  ✓ turn 2  contact: '2'   steps: area → coach" in failed.output

    older = changed.test_cli_runner().invoke(
        args=["flows", "test", str(path), "--against-version", "1"]
    )
    assert older.exit_code == 0, older.output
    assert f"Flow goal_setting: version {document['flow_version']}" in older.output
    unknown = changed.test_cli_runner().invoke(
        args=["flows", "test", str(path), "--against-version", "7"]
    )
    assert unknown.exit_code == 1
    assert "flow goal_setting has no stored version 7; stored: 1 (" in unknown.output


LIVE_TEST = """
flow: goal_setting
contact: {phone: "+15550100100", channel: whatsapp}
tests:
  - name: the coach suggests a walk
    turns:
      - say: hello
        expect: [{any: true}, {any: true}]
      - say: "2"
        llm: [{reply: "What kind of moving do you enjoy?", goal: "", agreed: false}]
        live: {max_chars: 200, judge: "Asks what kind of movement the contact enjoys"}
      - say: I like walking but I'm busy at work
        llm: [{reply: "How about a 10-minute walk after lunch?", goal: "", agreed: false}]
        live:
          not_contains: diet pills
          judge: "Suggests one small, concrete walking goal"
"""
GOOD_WALK = "How about a 10-minute walk after lunch?"
BAD_WALK = "Forget walking: diet pills work faster."


class FakeModel:
    """Answers the coach well, except every second time about walking; judges replies."""

    def __init__(self) -> None:
        self.walks = 0

    def __call__(self, body: dict) -> dict:
        prompt = prompt_of(body)
        if schema_name_of(body) == "judgement":
            reply = json.loads(prompt)["bot_replied"]
            if "diet pills" in reply:
                return {"passed": False, "reason": "It pushes diet pills instead of a walk."}
            return {"passed": True, "reason": "A small, concrete step that fits the rubric."}
        if "walking" in prompt:
            self.walks += 1
            reply = BAD_WALK if self.walks % 2 == 0 else GOOD_WALK
            return {"reply": reply, "goal": "", "agreed": False}
        return {"reply": "What kind of moving do you enjoy?", "goal": "", "agreed": False}


def test_live_runs_report_pass_rates_with_the_judges_reasons(app, fake_openai, tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text(LIVE_TEST)
    junit = tmp_path / "junit.xml"
    fake_openai.answer = FakeModel()
    cli = app.test_cli_runner()

    result = cli.invoke(
        args=[
            *("flows", "test", str(path), "--live", "--repeat", "2"),
            *("--min-pass-rate", "0.5", "--junit", str(junit)),
        ]
    )

    assert result.exit_code == 0, result.output
    assert f"ok   {path}: the coach suggests a walk: passed 1 of 2 run(s) (50%)" in result.output
    assert (
        "run 2: turn 3 [coach] a reply not containing 'diet pills' → FAIL: "
        f"contains 'diet pills': {BAD_WALK!r}"
    ) in result.output
    assert (
        "run 2: turn 3 [coach] judge: Suggests one small, concrete walking goal → FAIL: "
        "It pushes diet pills instead of a walk."
    ) in result.output
    assert "run 1: turn 3 [coach] judge: Suggests one small, concrete walking goal → PASS" in (
        result.output
    )
    assert re.search(r"\n  goal_setting/coach +6/8 \(75%\)\n", result.output)
    assert "Tokens: flow " in result.output and "(gpt-4o-mini)" in result.output
    assert "Cost: $0.0" in result.output
    assert "1 of 1 test(s) at or above the minimum pass rate 50%; 0 model error(s)" in (
        result.output
    )
    judged = [body for body in fake_openai.requests if schema_name_of(body) == "judgement"]
    assert len(judged) == 4  # two judged turns, two runs
    suite = ElementTree.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    assert "diet pills" in suite.find("testcase/failure").text

    fake_openai.reset().answer = FakeModel()
    strict = cli.invoke(args=["flows", "test", str(path), "--live", "--repeat", "2"])
    assert strict.exit_code == 1
    assert f"FAIL {path}: the coach suggests a walk: passed 1 of 2 run(s) (50%)" in strict.output


def test_model_errors_in_live_runs_are_errors_never_passes(app, fake_openai, tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text(LIVE_TEST)
    fake_openai.default_reply = Error(500)

    result = app.test_cli_runner().invoke(
        args=["flows", "test", str(path), "--live", "--min-pass-rate", "0"]
    )

    assert "passed 0 of 1 run(s) (0%)" in result.output
    assert "turn 2 [coach] the model answers → ERROR: model error: LLM request to model" in (
        result.output
    )
    assert "HTTP 500" in result.output
    assert "; 2 model error(s)" in result.output
    assert "→ PASS" not in result.output


def test_save_as_test_from_the_console_then_see_it_on_the_flow_tests_page(
    own_flows, app, client, twilio, fake_openai
):
    run_a_conversation(twilio, fake_openai)
    conversation = conversation_id(app)
    add_user(app, "agent@example.com", "agent")
    add_user(app, "cur@example.com", "curator")

    login(client, "agent@example.com")
    assert "Save as test" not in client.get(f"/admin/conversations/{conversation}").text
    assert post(client, f"/admin/conversations/{conversation}/test").status_code == 403
    client.post("/admin/logout", data={"csrf_token": ""})

    client = app.test_client()
    login(client, "cur@example.com")
    page = f"/admin/conversations/{conversation}"
    response = post(client, f"/admin/conversations/{conversation}/test", page=page)

    assert response.status_code == 302
    assert "/admin/flow-tests#test-goal-setting-conversation-" in response.location
    saved = own_flows / "tests" / f"goal_setting_conversation_{conversation}.yaml"
    assert_private_details_absent(saved.read_text())
    listing = client.get("/admin/flow-tests").text
    assert "Saved as test goal_setting_conversation_" in listing and "it passes" in listing
    assert f"conversation {conversation}" in listing and "passed" in listing
    assert app.test_cli_runner().invoke(args=["flows", "test", str(saved)]).exit_code == 0
    transcript = client.get(page).text
    assert "This conversation is a test" in transcript
    assert f"goal_setting_conversation_{conversation}.yaml" in transcript

    marked = post(
        client,
        f"/admin/conversations/{conversation}/test",
        {"wrong_turn": "3", "not_contains": "10-minute"},
        page=page,
    )
    assert marked.status_code == 302
    turns = yaml.safe_load(saved.read_text())["tests"][0]["turns"]
    assert turns[2]["expect"] == {"not_contains": "10-minute"}
    assert turns[2]["live"] == {"not_contains": "10-minute"}
    listing = client.get("/admin/flow-tests").text
    assert "it does not pass yet" in listing and "FAILED" in listing
    assert "the replies contains &#39;10-minute&#39;" in listing


@pytest.fixture
def impatient(app_config) -> None:
    """The app about to start gives the model 0.3 s (ask for it before `app`)."""
    app_config["OPENAI_TIMEOUT"] = "0.3"


def test_a_timeout_in_a_live_run_is_reported_as_a_timeout(impatient, app, fake_openai, tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text(LIVE_TEST)
    fake_openai.delay_seconds = 1

    result = app.test_cli_runner().invoke(args=["flows", "test", str(path), "--live"])

    assert result.exit_code == 1
    assert "turn 2 [coach] the model answers → ERROR: timeout: LLM request to model" in (
        result.output
    )
    assert "timed out" in result.output and "→ PASS" not in result.output
