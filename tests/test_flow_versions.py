"""Flow versions: contacts finish on the version they started, unless the flow says otherwise."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from app import create_app
from engine.flow import FlowSet, parse_flow
from engine.ports import Contact, InboundMessage
from engine.runner import Runner
from engine.templating import Templates
from models import Execution, FlowVersion, db
from tests.conftest import TwilioWebhook
from tests.twiml import messages_of

V1 = """\
id: survey
trigger: {default: true}
start: name
steps:
  name:
    ask: "v1: your name?"
    save_as: name
    next: colour
  colour:
    ask: "v1: favourite colour?"
    save_as: colour
    next: bye
  bye:
    say: "v1: thanks {{ vars.name }}, {{ vars.colour }} noted."
    next: done
  done:
    end: true
"""

V2 = """\
id: survey
trigger: {default: true}
start: name
steps:
  name:
    ask: "v2: what should we call you?"
    save_as: name
    next: hue
  hue:
    ask: "v2: which hue?"
    save_as: colour
    next: bye
  bye:
    say: "v2: {{ vars.colour }} it is, {{ vars.name }}."
    next: done
  done:
    end: true
"""

ANA = "whatsapp:+15551230001"
BEN = "whatsapp:+15551230002"


class Clock:
    def now(self) -> dt.datetime:
        return dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


class Archive:
    """A `FlowArchive` in a dict, as the store keeps it."""

    def __init__(self, *texts: str) -> None:
        self.texts = {}
        for text in texts:
            flow, problems = parse_flow(text, "survey.yaml")
            assert flow is not None, problems
            self.texts[(flow.id, flow.version)] = text
        self.reads = 0

    def flow_text(self, flow_id: str, version: str) -> str | None:
        self.reads += 1
        return self.texts.get((flow_id, version))


def runner_on(text: str, archive: Archive | None) -> Runner:
    flow, problems = parse_flow(text, "survey.yaml")
    assert flow is not None, problems
    flows = FlowSet({flow.id: flow}, archive=archive)
    return Runner(flows, Templates(Path("prompts")), llm=None, clock=Clock())  # type: ignore[arg-type]


def texts(result) -> list[str]:
    return [reply.text for reply in result.replies]


CONTACT = Contact(id=1, phone="+15551230001")


def waiting_at_colour_on_v1():
    runner = runner_on(V1, None)
    execution = runner.run_turn(None, InboundMessage("hi"), CONTACT, lambda n: []).execution
    runner.run_turn(execution, InboundMessage("Ana"), CONTACT, lambda n: [])
    assert (execution.current_step, execution.status) == ("colour", "waiting")
    return execution


def test_an_execution_keeps_its_version_when_the_flow_changes():
    execution = waiting_at_colour_on_v1()
    archive = Archive(V1, V2)
    runner = runner_on(V2, archive)

    result = runner.run_turn(execution, InboundMessage("blue"), CONTACT, lambda n: [])

    assert texts(result) == ["v1: thanks Ana, blue noted."]
    assert execution.status == "ended"
    # A new contact starts on the new version.
    fresh = runner.run_turn(None, InboundMessage("hi"), CONTACT, lambda n: [])
    assert texts(fresh) == ["v2: what should we call you?"]
    # Old versions are parsed once and cached.
    second = waiting_at_colour_on_v1()
    runner.run_turn(second, InboundMessage("red"), CONTACT, lambda n: [])
    assert archive.reads == 1


def test_without_the_old_version_the_execution_ends_as_before():
    execution = waiting_at_colour_on_v1()
    runner = runner_on(V2, Archive(V2))

    result = runner.run_turn(execution, InboundMessage("blue"), CONTACT, lambda n: [])

    assert texts(result) == ["v2: what should we call you?"]


def test_on_change_restart_starts_the_new_version_at_the_next_message():
    v2 = V2.replace("start: name\n", "start: name\non_change: restart\n")
    execution = waiting_at_colour_on_v1()
    runner = runner_on(v2, Archive(V1, v2))

    result = runner.run_turn(execution, InboundMessage("blue"), CONTACT, lambda n: [])

    assert execution.status == "ended"
    assert result.started
    assert texts(result) == ["v2: what should we call you?"]
    assert result.execution.flow_version != execution.flow_version


def test_a_step_map_moves_the_execution_to_the_new_version():
    v2 = V2.replace("start: name\n", "start: name\nstep_map: {colour: hue}\n")
    execution = waiting_at_colour_on_v1()
    runner = runner_on(v2, Archive(V1, v2))

    result = runner.run_turn(execution, InboundMessage("blue"), CONTACT, lambda n: [])

    assert texts(result) == ["v2: blue it is, Ana."]
    assert execution.flow_version == runner.flows.get("survey").version


def test_a_step_map_to_an_unknown_step_is_a_problem_with_its_line():
    v2 = V2.replace("start: name\n", "start: name\nstep_map:\n  colour: shade\n")

    flow, problems = parse_flow(v2, "survey.yaml")

    assert flow is None
    assert [(p.line, "shade" in p.message) for p in problems] == [(5, True)]


def test_step_map_and_restart_do_not_go_together():
    v2 = V2.replace("start: name\n", "start: name\non_change: restart\nstep_map: {colour: hue}\n")
    flow, problems = parse_flow(v2, "survey.yaml")
    assert flow is None and problems


# Through the webhook, the database and `flask flows status`.


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "survey.yaml").write_text(V1, encoding="utf-8")
    return folder


@pytest.fixture
def app_config(app_config: dict, folder: Path) -> dict:
    return {**app_config, "FLOWS_DIR": str(folder)}


def say(twilio, text: str, sender: str) -> list[str]:
    response = twilio.say(text, sender=sender)
    assert response.status_code == 200
    return messages_of(response.data)


def status(app) -> str:
    result = app.test_cli_runner().invoke(args=["flows", "status"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def started(app_config) -> Iterator[Callable[[], Flask]]:
    """Start servers from the factory (each a restart); closes their pools afterwards."""
    apps: list[Flask] = []

    def start() -> Flask:
        apps.append(create_app(app_config))
        return apps[-1]

    yield start
    for instance in apps:
        with instance.app_context():
            db.session.remove()
            db.engine.dispose()


def test_editing_a_flow_leaves_waiting_contacts_on_their_version(app, folder, started):
    # The `app` fixture emptied the tables: start the server that stores version 1.
    v1_app = started()
    v1 = TwilioWebhook(v1_app.test_client())
    assert say(v1, "hi", ANA) == ["v1: your name?"]
    assert say(v1, "Ana", ANA) == ["v1: favourite colour?"]

    # The designer edits the flow; the server restarts with version 2.
    (folder / "survey.yaml").write_text(V2, encoding="utf-8")
    v2_app = started()
    v2 = TwilioWebhook(v2_app.test_client())
    assert say(v2, "hi", BEN) == ["v2: what should we call you?"]
    with v2_app.app_context():
        versions = db.session.scalars(sa.select(FlowVersion).order_by(FlowVersion.id)).all()
        assert [(row.flow_id, row.text) for row in versions] == [("survey", V1), ("survey", V2)]
        v1_hash, v2_hash = (row.version for row in versions)

    report = status(v2_app)
    assert f"version {v1_hash} (loaded" in report
    assert f"version {v2_hash} (current, loaded" in report
    lines = [line.split() for line in report.splitlines()]
    assert ["colour", "1"] in lines and ["name", "1"] in lines
    assert report.index(v1_hash) < report.index("colour") < report.index(v2_hash)
    assert report.index(v2_hash) < report.index("name")

    # Ana finishes on version 1's steps; Ben goes on with version 2's.
    assert say(v2, "blue", ANA) == ["v1: thanks Ana, blue noted."]
    assert say(v2, "Ben", BEN) == ["v2: which hue?"]
    with v2_app.app_context():
        rows = db.session.scalars(sa.select(Execution).order_by(Execution.id)).all()
        assert [(r.flow_version, r.status, r.current_step) for r in rows] == [
            (v1_hash, "ended", "done"),
            (v2_hash, "waiting", "hue"),
        ]
    report = status(v2_app)
    assert v1_hash not in report
    assert ["hue", "1"] in [line.split() for line in report.splitlines()]


def test_storing_versions_is_idempotent(app, started):
    started()
    started()
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(FlowVersion)) == 1
