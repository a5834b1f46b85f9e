"""Timeouts: a waiting step moves on when the contact does not answer in time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.flow import FlowSet, parse_flow
from engine.ports import Contact, InboundMessage
from engine.runner import Runner
from engine.steps.base import Timeout, parse_duration
from engine.templating import Templates
from engine.validate import validate_flows

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
CONTACT = Contact(id=1, phone="+15551230001")

FLOW = """\
id: nudging
trigger: {default: true}
start: area
steps:
  area:
    ask: "Sleep or movement?"
    choices: [sleep, movement]
    save_as: area
    timeout: {after: 24h, next: nudge}
    next: done
  nudge:
    say: "Still there? Reply any time to carry on."
    next: area_again
  area_again:
    ask: "Sleep or movement?"
    choices: [sleep, movement]
    save_as: area
    next: done
  done:
    end: true
"""


class Clock:
    def now(self) -> dt.datetime:
        return NOW


def make_runner(text: str = FLOW) -> Runner:
    flow, problems = parse_flow(text, "nudging.yaml")
    assert flow is not None, problems
    templates = Templates(Path("prompts"))
    assert validate_flows([flow], templates) == []
    return Runner(FlowSet({flow.id: flow}), templates, llm=None, clock=Clock())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", dt.timedelta(minutes=30)),
        ("24h", dt.timedelta(hours=24)),
        ("2d", dt.timedelta(days=2)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("45s", dt.timedelta(seconds=45)),
        (90, dt.timedelta(seconds=90)),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0m", "soon", "5 minutes", "-1h", True])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValidationError):
        Timeout.model_validate({"after": text, "next": "x"})


def test_waiting_sets_the_deadline_and_the_timeout_moves_on():
    runner = make_runner()
    started = runner.run_turn(None, InboundMessage("hi"), CONTACT, lambda n: [])
    execution = started.execution
    assert execution.wait_deadline == NOW + dt.timedelta(hours=24)

    fired = runner.fire_timeout(execution, CONTACT, lambda n: [])

    assert [reply.text for reply in fired.replies] == [
        "Still there? Reply any time to carry on.",
        "Sleep or movement?",
    ]
    assert (execution.current_step, execution.status) == ("area_again", "waiting")
    assert execution.wait_deadline is None
    assert fired.steps == ["nudge", "area_again"]


def test_an_answer_in_time_clears_the_deadline():
    runner = make_runner()
    execution = runner.run_turn(None, InboundMessage("hi"), CONTACT, lambda n: []).execution

    runner.run_turn(execution, InboundMessage("sleep"), CONTACT, lambda n: [])

    assert execution.status == "ended"
    assert execution.wait_deadline is None
    assert runner.fire_timeout(execution, CONTACT, lambda n: []).replies == []


def test_a_retry_starts_the_wait_again():
    runner = make_runner()
    execution = runner.run_turn(None, InboundMessage("hi"), CONTACT, lambda n: []).execution
    execution.wait_deadline = None

    runner.run_turn(execution, InboundMessage("what?"), CONTACT, lambda n: [])

    assert execution.wait_deadline == NOW + dt.timedelta(hours=24)


def test_a_timeout_to_an_unknown_step_is_a_validation_problem():
    flow, _ = parse_flow(FLOW.replace("next: nudge}", "next: nowhere}"), "nudging.yaml")

    problems = validate_flows([flow], Templates(Path("prompts")))

    assert any(p.line == 9 and "nowhere" in p.message for p in problems), problems
