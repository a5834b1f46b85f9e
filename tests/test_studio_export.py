"""``flask studio export``: a Parley flow as a Studio flow definition, and back."""

from __future__ import annotations

import json

import pytest

from engine.validate import load_flows
from studio.export import export_studio
from studio.importer import import_studio

#: The widget types an exported definition may use.
STUDIO_TYPES = {"trigger", "send-message", "send-and-wait-for-reply", "split-based-on"}
STUDIO_TYPES |= {"make-http-request", "set-variables", "run-subflow", "send-to-flex"}

NATIVE = """\
id: native
description: Only what Studio does itself.
trigger: {keywords: [native]}
start: name
steps:
  name:
    ask: "Your name?"
    save_as: name
    timeout: {after: 10m, next: bye}
    next: mood
  mood:
    ask: "Hi {{ vars.name }}! Happy? yes or no"
    save_as: mood
    next: check
  check:
    branch:
      - if: "vars.mood is matches_any_of('yes, y')"
        then: glad
      - else: bye
  glad:
    say: "Glad to hear it, {{ vars.name }}."
    next: done
  bye:
    say: "Bye."
  done:
    end: true
"""


def check_definition(definition: dict) -> None:
    """Studio's flow-definition checks: the top-level fields and a closed graph."""
    assert set(definition) == {"description", "states", "initial_state", "flags"}
    names = [state["name"] for state in definition["states"]]
    assert len(names) == len(set(names))
    assert definition["initial_state"] in names
    for state in definition["states"]:
        assert state["type"] in STUDIO_TYPES, state
        assert isinstance(state["properties"], dict)
        for transition in state["transitions"]:
            assert transition.get("next") in (None, *names), (state["name"], transition)


@pytest.mark.parametrize("flow_id", ["menu", "goal_setting"])
def test_each_shipped_flow_exports_and_imports_back(app, tmp_path, flow_id):
    output = tmp_path / f"{flow_id}.studio.json"
    result = app.test_cli_runner().invoke(args=["studio", "export", flow_id, "-o", str(output)])
    assert result.exit_code == 0, result.output
    definition = json.loads(output.read_text())
    check_definition(definition)

    back = import_studio(definition, flow_id)
    assert back.skipped == [] and back.warnings == []
    (tmp_path / f"{flow_id}.yaml").write_text(json.dumps(back.flow))
    runner = app.extensions["parley"].runner
    again = load_flows(tmp_path, runner.templates).get(flow_id)  # validates
    original = runner.flows.get(flow_id)
    for step_id, step in original.steps.items():
        if step.kind == "end":
            continue
        twin = again.steps[step_id]  # every step is still there, under its id
        if twin.kind == "http" and step.kind != "http":  # through its step endpoint
            base = app.extensions["parley"].settings.public_base_url
            endpoint = f"{base}/studio/flows/{flow_id}/steps/{step_id}?"
            assert endpoint in twin.http.url
            if step.kind in ("set", "branch"):  # nothing to say: no empty Send Message
                assert f"{step_id}_reply" not in again.steps
            else:
                assert again.steps[f"{step_id}_reply"].kind == "say"
            if step.waits:  # Studio waits for the answer and passes it on
                assert again.steps[f"{step_id}_answer"].kind == "ask"
                resume = again.steps[f"{step_id}_resume"]
                assert resume.http.form["Body"] == (
                    '{{ "{{widgets.' + step_id + '_answer.inbound.Body}}" | liquid }}'
                )
        else:
            assert twin.kind == step.kind
            assert getattr(twin, "say", None) == getattr(step, "say", None)
            assert getattr(twin, "set", None) == getattr(step, "set", None)


def test_what_studio_does_itself_round_trips(app, tmp_path):
    (tmp_path / "native.yaml").write_text(NATIVE)
    templates = app.extensions["parley"].runner.templates
    flow = load_flows(tmp_path, templates).get("native")
    definition = export_studio(flow, "https://parley.example.org")
    check_definition(definition)
    types = {state["name"]: state["type"] for state in definition["states"]}
    assert types == {
        "Trigger": "trigger",
        "name": "send-and-wait-for-reply",
        "mood": "send-and-wait-for-reply",
        "check": "split-based-on",
        "glad": "send-message",
        "bye": "send-message",
    }
    mood = next(state for state in definition["states"] if state["name"] == "mood")
    assert mood["properties"]["body"] == "Hi {{widgets.name.inbound.Body}}! Happy? yes or no"

    back = import_studio(definition, "native").flow
    steps = back["steps"]
    assert steps["name"]["timeout"] == {"after": "600s", "next": "bye"}
    assert steps["check"]["branch"][0]["then"] == "glad"
    assert "matches_any_of" in steps["check"]["branch"][0]["if"]
    assert steps["bye"] == {"say": "Bye."}
    (tmp_path / "native.yaml").write_text(json.dumps(back))
    assert load_flows(tmp_path, templates).get("native") is not None  # validates


def test_an_unknown_flow_is_refused(app):
    result = app.test_cli_runner().invoke(args=["studio", "export", "nope"])
    assert result.exit_code == 1
    assert "no flow 'nope'" in result.output
