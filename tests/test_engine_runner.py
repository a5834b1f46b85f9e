"""The runner: which flow a message starts, how executions resume and end, and how
a failing turn still answers (the flow's fallback), through `Runner.run_turn`.

The LLM is a port (`engine.ports.LLM`) scripted in a few lines; the clock is fixed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.flow import DEFAULT_FALLBACK, Flow, FlowSet, parse_flow
from engine.ports import (
    Contact,
    ExecutionState,
    HistoryMessage,
    InboundMessage,
    LLMRequest,
    LLMResponse,
    LLMUsage,
)
from engine.runner import MAX_STEPS_PER_TURN, FlowLoopError, Runner, TurnResult
from engine.steps.base import StepError
from engine.templating import Templates
from engine.validate import load_flows, validate_flows

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2025, 3, 14, 9, 30, tzinfo=dt.UTC)
USAGE = LLMUsage(model="gpt-test-2025", prompt_tokens=120, completion_tokens=30, latency_ms=420)
ADA = Contact(id=7, phone="+15551230001", name="Ada", channel="whatsapp")


class FixedClock:
    """An `engine.ports.Clock` stopped at `NOW`."""

    def now(self) -> dt.datetime:
        return NOW


class ScriptedLLM:
    """An `engine.ports.LLM` answering from a script (dict: structured output, str: text)."""

    def __init__(self, *answers: dict[str, Any] | str) -> None:
        self.answers = list(answers)
        self.requests: list[LLMRequest] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError("the LLM was called more often than the test scripted")
        answer = self.answers.pop(0)
        if isinstance(answer, dict):
            return LLMResponse(text=json.dumps(answer), usage=USAGE, data=answer)
        return LLMResponse(text=answer, usage=USAGE)


def load(text: str, source: str = "test.yaml") -> Flow:
    flow, problems = parse_flow(textwrap.dedent(text), source)
    assert problems == []
    assert flow is not None
    return flow


def make_runner(
    tmp_path: Path,
    *flows: str,
    llm: ScriptedLLM | None = None,
    max_steps: int | None = None,
    loops: bool = False,
) -> Runner:
    """A runner of flows that pass validation (so each failure here is a runtime one).

    Warnings are allowed; `loops` also lets through the loop without a wait that
    validation reports, to test the runner's own guard against it.
    """
    templates = Templates(tmp_path)
    parsed = [load(text) for text in flows]
    errors = [problem for problem in validate_flows(parsed, templates) if not problem.warning]
    if loops:
        errors = [problem for problem in errors if "without waiting" not in problem.message]
    assert errors == []
    return Runner(
        flows=FlowSet({flow.id: flow for flow in parsed}),
        templates=templates,
        llm=llm or ScriptedLLM(),
        clock=FixedClock(),
        max_steps=max_steps or MAX_STEPS_PER_TURN,
    )


def no_history(limit: int) -> list[HistoryMessage]:
    return []


def turn(
    runner: Runner,
    execution: ExecutionState | None,
    text: str,
    flow_id: str | None = None,
    contact: Contact = ADA,
) -> TurnResult:
    return runner.run_turn(
        execution, InboundMessage(text=text), contact, history=no_history, flow_id=flow_id
    )


def texts(result: TurnResult) -> list[str]:
    return [reply.text for reply in result.replies]


GOAL = """
    id: goal
    trigger: {keywords: [goal, start], default: true}
    start: area
    steps:
      area:
        ask: "Sleep or movement?"
        choices: [sleep, movement]
        save_as: area
        retry: {max: 3, say: "Sleep or movement, please."}
        next: done
      done:
        say: "Goal area: {{ vars.area }}."
"""

MENU = """
    id: menu
    trigger: {keywords: [menu, Info, "Café"]}
    fallback: "Menu is broken. Reply MENU."
    start: choose
    steps:
      choose:
        ask: "1. hours 2. bye"
        choices: [hours, bye]
        save_as: topic
        next: answer
      answer:
        say: "Topic: {{ vars.topic }}."
"""


# --- which flow starts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "flow_id"),
    [
        ("menu", "menu"),
        ("MENU", "menu"),
        ("  Menu!  ", "menu"),
        ("info", "menu"),
        ("INFO.", "menu"),
        ("cafe", "menu"),
        ("goal", "goal"),
        ("Start", "goal"),
        ("hello", "goal"),
        ("menu please", "goal"),  # a keyword is the whole message
        ("", "goal"),
    ],
)
def test_a_keyword_starts_its_flow_and_anything_else_the_default_flow(tmp_path, text, flow_id):
    runner = make_runner(tmp_path, GOAL, MENU)

    result = turn(runner, None, text)

    assert result.started
    assert result.execution is not None
    assert result.execution.flow_id == flow_id
    assert result.execution.flow_version == runner.flows.get(flow_id).version
    assert result.execution.status == "waiting"


def test_no_keyword_and_no_default_flow_answers_the_default_fallback(tmp_path):
    runner = make_runner(tmp_path, MENU)

    result = turn(runner, None, "hello")

    assert result.execution is None
    assert [(reply.text, reply.author) for reply in result.replies] == [
        (DEFAULT_FALLBACK, "system")
    ]
    assert isinstance(result.error, StepError)


def test_keywords_do_not_start_a_flow_while_the_contact_is_in_one(tmp_path):
    runner = make_runner(tmp_path, GOAL, MENU)
    execution = turn(runner, None, "hi").execution

    result = turn(runner, execution, "menu")

    assert not result.started
    assert texts(result) == ["Sleep or movement, please."]
    assert (result.execution.flow_id, result.execution.current_step) == ("goal", "area")
    assert result.execution is execution


@pytest.mark.parametrize("status", ["ended", "failed"])
def test_an_ended_or_failed_execution_is_not_resumed_a_new_one_starts(tmp_path, status):
    runner = make_runner(tmp_path, GOAL, MENU)
    old = turn(runner, None, "hi").execution
    old.status = status

    result = turn(runner, old, "menu")

    assert result.started
    assert result.execution is not old
    assert (result.execution.flow_id, result.execution.current_step) == ("menu", "choose")
    assert texts(result) == ["1. hours 2. bye"]


def test_the_flow_id_argument_ends_an_execution_of_another_flow_and_starts_it(tmp_path):
    runner = make_runner(tmp_path, GOAL, MENU)
    old = turn(runner, None, "hi").execution

    result = turn(runner, old, "goal", flow_id="menu")

    assert old.status == "ended"
    assert result.started
    assert result.execution.flow_id == "menu"
    assert texts(result) == ["1. hours 2. bye"]
    # The same flow id resumes rather than restarts.
    again = turn(runner, result.execution, "2", flow_id="menu")
    assert not again.started
    assert texts(again) == ["Topic: bye."]


def test_the_flow_id_argument_starts_that_flow_whatever_the_message_says(tmp_path):
    runner = make_runner(tmp_path, GOAL, MENU)

    result = turn(runner, None, "menu", flow_id="goal")

    assert result.execution.flow_id == "goal"


def test_an_unknown_flow_id_answers_the_default_fallback(tmp_path):
    runner = make_runner(tmp_path, GOAL)

    result = turn(runner, None, "hi", flow_id="nope")

    assert result.execution is None
    assert texts(result) == [DEFAULT_FALLBACK]
    assert result.error is not None


@pytest.mark.parametrize(
    "orphan",
    [
        ExecutionState(flow_id="retired", flow_version="0" * 12, current_step="area"),
        ExecutionState(flow_id="goal", flow_version="0" * 12, current_step="removed_step"),
    ],
    ids=["flow-gone", "step-gone"],
)
def test_an_execution_whose_flow_or_step_disappeared_is_ended_and_a_new_one_starts(
    tmp_path, orphan
):
    runner = make_runner(tmp_path, GOAL, MENU)
    orphan = dataclasses.replace(orphan, status="waiting", variables={"area": "sleep"})

    result = turn(runner, orphan, "menu")

    assert orphan.status == "ended"
    assert result.started
    assert result.error is None
    assert (result.execution.flow_id, result.execution.variables) == ("menu", {})
    assert texts(result) == ["1. hours 2. bye"]


def test_executions_of_two_contacts_do_not_share_variables(tmp_path):
    flow = """
        id: counter
        trigger: {default: true}
        variables: {visits: 0, tags: []}
        start: count
        steps:
          count:
            set: {visits: "{{ vars.visits + 1 }}"}
            next: ask
          ask:
            ask: "Name?"
            save_as: name
            next: count
    """
    runner = make_runner(tmp_path, flow)
    bob = Contact(id=8, phone="+15551230002", name="Bob")
    ada_execution = turn(runner, None, "hi").execution
    ada_execution = turn(runner, ada_execution, "Ada").execution
    bob_execution = turn(runner, None, "hi", contact=bob).execution

    assert ada_execution.variables == {"visits": 2, "tags": [], "name": "Ada"}
    assert bob_execution.variables == {"visits": 1, "tags": []}
    assert runner.flows.get("counter").variables == {"visits": 0, "tags": []}


# --- failures answer with the fallback ---------------------------------------------

LOOP = """
    id: looping
    trigger: {default: true}
    fallback: "Sorry, I got stuck."
    variables: {n: 0}
    start: welcome
    steps:
      welcome:
        say: "Welcome."
        next: tick
      tick:
        set: {n: "{{ vars.n + 1 }}"}
        next: tock
      tock:
        set: {n: "{{ vars.n + 1 }}"}
        next: tick
"""


def test_a_flow_that_loops_without_waiting_answers_the_fallback_with_a_flow_loop_error(
    tmp_path,
):
    runner = make_runner(tmp_path, LOOP, loops=True)

    result = turn(runner, None, "hi")  # no exception

    assert texts(result) == ["Welcome.", "Sorry, I got stuck."]
    assert result.replies[-1].author == "system"
    error = result.error
    assert isinstance(error, FlowLoopError)
    assert error.flow_id == "looping"
    assert set(error.steps) == {"welcome", "tick", "tock"}
    assert "looping" in str(error) and "tick" in str(error) and "tock" in str(error)
    assert len(result.steps) <= MAX_STEPS_PER_TURN
    assert result.steps[:3] == ["welcome", "tick", "tock"]
    assert result.execution.status == "failed"


def test_the_step_budget_is_the_runners(tmp_path):
    runner = make_runner(tmp_path, LOOP, max_steps=5, loops=True)

    result = turn(runner, None, "hi")

    assert isinstance(result.error, FlowLoopError)
    assert result.steps == ["welcome", "tick", "tock", "tick", "tock"]
    assert result.execution.variables["n"] == 4


UNDEFINED = """
    id: undefined
    trigger: {default: true}
    fallback: "Sorry {{ contact.name }}, something went wrong."
    start: choose
    steps:
      choose:
        ask: "Pick or skip?"
        choices: [pick, skip]
        save_as: choice
        next:
          - if: "vars.choice == 'pick'"
            then: pick
          - else: show
      pick:
        ask: "Your goal?"
        save_as: goal
        next: show
      show:
        say: "Your goal: {{ vars.goal }}"
"""


def test_an_undefined_variable_at_runtime_answers_the_fallback_never_an_empty_string(tmp_path):
    runner = make_runner(tmp_path, UNDEFINED)
    execution = turn(runner, None, "hi").execution

    result = turn(runner, execution, "skip")

    assert texts(result) == ["Sorry Ada, something went wrong."]
    assert isinstance(result.error, StepError)
    assert result.error.step_id == "show"
    assert "goal" in result.error.reason
    assert result.execution.status == "failed"


@pytest.mark.parametrize(
    "check",
    [
        'branch: [{if: "vars.goal == 1", then: yes_step}, {else: no_step}]',
        'set: {copy: "{{ vars.goal }}"}\n            next: yes_step',
        'say: "{{ vars.goal.title }}"\n            next: yes_step',
        'say: "{{ steps.pick.answer }}"\n            next: yes_step',
    ],
    ids=["branch-condition", "set-expression", "attribute-of-undefined", "missing-step-result"],
)
def test_an_undefined_name_in_any_template_is_a_failure_not_a_no(tmp_path, check):
    flow = f"""
        id: guarded
        trigger: {{default: true}}
        fallback: "Fallback."
        start: choose
        steps:
          choose:
            ask: "Pick or skip?"
            choices: [pick, skip]
            save_as: choice
            next:
              - if: "vars.choice == 'pick'"
                then: pick
              - else: check
          pick:
            ask: "Goal?"
            save_as: goal
            next: check
          check:
            {check}
          yes_step:
            say: "yes"
            next: no_step
          no_step:
            say: "no"
    """
    runner = make_runner(tmp_path, flow)
    execution = turn(runner, None, "hi").execution

    result = turn(runner, execution, "skip")

    assert texts(result) == ["Fallback."]  # never "no", never an empty message
    assert result.error is not None and result.error.step_id == "check"
    assert result.execution.status == "failed"


@pytest.mark.parametrize(
    "template",
    ["{{ vars.name + 1 }}", "{{ 1 / vars.zero }}", "{{ vars.name.upper(1) }}"],
)
def test_a_template_raising_a_python_error_answers_the_fallback(tmp_path, template):
    flow = f"""
        id: oops
        trigger: {{default: true}}
        fallback: "Fallback."
        variables: {{name: Ada, zero: 0}}
        start: compute
        steps:
          compute:
            set: {{value: "{template}"}}
            next: show
          show:
            say: "Hi {template}"
    """
    runner = make_runner(tmp_path, flow)

    result = turn(runner, None, "hi")  # no exception

    assert texts(result) == ["Fallback."]
    assert result.error is not None and result.error.step_id == "compute"
    assert result.execution.status == "failed"


def test_a_fallback_that_fails_to_render_gives_the_default_fallback(tmp_path):
    runner = make_runner(tmp_path, UNDEFINED.replace("{{ contact.name }}", "{{ vars.goal.x }}"))
    execution = turn(runner, None, "hi").execution

    result = turn(runner, execution, "skip")

    assert texts(result) == [DEFAULT_FALLBACK]


def test_what_the_contact_types_is_data_never_a_template(tmp_path):
    flow = """
        id: echo
        trigger: {default: true}
        start: note
        steps:
          note:
            ask: "Say something."
            save_as: note
            next: copy
          copy:
            set:
              copied: "{{ vars.note }}"
              framed: "[{{ vars.note }}]"
            next: echo
          echo:
            say: "You said {{ vars.note }} / {{ input.text }} / {{ vars.framed }}"
            next: again
          again:
            branch:
              - if: "vars.note == '{{ 7*7 }}'"
                then: literal
              - else: rendered
          literal:
            say: "literal"
          rendered:
            say: "rendered"
    """
    runner = make_runner(tmp_path, flow)
    typed = "{{ 7*7 }} {% if true %}x{% endif %}"
    execution = turn(runner, None, typed).execution  # a first message is data too

    result = turn(runner, execution, "{{ 7*7 }}")

    assert texts(result) == ["You said {{ 7*7 }} / {{ 7*7 }} / [{{ 7*7 }}]", "literal"]
    assert result.execution.variables == {
        "note": "{{ 7*7 }}",
        "copied": "{{ 7*7 }}",
        "framed": "[{{ 7*7 }}]",
    }
    assert result.execution.step_results["note"]["text"] == "{{ 7*7 }}"
    assert not any("49" in text for text in texts(result))


# --- the shipped flows, through the runner -----------------------------------------


def shipped_runner(llm: ScriptedLLM) -> Runner:
    templates = Templates(ROOT / "prompts")
    return Runner(
        flows=load_flows(ROOT / "flows", templates),
        templates=templates,
        llm=llm,
        clock=FixedClock(),
    )


def test_the_shipped_goal_setting_flow_runs_end_to_end(tmp_path):
    llm = ScriptedLLM(
        {"reply": "What gets in the way of sleep?", "goal": "", "agreed": False},
        {"reply": "Screens off at 22:30?", "goal": "screens off at 22:30", "agreed": True},
    )
    runner = shipped_runner(llm)
    transcript: list[HistoryMessage] = []

    def history(limit: int) -> list[HistoryMessage]:
        return transcript[-limit:]

    execution = None
    replies = []
    for text in ["hello", "zzz", "1", "my phone"]:
        result = runner.run_turn(execution, InboundMessage(text, "whatsapp"), ADA, history)
        execution = result.execution
        transcript.append(HistoryMessage("user", text))
        transcript.extend(HistoryMessage("assistant", reply.text) for reply in result.replies)
        replies.append(texts(result))

    assert replies[0][0].startswith("Hi Ada! I'm Parley")
    assert replies[0][1].startswith("Which matters most")
    assert replies[1] == ["Just reply sleep, movement or connection (or 1, 2 or 3)."]
    assert replies[2] == ["What gets in the way of sleep?"]
    assert replies[3][0] == "Screens off at 22:30?"
    assert replies[3][1].startswith("Great, your goal for this week: screens off at 22:30.")
    assert (execution.status, execution.current_step) == ("ended", "done")
    system = llm.requests[0].messages[0]
    assert system["role"] == "system"
    assert (
        "on WhatsApp" in system["content"] and "They chose to work on: sleep." in system["content"]
    )
    assert llm.requests[0].messages[-1] == {"role": "user", "content": "1"}
    assert llm.requests[1].messages[-1] == {"role": "user", "content": "my phone"}
    assert (llm.requests[0].model, llm.requests[0].temperature) == ("gpt-4o-mini", 0.7)


def test_the_shipped_menu_flow_runs_end_to_end():
    runner = shipped_runner(ScriptedLLM())
    execution = None
    replies = []
    for text in ["MENU", "3", "5", "yes", "1", "no"]:
        result = turn(runner, execution, text)
        execution = result.execution
        replies.append(texts(result))

    assert replies[0][0].startswith("What would you like?")
    assert replies[1] == ["From 1 (poor) to 5 (great), how was it?"]
    assert replies[2] == ["Thank you! Glad it helped.", "Anything else? (yes/no)"]
    assert replies[3][0].startswith("What would you like?")
    assert replies[4] == ["We're open Monday to Friday, 9:00 to 17:00.", "Anything else? (yes/no)"]
    assert replies[5] == ["Bye for now! Reply MENU any time."]
    assert execution.variables["visits"] == 2
    assert execution.variables["score"] == "5"
    assert execution.status == "ended"


SAY_LOOP = """
    id: chatty
    trigger: {default: true}
    start: hello
    steps:
      hello:
        say: "Hello."
        next: again
      again:
        say: "Again!"
        next: hello_twice
      hello_twice:
        say: "And again!"
        next: again
"""


def test_a_loop_through_say_steps_does_not_send_each_text_dozens_of_times(tmp_path):
    runner = make_runner(tmp_path, SAY_LOOP, loops=True)

    result = turn(runner, None, "hi")

    assert isinstance(result.error, FlowLoopError)
    assert texts(result)[:-1] == ["Hello."]
