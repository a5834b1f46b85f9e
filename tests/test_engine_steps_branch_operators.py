"""Studio's Split Based On operators as Jinja tests, each through a `branch` step."""

from __future__ import annotations

import pytest

from tests.test_engine_steps import FALLBACK, Chat


def branch_flow(condition: str, value: object) -> str:
    """A flow that stores `value`, then branches on `condition` to "yes" or "no"."""
    return f"""
    id: split
    trigger: {{default: true}}
    fallback: "{FALLBACK}"
    variables: {{value: {value!r}}}
    start: route
    steps:
      route:
        branch:
          - if: "{condition}"
            then: matched
          - else: other
      matched:
        say: "yes"
      other:
        say: "no"
    """


CASES = [
    # operator call, value, expected
    ("vars.value is equal_to('sleep')", "Sleep", True),
    ("vars.value is equal_to('sleep')", "Sléep! ", True),
    ("vars.value is equal_to('sleep')", "sleepy", False),
    ("vars.value is not_equal_to('sleep')", "sleepy", True),
    ("vars.value is not_equal_to('sleep')", "SLEEP", False),
    ("vars.value is matches_any_of(['sleep', 'rest'])", "Rest", True),
    ("vars.value is matches_any_of('sleep, rest')", "rest", True),
    ("vars.value is matches_any_of(['sleep', 'rest'])", "restful", False),
    ("vars.value is does_not_match_any_of(['sleep', 'rest'])", "move", True),
    ("vars.value is does_not_match_any_of(['sleep', 'rest'])", "SLEEP", False),
    ("vars.value is contains('help')", "I need HELP now", True),
    ("vars.value is contains('help')", "hello", False),
    ("vars.value is does_not_contain('stop')", "go on", True),
    ("vars.value is does_not_contain('stop')", "please Stop", False),
    ("vars.value is starts_with('cancel')", "Cancel my order", True),
    ("vars.value is starts_with('cancel')", "do not cancel", False),
    ("vars.value is regex('^[0-9]{5}$')", "75001", True),
    ("vars.value is regex('^[0-9]{5}$')", "7500", False),
    ("vars.value is regex('order')", "My ORDER", True),
    ("vars.value is greater_than(17)", 18, True),
    ("vars.value is greater_than(17)", "17", False),
    ("vars.value is greater_than(1.5)", "2,5", True),
    ("vars.value is less_than(10)", "9.5", True),
    ("vars.value is less_than(10)", 10, False),
    ("vars.value is is_blank", "   ", True),
    ("vars.value is is_blank", "x", False),
    ("vars.value is is_blank", [], True),
    ("vars.value is is_not_blank", "x", True),
    ("vars.value is is_not_blank", "", False),
    ("vars.value is not matches_any_of(['a'])", "b", True),
]


@pytest.mark.parametrize(("condition", "value", "holds"), CASES)
def test_each_operator_routes_the_branch(tmp_path, condition, value, holds):
    chat = Chat(tmp_path, branch_flow(condition, value))
    assert chat.says("hi") == ["yes" if holds else "no"]


def test_every_operator_is_covered():
    from engine.operators import OPERATORS

    used = {name for condition, _, _ in CASES for name in OPERATORS if f" {name}" in condition}
    assert used == set(OPERATORS)


def test_an_undefined_variable_is_blank_and_not_an_error():
    from engine.templating import Templates

    templates = Templates()
    assert templates.condition("vars.missing is is_blank", {"vars": {}}) is True
    assert templates.condition("vars.missing is is_not_blank", {"vars": {}}) is False


@pytest.mark.parametrize("value", ["lots", "", None])
def test_comparing_a_word_or_nothing_takes_no_match_as_studio_does(tmp_path, caplog, value):
    # Studio's Split Based On takes noMatch; it is logged, not silent (issue 13, item 8).
    chat = Chat(tmp_path, branch_flow("vars.value is greater_than(3)", value))
    with caplog.at_level("INFO", logger="parley.engine"):
        result = chat.send("hi")
    assert [reply.text for reply in result.replies] == ["no"]
    assert result.error is None
    assert "flow.operator.not_a_number operator=greater_than" in caplog.text


def test_comparing_with_a_word_is_the_designers_mistake_and_fails_loudly(tmp_path):
    chat = Chat(tmp_path, branch_flow("vars.value is less_than('many')", "3"))
    result = chat.send("hi")
    assert [reply.text for reply in result.replies] == [FALLBACK]
    assert result.error is not None and "not a number" in result.error.reason
    assert chat.at == ("failed", "route")


def test_operators_work_in_next_transitions_and_on_what_the_contact_typed(tmp_path):
    flow = """
    id: words
    trigger: {default: true}
    start: question
    steps:
      question:
        ask: "Say something"
        next:
          - if: "input.text is starts_with('stop')"
            then: bye
          - else: echo
      echo:
        say: "Carry on"
      bye:
        say: "Bye"
    """
    chat = Chat(tmp_path, flow)
    chat.says("hi")
    assert chat.says("STOP it") == ["Bye"]
