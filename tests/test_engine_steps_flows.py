"""``call``/``goto`` between flows, ``llm`` classify/extract, and ``say`` with media and delay."""

from __future__ import annotations

import textwrap

import pytest

from engine.calls import STACK_KEY
from engine.flow import parse_flow
from engine.ports import LLMError
from engine.templating import Templates
from engine.validate import validate_flows
from tests.test_engine_steps import FALLBACK, Chat, ScriptedLLM

PARENT = """
    id: parent
    trigger: {default: true}
    variables: {area: sleep}
    start: hello
    steps:
      hello:
        say: "Parent starts."
        next: check
      check:
        call: child
        with: {name: "{{ contact.name }}", times: "{{ 1 + 1 }}"}
        save_as: mood
        next: after
      after:
        say: "Back: {{ steps.check.result.feeling }} / {{ vars.mood.times }} / {{ vars.area }}"
"""

CHILD = """
    id: child
    trigger: {keywords: [child]}
    variables: {name: someone, times: 0}
    start: ask
    steps:
      ask:
        ask: "How do you feel, {{ vars.name }} ({{ vars.times }})?"
        save_as: feeling
        next: done
      done:
        end: true
"""


def test_call_runs_the_subflow_with_parameters_and_comes_back_with_its_vars(tmp_path):
    chat = Chat(tmp_path, PARENT, CHILD)

    assert chat.says("hi") == ["Parent starts.", "How do you feel, Ada (2)?"]
    assert chat.execution.flow_id == "child"
    assert chat.vars == {"name": "Ada", "times": 2}  # the parent's vars are kept aside
    assert chat.execution.step_results[STACK_KEY][0]["variables"] == {"area": "sleep"}

    assert chat.says("great") == ["Back: great / 2 / sleep"]
    assert chat.execution.flow_id == "parent"
    assert chat.at == ("ended", "after")
    assert chat.execution.step_results["check"]["result"] == {
        "name": "Ada",
        "times": 2,
        "feeling": "great",
    }
    assert STACK_KEY not in chat.execution.step_results


def test_a_subflow_ending_without_end_step_also_returns(tmp_path):
    child = CHILD.replace("        next: done\n", "").replace(
        "      done:\n        end: true\n", ""
    )
    chat = Chat(tmp_path, PARENT, child)
    chat.says("hi")
    assert chat.says("fine") == ["Back: fine / 2 / sleep"]


def test_nested_calls_stop_at_the_depth_limit_with_the_fallback(tmp_path):
    loop = f"""
    id: loop
    trigger: {{default: true}}
    fallback: "{FALLBACK}"
    start: again
    steps:
      again:
        call: loop
        next: done
      done:
        end: true
    """
    chat = Chat(tmp_path, loop)
    result = chat.send("hi")
    assert [reply.text for reply in result.replies] == [FALLBACK]
    assert result.error is not None and "nested more than 5 deep" in result.error.reason


def test_goto_ends_this_execution_and_starts_the_other_flow(tmp_path):
    first = """
    id: first
    trigger: {default: true}
    start: hello
    steps:
      hello:
        say: "First."
        next: away
      away:
        goto: child
        with: {name: "{{ contact.name | upper }}"}
    """
    chat = Chat(tmp_path, first, CHILD)
    result = chat.send("hi")
    assert [reply.text for reply in result.replies] == ["First.", "How do you feel, ADA (0)?"]
    assert result.execution is not None and result.execution.flow_id == "child"
    assert result.execution.variables == {"name": "ADA", "times": 0}
    assert result.steps == ["hello", "away", "ask"]
    assert STACK_KEY not in result.execution.step_results


def test_goto_from_a_waiting_execution_ends_the_old_one(tmp_path):
    first = """
    id: first
    trigger: {default: true}
    start: question
    steps:
      question:
        ask: "Go?"
        next: away
      away:
        goto: child
    """
    chat = Chat(tmp_path, first, CHILD)
    chat.says("hi")
    old = chat.execution
    chat.says("yes")
    assert old.status == "ended" and old.flow_id == "first"
    assert chat.execution is not old and chat.at == ("waiting", "ask")


def test_unknown_flows_in_call_and_goto_are_problems_with_file_and_line():
    text = """
    id: lost
    start: a
    steps:
      a:
        call: nowhere
        next: b
      b:
        goto: elsewhere
    """
    flow, problems = parse_flow(textwrap.dedent(text), "lost.yaml")
    assert problems == [] and flow is not None
    found = validate_flows([flow], Templates())
    assert [(p.line, p.step_id, p.message) for p in found if "unknown flow" in p.message] == [
        (6, "a", "runs unknown flow 'nowhere'"),
        (9, "b", "runs unknown flow 'elsewhere'"),
    ]


# --- llm classify / extract ----------------------------------------------------------

CLASSIFY = """
    id: router
    trigger: {default: true}
    fallback: "FALLBACK"
    start: question
    steps:
      question:
        ask: "How can I help?"
        next: route
      route:
        llm:
          mode: classify
          labels: {booking: book, complaint: human}
        save_as: intent
        fail: unsure
      book:
        say: "Let's book ({{ vars.intent }})."
      human:
        say: "A person will call you."
      unsure:
        say: "Sorry, I did not get that."
""".replace("FALLBACK", FALLBACK)


def test_classify_picks_a_label_through_an_enum_schema_and_follows_it(tmp_path):
    llm = ScriptedLLM({"label": "complaint"}, {"label": "booking"})
    chat = Chat(tmp_path, CLASSIFY, llm=llm)
    chat.says("hi")
    assert chat.says("My order never came!") == ["A person will call you."]
    request = llm.requests[0]
    assert request.output_schema["properties"]["label"]["enum"] == ["booking", "complaint"]
    assert request.messages[-1] == {"role": "user", "content": "My order never came!"}
    assert "booking, complaint" in request.messages[0]["content"]
    assert chat.execution.step_results["route"] == {"label": "complaint"}
    chat.says("hi")
    assert chat.says("table for two") == ["Let's book (booking)."]


@pytest.mark.parametrize("answer", [{"label": "weather"}, LLMError("timeout")])
def test_classify_goes_to_fail_on_no_label_or_a_model_error(tmp_path, answer):
    chat = Chat(tmp_path, CLASSIFY, llm=ScriptedLLM(answer))
    chat.says("hi")
    assert chat.says("hmm") == ["Sorry, I did not get that."]


EXTRACT = """
    id: booking
    trigger: {default: true}
    start: question
    steps:
      question:
        ask: "Name and party size?"
        next: details
      details:
        llm:
          mode: extract
          fields: {name: str, guests: int}
        fail: question
        next: confirm
      confirm:
        say: "{{ vars.name }}, {{ vars.guests }} guests."
"""


def test_extract_fills_variables_and_nullable_fields_in_the_schema(tmp_path):
    llm = ScriptedLLM({"name": "Ada", "guests": 4})
    chat = Chat(tmp_path, EXTRACT, llm=llm)
    chat.says("hi")
    assert chat.says("Ada, we are four") == ["Ada, 4 guests."]
    schema = llm.requests[0].output_schema
    assert schema["properties"]["guests"]["type"] == ["integer", "null"]
    assert schema["required"] == ["name", "guests"]


def test_extract_goes_to_fail_when_a_field_stays_empty_and_keeps_the_filled_ones(tmp_path):
    chat = Chat(tmp_path, EXTRACT, llm=ScriptedLLM({"name": "Ada", "guests": None}))
    chat.says("hi")
    assert chat.says("I'm Ada") == ["Name and party size?"]
    assert chat.vars == {"name": "Ada"}
    assert chat.execution.step_results["details"]["missing"] == ["guests"]


@pytest.mark.parametrize(
    ("spec", "word"),
    [
        ("mode: classify", "needs `labels`"),
        ("mode: extract\n          labels: {a: b}", "needs `fields`"),
        ("mode: classify\n          labels: {a: b}\n          until: x", "`until` is for"),
        ("labels: {a: b}", "`labels` need `mode: classify`"),
        ("mode: extract\n          fields: {'bad name': str}", "not a variable name"),
    ],
)
def test_mode_settings_that_do_not_fit_are_shape_problems(spec, word):
    text = f"""
    id: m
    start: s
    steps:
      s:
        llm:
          {spec}
    """
    flow, problems = parse_flow(textwrap.dedent(text), "m.yaml")
    assert flow is None and any(word in p.message for p in problems), problems


def test_classify_labels_and_fail_are_validated_targets():
    text = CLASSIFY.replace("complaint: human", "complaint: humans")
    flow, _ = parse_flow(textwrap.dedent(text), "router.yaml")
    assert flow is not None
    found = validate_flows([flow], Templates())
    assert any(p.message == "leads to unknown step 'humans'" and p.line == 13 for p in found)


# --- say with media and delay ---------------------------------------------------------

MEDIA = """
    id: pics
    trigger: {default: true}
    start: chart
    steps:
      chart:
        say: "Your week:"
        media: "https://example.org/charts/{{ flow.id }}.png"
        delay: 2s
        next: doc
      doc:
        say: ""
        media: "https://example.org/plan.pdf"
"""


def test_say_sends_media_and_records_the_delay(tmp_path):
    chat = Chat(tmp_path, MEDIA)
    replies = chat.send("hi").replies
    assert [(r.text, r.media_url, r.delay_seconds) for r in replies] == [
        ("Your week:", "https://example.org/charts/pics.png", 2.0),
        ("", "https://example.org/plan.pdf", 0.0),
    ]


def test_a_delay_over_a_minute_is_a_shape_problem():
    flow, problems = parse_flow(textwrap.dedent(MEDIA.replace("2s", "2m")), "pics.yaml")
    assert flow is None
    assert [(p.line, p.message) for p in problems] == [
        (9, "steps.chart.delay: Value error, a delay is at most 60s")
    ]
