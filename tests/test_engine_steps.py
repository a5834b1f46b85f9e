"""Each step kind, run through the real engine: `Runner.run_turn`, turn after turn.

The LLM is a port (`engine.ports.LLM`): a few lines that answer from a script and
record what they were asked. Flows are YAML strings parsed and validated as
`flask flows validate` would, so every flow here is one a designer could ship.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.flow import Flow, FlowSet, parse_flow
from engine.ports import (
    Contact,
    ExecutionState,
    HistoryMessage,
    InboundMessage,
    LLMError,
    LLMRequest,
    LLMResponse,
    LLMUnavailable,
    LLMUsage,
)
from engine.runner import Runner, TurnResult
from engine.steps.base import StepError
from engine.steps.llm import LLMStep
from engine.templating import Templates
from engine.validate import validate_flows

NOW = dt.datetime(2025, 3, 14, 9, 30, tzinfo=dt.UTC)
USAGE = LLMUsage(model="gpt-test-2025", prompt_tokens=120, completion_tokens=30, latency_ms=420)
ADA = Contact(id=7, phone="+15551230001", name="Ada", channel="whatsapp")
FALLBACK = "Sorry, something broke. Try again soon."


class FixedClock:
    """An `engine.ports.Clock` stopped at `NOW`."""

    def now(self) -> dt.datetime:
        return NOW


class ScriptedLLM:
    """An `engine.ports.LLM` that answers from a script and records every request.

    A dict answers as structured output, a string as free text, an exception is raised.
    """

    def __init__(self, *answers: dict[str, Any] | str | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[LLMRequest] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError("the LLM was called more often than the test scripted")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, dict):
            return LLMResponse(text=json.dumps(answer), usage=USAGE, data=answer)
        return LLMResponse(text=answer, usage=USAGE)


def load(text: str) -> Flow:
    """Parse a flow from YAML, failing the test on any shape problem."""
    flow, problems = parse_flow(textwrap.dedent(text), "test.yaml")
    assert problems == []
    assert flow is not None
    return flow


class Chat:
    """One contact talking to flows through a `Runner`, with a transcript for history."""

    def __init__(
        self,
        tmp_path: Path,
        *flows: str,
        prompts: dict[str, str] | None = None,
        llm: ScriptedLLM | None = None,
        contact: Contact = ADA,
        default_model: str = "gpt-4o-mini",
    ) -> None:
        prompts_dir = tmp_path / "prompts"
        prompts_dir.mkdir(exist_ok=True)
        for name, text in (prompts or {}).items():
            (prompts_dir / name).write_text(textwrap.dedent(text), encoding="utf-8")
        templates = Templates(prompts_dir)
        parsed = [load(text) for text in flows]
        assert validate_flows(parsed, templates) == []
        self.llm = llm or ScriptedLLM()
        self.runner = Runner(
            flows=FlowSet({flow.id: flow for flow in parsed}),
            templates=templates,
            llm=self.llm,
            clock=FixedClock(),
            default_model=default_model,
        )
        self.contact = contact
        self.execution: ExecutionState | None = None
        self.transcript: list[HistoryMessage] = []
        self.history_calls: list[int] = []

    def history(self, limit: int) -> list[HistoryMessage]:
        self.history_calls.append(limit)
        return self.transcript[-limit:] if limit else []

    def send(self, text: str) -> TurnResult:
        """One turn; the transcript grows as a store's would, after the turn."""
        inbound = InboundMessage(text=text, channel=self.contact.channel)
        result = self.runner.run_turn(self.execution, inbound, self.contact, self.history)
        self.execution = result.execution
        self.transcript.append(HistoryMessage("user", text))
        self.transcript.extend(HistoryMessage("assistant", reply.text) for reply in result.replies)
        return result

    def says(self, text: str) -> list[str]:
        """The reply texts of one turn."""
        return [reply.text for reply in self.send(text).replies]

    @property
    def at(self) -> tuple[str, str]:
        """Where the execution stands: (status, current step)."""
        assert self.execution is not None
        return self.execution.status, self.execution.current_step

    @property
    def vars(self) -> dict[str, Any]:
        assert self.execution is not None
        return self.execution.variables


# --- say ---------------------------------------------------------------------------

SAY_FLOW = """
    id: hello
    trigger: {default: true}
    start: greet
    steps:
      greet:
        say: "Hi {{ contact.name or 'there' }} on {{ contact.channel }}, {{ now.hour }}h."
        next: echo
      echo:
        say: "You wrote {{ input.text }} to {{ flow.id }}."
        next: blank
      blank:
        say: "{% if vars.nickname is defined %}Hello {{ vars.nickname }}{% endif %}   "
"""


def test_say_renders_its_context_and_follows_next_until_a_step_without_next(tmp_path):
    chat = Chat(tmp_path, SAY_FLOW)

    result = chat.send("hello")

    assert [reply.text for reply in result.replies] == [
        "Hi Ada on whatsapp, 9h.",
        "You wrote hello to hello.",
    ]  # the blank message is not sent
    assert [(reply.step_id, reply.author, reply.usage) for reply in result.replies] == [
        ("greet", "bot", None),
        ("echo", "bot", None),
    ]
    assert result.steps == ["greet", "echo", "blank"]
    assert result.started and result.error is None
    assert chat.at == ("ended", "blank")


def test_say_without_a_contact_name_uses_the_default(tmp_path):
    chat = Chat(tmp_path, SAY_FLOW, contact=Contact(id=8, phone="+15551230002"))

    assert chat.says("hello")[0] == "Hi there on sms, 9h."


# --- ask ---------------------------------------------------------------------------

ASK_FLOW = """
    id: areas
    trigger: {default: true}
    fallback: "Sorry, something broke. Try again soon."
    start: area
    steps:
      area:
        ask: "Which area: sleep, movement, connection or café?"
        choices: [sleep, movement, connection, Café]
        save_as: area
        retry: {max: 2, say: "Please answer sleep, movement, connection or café."}
        next: chosen
      chosen:
        say: "You chose {{ vars.area }}."
"""

QUESTION = "Which area: sleep, movement, connection or café?"
REPROMPT = "Please answer sleep, movement, connection or café."


@pytest.mark.parametrize(
    ("answer", "chosen"),
    [
        ("2", "movement"),
        (" 2. ", "movement"),
        ("movement", "movement"),
        ("MOVEMENT", "movement"),
        ("Movement!", "movement"),
        ("  (sleep)  ", "sleep"),
        ("sleep.", "sleep"),
        ("Connection?!", "connection"),
        ("cafe", "Café"),
        ("CAFÉ", "Café"),
        ("'café'", "Café"),
        ("4", "Café"),
    ],
)
def test_ask_matches_a_choice_by_number_label_case_accents_and_punctuation(
    tmp_path, answer, chosen
):
    chat = Chat(tmp_path, ASK_FLOW)
    assert chat.says("hi") == [QUESTION]
    assert chat.at == ("waiting", "area")

    assert chat.says(answer) == [f"You chose {chosen}."]

    assert chat.vars["area"] == chosen  # the choice as the flow writes it
    assert chat.execution.step_results["area"] == {"answer": chosen, "text": answer.strip()}
    assert chat.at == ("ended", "chosen")


@pytest.mark.parametrize(
    "answer",
    ["0", "5", "-1", "1.5", "sleepy", "sleep and movement", "", "   ", "\U00010a40"],  # Kharosthi 1
)
def test_ask_reprompts_on_an_answer_that_is_no_choice(tmp_path, answer):
    chat = Chat(tmp_path, ASK_FLOW)
    chat.send("hi")

    assert chat.says(answer) == [REPROMPT]

    assert chat.at == ("waiting", "area")
    assert "area" not in chat.vars


@pytest.mark.parametrize(
    ("answer", "chosen"),
    [("1", "1"), ("3", "3"), ("5", "5"), ("2", "3"), ("３", "3"), ("٣", "5")],
    ids=["label-1", "label-3", "label-5", "position-2", "fullwidth-3", "arabic-indic-3"],
)
def test_ask_prefers_a_choice_whose_label_is_a_number_to_the_choice_at_that_position(
    tmp_path, answer, chosen
):
    flow = """
        id: odd
        trigger: {default: true}
        start: pick
        steps:
          pick:
            ask: "1, 3 or 5?"
            choices: ["1", "3", "5"]
            save_as: picked
    """
    chat = Chat(tmp_path, flow)
    chat.send("hi")

    chat.send(answer)

    assert chat.vars["picked"] == chosen


RETRY_FLOW = """
    id: retry
    trigger: {default: true}
    fallback: "Sorry, something broke. Try again soon."
    start: area
    steps:
      area:
        ask: "Sleep or movement?"
        choices: [sleep, movement]
        save_as: area
        retry: {max: 2, say: "Just sleep or movement, please.", next: pick_for_them}
        next: chosen
      pick_for_them:
        say: "Let's start with sleep."
        next: default_area
      default_area:
        set: {area: sleep}
        next: chosen
      chosen:
        say: "Area: {{ vars.area }}."
"""


def test_ask_reprompts_up_to_retry_max_then_goes_to_retry_next(tmp_path):
    chat = Chat(tmp_path, RETRY_FLOW)
    assert chat.says("hi") == ["Sleep or movement?"]

    assert chat.says("pizza") == ["Just sleep or movement, please."]
    assert chat.execution.step_state == {"retries": 1}
    assert chat.says("pasta") == ["Just sleep or movement, please."]
    assert chat.at == ("waiting", "area")

    result = chat.send("salad")

    assert [reply.text for reply in result.replies] == ["Let's start with sleep.", "Area: sleep."]
    assert result.steps == ["area", "pick_for_them", "default_area", "chosen"]
    assert result.error is None
    assert chat.at == ("ended", "chosen")


def test_ask_accepts_a_valid_answer_after_a_retry(tmp_path):
    chat = Chat(tmp_path, RETRY_FLOW)
    chat.send("hi")
    chat.send("pizza")

    assert chat.says("2") == ["Area: movement."]


def test_ask_with_retry_max_zero_goes_to_retry_next_at_the_first_wrong_answer(tmp_path):
    chat = Chat(tmp_path, RETRY_FLOW.replace("max: 2", "max: 0"))
    chat.send("hi")

    assert chat.says("pizza") == ["Let's start with sleep.", "Area: sleep."]


def test_ask_without_retry_say_asks_the_question_again(tmp_path):
    flow = RETRY_FLOW.replace(' say: "Just sleep or movement, please.",', "")
    chat = Chat(tmp_path, flow)
    chat.send("hi")

    assert chat.says("pizza") == ["Sleep or movement?"]


def test_ask_without_retry_next_fails_with_the_fallback_after_max_retries(tmp_path):
    chat = Chat(tmp_path, ASK_FLOW)
    chat.send("hi")
    assert chat.says("no") == [REPROMPT]
    assert chat.says("nope") == [REPROMPT]

    result = chat.send("never")

    assert [(reply.text, reply.author) for reply in result.replies] == [(FALLBACK, "system")]
    assert isinstance(result.error, StepError)
    assert (result.error.step_id, result.error.retryable) == ("area", False)
    assert chat.at == ("failed", "area")
    # A failed execution is over: the next message starts the flow afresh.
    result = chat.send("hello again")
    assert result.started
    assert [reply.text for reply in result.replies] == [QUESTION]


def test_ask_retries_are_counted_afresh_each_time_the_step_is_entered(tmp_path):
    flow = """
        id: again
        trigger: {default: true}
        start: question
        steps:
          question:
            ask: "Yes or no?"
            choices: ["yes", "no"]
            save_as: answer
            retry: {max: 1, say: "Yes or no, please."}
            next:
              - if: "vars.answer == 'yes'"
                then: question
              - else: bye
          bye:
            say: "Bye."
    """
    chat = Chat(tmp_path, flow)
    chat.send("hi")
    assert chat.says("maybe") == ["Yes or no, please."]
    assert chat.says("yes") == ["Yes or no?"]  # back at the question, retries reset

    assert chat.says("perhaps") == ["Yes or no, please."]
    assert chat.says("no") == ["Bye."]


FREE_TEXT_FLOW = """
    id: note
    trigger: {default: true}
    start: note
    steps:
      note:
        ask: "What's on your mind?"
        save_as: note
        next: thanks
      thanks:
        say: "Noted: {{ vars.note }}"
"""


@pytest.mark.parametrize("empty", ["", "   ", "\n\t"])
def test_free_text_ask_rejects_an_empty_answer_and_keeps_a_real_one(tmp_path, empty):
    chat = Chat(tmp_path, FREE_TEXT_FLOW)
    chat.send("hi")

    assert chat.says(empty) == ["What's on your mind?"]
    assert chat.at == ("waiting", "note")
    assert chat.says("  Tea, and 2 biscuits  ") == ["Noted: Tea, and 2 biscuits"]
    assert chat.vars["note"] == "Tea, and 2 biscuits"


# --- set ---------------------------------------------------------------------------


def test_set_keeps_native_types_and_later_entries_see_earlier_ones(tmp_path):
    flow = """
        id: values
        trigger: {default: true}
        variables: {n: 1, name: Ada}
        start: compute
        steps:
          compute:
            set:
              n: "{{ vars.n + 1 }}"
              doubled: "{{ vars.n * 2 }}"
              half: "{{ vars.n / 4 }}"
              big: "{{ vars.n > 1 }}"
              nothing: "{{ none }}"
              listed: "{{ [vars.n, vars.name] }}"
              greeting: "Hi {{ vars.name }}, n is {{ vars.n }}"
              tier: basic
              quoted_number: "42"
              count: 3
              price: 2.5
              flag: true
              tags: [calm, focus]
            next: show
          show:
            say: "{{ vars.n }} {{ vars.doubled }} {{ vars.greeting }}"
    """
    chat = Chat(tmp_path, flow)

    assert chat.says("go") == ["2 4 Hi Ada, n is 2"]

    expected = {
        "n": 2,
        "doubled": 4,
        "half": 0.5,
        "big": True,
        "nothing": None,
        "listed": [2, "Ada"],
        "greeting": "Hi Ada, n is 2",
        "tier": "basic",
        "quoted_number": "42",
        "count": 3,
        "price": 2.5,
        "flag": True,
        "tags": ["calm", "focus"],
    }
    assert chat.vars == {**expected, "name": "Ada"}
    for name, value in expected.items():
        assert type(chat.vars[name]) is type(value), name
    assert chat.execution.step_results["compute"] == expected


def test_set_does_not_change_the_flows_initial_variables(tmp_path):
    flow = """
        id: counter
        trigger: {default: true}
        variables: {visits: 0}
        start: count
        steps:
          count:
            set: {visits: "{{ vars.visits + 1 }}"}
            next: show
          show:
            say: "Visit {{ vars.visits }}"
    """
    chat = Chat(tmp_path, flow)
    assert chat.says("a") == ["Visit 1"]
    assert chat.says("b") == ["Visit 1"]  # a new execution starts from the flow's variables
    assert chat.runner.flows.get("counter").variables == {"visits": 0}


# --- branch and transitions --------------------------------------------------------

BRANCH_FLOW = """
    id: route
    trigger: {default: true}
    start: score
    steps:
      score:
        ask: "Score from 0 to 9?"
        choices: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
        save_as: score
        next: route
      route:
        branch:
          - if: "vars.score | int >= 7"
            then: high
          - if: "{{ vars.score | int >= 3 }}"
            then: middle
          - if: "{% if vars.score == '1' %}true{% else %}false{% endif %}"
            then: one
          - if: "vars.score | int >= 0"
            then: low
          - else: low
      high:
        say: high
      middle:
        say: middle
      one:
        say: one
      low:
        say: low
"""


@pytest.mark.parametrize(
    ("score", "reply"),
    [("9", "high"), ("7", "high"), ("5", "middle"), ("3", "middle"), ("1", "one"), ("0", "low")],
)
def test_branch_takes_the_first_condition_that_holds_braces_optional(tmp_path, score, reply):
    chat = Chat(tmp_path, BRANCH_FLOW)
    chat.send("hi")

    result = chat.send(score)

    assert [r.text for r in result.replies] == [reply]  # the branch itself sends nothing
    assert result.steps == ["score", "route", reply]


def test_branch_falls_to_else_when_no_condition_holds(tmp_path):
    flow = """
        id: route
        trigger: {default: true}
        variables: {vip: false}
        start: route
        steps:
          route:
            branch:
              - if: "vars.vip"
                then: vip
              - else: regular
          vip:
            say: vip
          regular:
            say: regular
    """
    assert Chat(tmp_path, flow).says("hi") == ["regular"]


def test_next_transition_lists_work_on_say_ask_and_set_steps(tmp_path):
    flow = """
        id: transitions
        trigger: {default: true}
        variables: {vip: true}
        start: welcome
        steps:
          welcome:
            say: "Welcome."
            next:
              - if: "{{ vars.vip }}"
                then: vip_question
              - else: done
          vip_question:
            ask: "Tea or coffee?"
            choices: [tea, coffee]
            save_as: drink
            next:
              - if: "vars.drink == 'tea'"
                then: count_tea
              - else: coffee
          count_tea:
            set: {cups: 2}
            next:
              - if: "vars.cups > 1"
                then: tea
              - else: done
          tea:
            say: "{{ vars.cups }} cups of tea."
          coffee:
            say: "Coffee."
          done:
            end: true
    """
    chat = Chat(tmp_path, flow)
    assert chat.says("hi") == ["Welcome.", "Tea or coffee?"]

    result = chat.send("TEA")

    assert [reply.text for reply in result.replies] == ["2 cups of tea."]
    assert result.steps == ["vip_question", "count_tea", "tea"]
    assert chat.at == ("ended", "tea")


def test_a_step_without_next_ends_the_flow_and_the_next_message_starts_again(tmp_path):
    chat = Chat(tmp_path, FREE_TEXT_FLOW)
    chat.send("hi")
    chat.send("tea")
    assert chat.at == ("ended", "thanks")

    result = chat.send("tea again")

    assert result.started
    assert [reply.text for reply in result.replies] == ["What's on your mind?"]
    assert chat.vars == {}


def test_end_step_ends_the_execution_and_sends_nothing(tmp_path):
    flow = """
        id: short
        trigger: {default: true}
        start: bye
        steps:
          bye:
            say: "Bye."
            next: done
          done:
            end: true
    """
    chat = Chat(tmp_path, flow)
    result = chat.send("hi")

    assert [reply.text for reply in result.replies] == ["Bye."]
    assert result.steps == ["bye", "done"]
    assert chat.at == ("ended", "done")


# --- llm ---------------------------------------------------------------------------

PROMPTS = {
    "coach_system.j2": """\
        You coach {{ contact.name or 'someone' }} on {{ contact.channel }} about {{ vars.area }}.
        {# a comment the model never sees #}
    """,
    "coach_turn.j2": "They say: {{ input.text }}\n",
}

COACH_FLOW = """
    id: coach
    trigger: {default: true}
    llm: {model: flow-model, temperature: 0.3}
    fallback: "Sorry {{ contact.name }}, try again in a minute."
    start: area
    steps:
      area:
        ask: "Sleep or movement?"
        choices: [sleep, movement]
        save_as: area
        next: coach
      coach:
        llm:
          system: coach_system.j2
          prompt: coach_turn.j2
          history: 3
          output: {reply: str, goal: str, agreed: bool}
          until: "{{ output.agreed }}"
          max_turns: 3
        save_as: goal
        next:
          - if: "{{ vars.goal.agreed }}"
            then: confirm
          - else: park
      confirm:
        say: "Great: {{ vars.goal.goal }}."
        next: done
      park:
        say: "Let's leave it there."
        next: done
      done:
        end: true
"""


def coach_answer(reply: str, goal: str = "", agreed: bool = False) -> dict[str, Any]:
    return {"reply": reply, "goal": goal, "agreed": agreed}


def test_llm_one_shot_without_until_answers_once_and_goes_on(tmp_path):
    flow = """
        id: oneshot
        trigger: {default: true}
        start: answer
        steps:
          answer:
            llm: {history: 0}
            save_as: answer
            next: after
          after:
            say: "(saved: {{ vars.answer }})"
    """
    llm = ScriptedLLM("Drink water.")
    chat = Chat(tmp_path, flow, llm=llm)

    result = chat.send("Any tip?")

    assert [(reply.text, reply.step_id) for reply in result.replies] == [
        ("Drink water.", "answer"),
        ("(saved: Drink water.)", "after"),
    ]
    assert result.replies[0].usage == USAGE
    assert result.replies[1].usage is None
    assert chat.execution.step_results["answer"] == {
        "output": None,
        "text": "Drink water.",
        "turns": 1,
    }
    assert chat.at == ("ended", "after")
    (request,) = llm.requests
    assert request.messages == [{"role": "user", "content": "Any tip?"}]
    assert request.output_schema is None
    assert chat.history_calls == []  # history: 0 asks for none


def test_llm_messages_are_system_prompt_history_window_and_user_prompt(tmp_path):
    llm = ScriptedLLM(coach_answer("What time do you go to bed?"))
    chat = Chat(tmp_path, COACH_FLOW, prompts=PROMPTS, llm=llm)
    chat.send("hello")  # the question
    chat.send("pizza")  # no choice: the question again
    assert len(chat.transcript) == 4

    result = chat.send("sleep")

    assert [reply.text for reply in result.replies] == ["What time do you go to bed?"]
    assert chat.history_calls == [3]
    (request,) = llm.requests
    assert request.messages == [
        {"role": "system", "content": "You coach Ada on whatsapp about sleep."},
        {"role": "assistant", "content": "Sleep or movement?"},
        {"role": "user", "content": "pizza"},
        {"role": "assistant", "content": "Sleep or movement?"},
        {"role": "user", "content": "They say: sleep"},
    ]
    assert (request.model, request.temperature) == ("flow-model", 0.3)
    assert request.output_schema == {
        "type": "object",
        "properties": {
            "reply": {"type": "string"},
            "goal": {"type": "string"},
            "agreed": {"type": "boolean"},
        },
        "required": ["reply", "goal", "agreed"],
        "additionalProperties": False,
    }
    assert request.schema_name == "coach_output"


def test_llm_without_prompt_file_sends_the_contacts_text_as_is(tmp_path):
    flow = """
        id: raw
        trigger: {default: true}
        start: answer
        steps:
          answer:
            llm: {system: system.j2, history: 2}
    """
    llm = ScriptedLLM("ok")
    chat = Chat(tmp_path, flow, prompts={"system.j2": "Be brief."}, llm=llm)
    chat.transcript = [HistoryMessage("user", "old"), HistoryMessage("assistant", "older reply")]

    chat.send("What is {{ 7*7 }}? {% raw %}")

    assert llm.requests[0].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "old"},
        {"role": "assistant", "content": "older reply"},
        {"role": "user", "content": "What is {{ 7*7 }}? {% raw %}"},
    ]


@pytest.mark.parametrize(
    ("flow_llm", "step_llm", "expected"),
    [
        ("{}", "{history: 0}", ("runner-default", None)),
        ("{model: flow-model, temperature: 0.5}", "{history: 0}", ("flow-model", 0.5)),
        (
            "{model: flow-model, temperature: 0.5}",
            "{history: 0, model: step-model, temperature: 0}",
            ("step-model", 0.0),
        ),
    ],
)
def test_llm_model_and_temperature_come_from_step_then_flow_then_runner(
    tmp_path, flow_llm, step_llm, expected
):
    flow = f"""
        id: models
        trigger: {{default: true}}
        llm: {flow_llm}
        start: answer
        steps:
          answer:
            llm: {step_llm}
    """
    llm = ScriptedLLM("ok")
    Chat(tmp_path, flow, llm=llm, default_model="runner-default").send("hi")

    assert (llm.requests[0].model, llm.requests[0].temperature) == expected


def test_llm_with_until_keeps_the_conversation_until_the_output_satisfies_it(tmp_path):
    llm = ScriptedLLM(
        coach_answer("What time do you go to bed?"),
        coach_answer("How about 23:00?", goal="bed by 23:00"),
        coach_answer("Deal!", goal="bed by 23:00 on weeknights", agreed=True),
    )
    chat = Chat(tmp_path, COACH_FLOW, prompts=PROMPTS, llm=llm)
    chat.send("hi")

    assert chat.says("sleep") == ["What time do you go to bed?"]
    assert chat.at == ("waiting", "coach")
    assert chat.execution.step_state == {"turns": 1}
    assert chat.vars["goal"] == coach_answer("What time do you go to bed?")

    assert chat.says("midnight, usually") == ["How about 23:00?"]
    assert chat.at == ("waiting", "coach")
    assert chat.execution.step_results["coach"]["turns"] == 2

    result = chat.send("ok, weeknights")

    assert [reply.text for reply in result.replies] == [
        "Deal!",
        "Great: bed by 23:00 on weeknights.",
    ]
    assert result.steps == ["coach", "confirm", "done"]
    assert chat.at == ("ended", "done")
    assert [request.messages[-1]["content"] for request in llm.requests] == [
        "They say: sleep",
        "They say: midnight, usually",
        "They say: ok, weeknights",
    ]
    assert [reply.usage for reply in result.replies] == [USAGE, None]


def test_llm_with_until_goes_on_after_max_turns(tmp_path):
    llm = ScriptedLLM(coach_answer("One?"), coach_answer("Two?"), coach_answer("Three?"))
    chat = Chat(tmp_path, COACH_FLOW, prompts=PROMPTS, llm=llm)
    chat.send("hi")
    assert chat.says("sleep") == ["One?"]
    assert chat.says("hmm") == ["Two?"]

    result = chat.send("dunno")

    assert [reply.text for reply in result.replies] == ["Three?", "Let's leave it there."]
    assert chat.at == ("ended", "done")
    assert len(llm.requests) == 3


def test_llm_reply_template_sees_the_output(tmp_path):
    flow = """
        id: reply
        trigger: {default: true}
        start: answer
        steps:
          answer:
            llm:
              history: 0
              output: {tip: str, minutes: int}
              reply: "{{ output.tip }} ({{ output.minutes }} min, for {{ contact.name }})"
    """
    llm = ScriptedLLM({"tip": "Walk after lunch", "minutes": 10})
    chat = Chat(tmp_path, flow, llm=llm)

    result = chat.send("tip?")

    assert [reply.text for reply in result.replies] == ["Walk after lunch (10 min, for Ada)"]
    assert result.replies[0].usage == USAGE


def test_output_schema_is_strict_for_every_type():
    step = LLMStep.model_validate(
        {
            "llm": {
                "output": {
                    "reply": "str",
                    "count": "int",
                    "score": "float",
                    "agreed": "bool",
                    "tags": "list[str]",
                    "json": "str",
                    "schema": "str",
                    "_note": "str",
                }
            }
        }
    )

    schema = step.output_schema()

    assert schema == {
        "type": "object",
        "properties": {
            "reply": {"type": "string"},
            "count": {"type": "integer"},
            "score": {"type": "number"},
            "agreed": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "json": {"type": "string"},
            "schema": {"type": "string"},
            "_note": {"type": "string"},
        },
        "required": ["reply", "count", "score", "agreed", "tags", "json", "schema", "_note"],
        "additionalProperties": False,
    }
    assert LLMStep.model_validate({"llm": {}}).output_schema() is None


def test_schema_name_is_safe_for_openai_whatever_the_step_id(tmp_path):
    long_id = "coach step/é." + "x" * 80
    flow = f"""
        id: names
        trigger: {{default: true}}
        start: "{long_id}"
        steps:
          "{long_id}":
            llm: {{history: 0, output: {{reply: str}}}}
    """
    llm = ScriptedLLM({"reply": "hi"})
    Chat(tmp_path, flow, llm=llm).send("hi")

    name = llm.requests[0].schema_name
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name)
    assert name.startswith("coach_step__")


@pytest.mark.parametrize("error", [LLMError("timed out"), LLMUnavailable("no key")])
def test_llm_error_answers_the_fallback_and_the_next_message_retries(tmp_path, error):
    llm = ScriptedLLM(error, coach_answer("What time do you go to bed?"))
    chat = Chat(tmp_path, COACH_FLOW, prompts=PROMPTS, llm=llm)
    chat.send("hi")

    result = chat.send("sleep")

    assert [(reply.text, reply.author, reply.usage) for reply in result.replies] == [
        ("Sorry Ada, try again in a minute.", "system", None)
    ]
    assert isinstance(result.error, StepError)
    assert (result.error.step_id, result.error.retryable) == ("coach", True)
    assert chat.at == ("waiting", "coach")
    assert "goal" not in chat.vars

    result = chat.send("still sleep")

    assert [reply.text for reply in result.replies] == ["What time do you go to bed?"]
    assert result.error is None
    assert chat.at == ("waiting", "coach")
    assert [request.messages[-1]["content"] for request in llm.requests] == [
        "They say: sleep",
        "They say: still sleep",
    ]


def test_llm_error_when_entering_the_step_keeps_earlier_replies(tmp_path):
    flow = """
        id: intro
        trigger: {default: true}
        fallback: "Sorry, something broke. Try again soon."
        start: hello
        steps:
          hello:
            say: "Hello!"
            next: answer
          answer:
            llm: {history: 0}
            next: bye
          bye:
            say: "Bye."
    """
    llm = ScriptedLLM(LLMError("HTTP 503"), "Here you go.")
    chat = Chat(tmp_path, flow, llm=llm)

    assert chat.says("hi") == ["Hello!", FALLBACK]
    assert chat.at == ("waiting", "answer")
    assert chat.says("again") == ["Here you go.", "Bye."]
    assert chat.at == ("ended", "bye")


def test_llm_without_structured_output_when_one_is_asked_answers_the_fallback(tmp_path):
    llm = ScriptedLLM("not JSON at all", coach_answer("Better."))
    chat = Chat(tmp_path, COACH_FLOW, prompts=PROMPTS, llm=llm)
    chat.send("hi")

    result = chat.send("sleep")

    assert [reply.text for reply in result.replies] == ["Sorry Ada, try again in a minute."]
    assert result.error is not None and result.error.retryable
    assert chat.at == ("waiting", "coach")
    assert chat.says("sleep") == ["Better."]
