"""The designer's tools: the JSON Schema, the deeper validation, and the graph.

`tests/data/flows_ten/ten_mistakes.yaml` holds ten different mistakes, each
marked on its line with ``# expect: NAME``; one ``flask flows validate`` must
report each of them once, with its file and line.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from app import create_app
from engine.flow import parse_flow
from engine.graph import edges, mermaid, node_style
from engine.schema import MODELINE, SCHEMA_FILE, flow_schema, has_modeline, schema_text
from engine.steps import STEP_KINDS
from engine.templating import Templates
from engine.validate import validate_flows

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
TEN = Path(__file__).resolve().parent / "data" / "flows_ten"
BROKEN = Path(__file__).resolve().parent / "data" / "flows_broken"

#: marker → (step id or None, a word the message holds, whether it is a warning)
TEN_MISTAKES = {
    "no-modeline": (None, "yaml-language-server", True),
    "misspelt-key": ("welcome", "nmae", False),
    "unknown-next": ("area", "nowhere", False),
    "no-else": ("area", "else", False),
    "prompt-misspelt-key": ("coach", "coach.j2", False),
    "unset-var": ("confirm", "vars.mood", False),
    "unknown-step-ref": ("recap", "steps.choose", False),
    "loop-without-wait": ("spin", "loops forever", False),
    "cannot-finish": ("stuck", "reaches an end", True),
    "unreachable": ("orphan", "unreachable", False),
}


def marker_line(path: Path, marker: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if f"# expect: {marker}" in line)


def validate_text(text: str, prompts: Path | None = None):
    flow, problems = parse_flow(textwrap.dedent(text), "test.yaml")
    assert flow is not None, problems
    return validate_flows([flow], Templates(prompts), warnings=True)


@pytest.fixture
def cli(tmp_path):
    def make(**config):
        app = create_app(
            {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", **config}
        )
        return app.test_cli_runner()

    return make


# --- the schema ------------------------------------------------------------------------


def test_the_committed_schema_is_the_generated_one():
    committed = (FLOWS / SCHEMA_FILE).read_text(encoding="utf-8")

    assert committed == schema_text(), (
        f"flows/{SCHEMA_FILE} is out of date with the step models: "
        "run `flask --app app flows schema` and commit the file"
    )


def test_every_step_kind_is_a_branch_that_requires_its_own_key():
    schema = flow_schema()
    branches = schema["properties"]["steps"]["additionalProperties"]["oneOf"]
    definitions = [schema["$defs"][branch["$ref"].rsplit("/", 1)[1]] for branch in branches]

    assert len(branches) == len(STEP_KINDS)
    for kind, definition in zip(STEP_KINDS, definitions, strict=True):
        assert kind.kind in definition["required"], kind.kind
        assert definition["additionalProperties"] is False


def test_fields_carry_their_docstrings_as_descriptions():
    schema = flow_schema()

    ask = schema["$defs"]["AskStep"]["properties"]
    assert ask["save_as"]["description"] == "The variable that keeps the answer (`vars.<save_as>`)."
    assert "description" in ask["retry"] and "allOf" in ask["retry"]
    assert schema["properties"]["start"]["description"] == "The first step."
    assert "$schema" in schema and schema["title"] == "Parley flow"
    for definition in schema["$defs"].values():
        for name, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{definition['title']}.{name} has no docstring"


def test_the_shipped_flows_pass_the_schema_and_name_it_on_their_first_line():
    validator = Draft202012Validator(flow_schema())
    for path in sorted(FLOWS.glob("*.yaml")):
        if path.name.startswith("_"):
            continue  # not a flow (responder settings)
        text = path.read_text(encoding="utf-8")
        assert text.splitlines()[0] == MODELINE, path
        errors = [error.message for error in validator.iter_errors(yaml.safe_load(text))]
        assert errors == [], path


def schema_errors(data: object) -> set[str]:
    """The paths the schema faults (as an editor underlines them), like ``steps/a``."""
    validator = Draft202012Validator(flow_schema())
    return {
        "/".join(str(part) for part in error.absolute_path) for error in validator.iter_errors(data)
    }


def test_the_schema_underlines_the_shape_mistakes_of_a_broken_flow():
    data = yaml.safe_load((BROKEN / "b_shape.yaml").read_text(encoding="utf-8"))

    assert schema_errors(data) == {
        "",  # colour: not a flow field
        "transcribe",  # sometimes: not a boolean
        "steps/one",  # volume: not a say field
        "steps/two_kinds",
        "steps/no_kind",
        "steps/question",  # retry.max and choices of the wrong type
        "steps/coach",  # llm.history: many
    }


@pytest.mark.parametrize(
    "step",
    [
        {"next": "a"},
        {"say": "hi", "ask": "and?"},
        {"say": 3},
        {"say": "hi", "next": [{"if": "vars.x"}]},
        {"say": "hi", "next": [{"if": "vars.x", "then": "a", "else": "a"}]},
        {"ask": "When?", "timeout": {"after": "soon", "next": "a"}},
        {"end": True, "colour": "blue"},
    ],
    ids=["no-kind", "two-kinds", "not-text", "if-without-then", "if-and-else", "duration", "extra"],
)
def test_the_schema_rejects_a_broken_step(step):
    flow = {"id": "x", "start": "a", "steps": {"a": step}}

    assert schema_errors(flow) == {"steps/a"}


@pytest.mark.parametrize(
    "step",
    [
        {"say": "hi", "next": [{"if": "vars.x", "then": "a"}, {"else": "a"}]},
        {"ask": "When?", "timeout": {"after": "1h30m", "next": "a"}},
        {"ask": "When?", "timeout": {"after": 90, "next": "a"}},
        {"end": True},
    ],
)
def test_the_schema_accepts_good_steps(step):
    assert schema_errors({"id": "x", "start": "a", "steps": {"a": step}}) == set()


def test_flows_schema_writes_the_file_or_prints_it(cli, tmp_path):
    target = tmp_path / "out" / "schema.json"

    written = cli().invoke(args=["flows", "schema", "-o", str(target)])
    printed = cli().invoke(args=["flows", "schema", "-o", "-"])

    assert written.exit_code == 0, written.output
    assert json.loads(target.read_text(encoding="utf-8")) == flow_schema()
    assert printed.output == schema_text()


def test_the_modeline_is_found_among_the_leading_comments_only():
    assert has_modeline(MODELINE + "\nid: x\n")
    assert has_modeline("# my flow\n#yaml-language-server: $schema=../flow.schema.json\nid: x\n")
    assert not has_modeline("id: x\n" + MODELINE + "\n")
    assert not has_modeline("# yaml-language-server: $schema=\n")


# --- ten mistakes, one command -------------------------------------------------------


def test_one_validate_reports_ten_different_mistakes_with_file_and_line(cli, tmp_path):
    path = TEN / "ten_mistakes.yaml"
    prompts = tmp_path / "prompts"  # the shipped prompts, and the broken flow's own
    shutil.copytree(ROOT / "prompts", prompts)
    shutil.copy(TEN / "prompts" / "coach.j2", prompts)

    result = cli(PROMPTS_DIR=str(prompts)).invoke(args=["flows", "validate", str(TEN)])

    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(path))]
    assert len(lines) == len(TEN_MISTAKES), result.output
    for marker, (step_id, word, warning) in TEN_MISTAKES.items():
        prefix = f"{path}:{marker_line(path, marker)}:"
        if step_id:
            prefix += f" step {step_id!r}:"
        if warning:
            prefix += " warning:"
        matching = [line for line in lines if line.startswith(prefix) and word in line]
        assert len(matching) == 1, f"{marker}: no line {prefix} … {word}\n{result.output}"
        assert "(hint: " in matching[0] or marker == "unknown-step-ref"
    assert "10 problem(s) found (8 error(s), 2 warning(s))." in result.output


def test_warnings_alone_do_not_fail_validation(cli, tmp_path):
    flow = tmp_path / "warned.yaml"
    flow.write_text("id: warned\nstart: a\nsteps:\n  a:\n    say: hi\n", encoding="utf-8")

    result = cli().invoke(args=["flows", "validate", str(flow)])

    assert result.exit_code == 0, result.output
    assert f"{flow}:1: warning: no `# yaml-language-server" in result.output
    assert "OK: 1 flow(s) valid (warned)." in result.output


LOOP_WITH_EXIT = """
    id: counting
    variables: {count: 0}
    start: count
    steps:
      count:
        set: {count: "{{ vars.count + 1 }}"}
        next: check
      check:
        branch:
          - if: "vars.count < 3"
            then: count
          - else: done
      done:
        end: true
"""


def test_a_loop_that_a_condition_can_leave_is_a_warning():
    (problem,) = validate_text(LOOP_WITH_EXIT)

    assert problem.warning
    assert (problem.step_id, problem.line) == ("count", 6)
    assert "count → check → count can loop without waiting" in problem.message


def test_an_ask_in_the_loop_makes_it_wait():
    problems = validate_text(
        """
        id: chat
        start: question
        steps:
          question:
            ask: "Anything else?"
            choices: ["yes", "no"]
            save_as: more
            next:
              - if: "vars.more == 'yes'"
                then: answer
              - else: done
          answer:
            say: "Here you are."
            next: question
          done:
            end: true
        """
    )

    assert problems == []


def test_a_flow_without_any_end_can_never_finish():
    problems = validate_text(
        """
        id: forever
        start: question
        steps:
          question:
            ask: "Say something"
            next: question
        """
    )

    assert [(problem.line, problem.warning) for problem in problems] == [(3, True)]
    assert "can never finish" in problems[0].message


def test_a_variable_set_on_one_branch_only_is_a_warning_where_it_is_read():
    problems = validate_text(
        """
        id: branches
        start: question
        steps:
          question:
            ask: "Name?"
            choices: [skip, give]
            save_as: choice
            next:
              - if: "vars.choice == 'give'"
                then: name
              - else: greet
          name:
            ask: "Your name?"
            save_as: name
            next: greet
          greet:
            say: "Hello {{ vars.name }}"
          greet_safely:
            say: "Hello{% if vars.name is defined %} {{ vars.name }}{% endif %}"
        """
    )

    unreachable = [problem for problem in problems if "unreachable" in problem.message]
    flagged = [problem for problem in problems if problem not in unreachable]
    assert [(problem.step_id, problem.warning) for problem in flagged] == [("greet", True)]
    assert "vars.name" in flagged[0].message


def test_a_misspelt_output_field_is_caught_by_the_sample_render(tmp_path):
    problems = validate_text(
        """
        id: outputs
        start: coach
        steps:
          coach:
            llm:
              output: {reply: str, agreed: bool}
              reply: "{{ output.reply }}"
            save_as: goal
            next: confirm
          confirm:
            say: "{{ vars.goal.reply }} {{ 'yes' if vars.goal.agred else 'no' }}"
        """
    )

    assert [(problem.step_id, problem.warning) for problem in problems] == [("confirm", False)]
    assert "agred" in problems[0].message


def test_the_shipped_flows_have_no_problem_at_all(cli):
    result = cli().invoke(args=["flows", "validate"])

    assert result.exit_code == 0
    assert "warning" not in result.output and "problem" not in result.output


# --- the graph ------------------------------------------------------------------------


def shipped(flow_id: str):
    flow, problems = parse_flow((FLOWS / f"{flow_id}.yaml").read_text(), f"{flow_id}.yaml")
    assert flow is not None, problems
    return flow


def test_edges_carry_conditions_and_the_fields_that_lead_there():
    flow = shipped("goal_setting")

    labelled = {(edge.source, edge.target, edge.label, edge.failure) for edge in edges(flow)}

    assert ("coach", "confirm", "vars.goal.agreed", False) in labelled
    assert ("coach", "park", "else", False) in labelled
    assert ("area", "pick_for_them", "retry", True) in labelled
    assert ("welcome", "area", "", False) in labelled


def test_steps_are_shaped_by_what_their_kind_does():
    goal, menu = shipped("goal_setting"), shipped("menu")

    shapes = {step_id: node_style(step).shape for step_id, step in goal.steps.items()}
    shapes.update({step_id: node_style(step).shape for step_id, step in menu.steps.items()})

    assert shapes["welcome"] == "action"  # say
    assert shapes["area"] == "wait"  # ask
    assert shapes["coach"] == "wait"  # llm
    assert shapes["thank"] == "decision"  # branch
    assert shapes["done"] == "terminal"  # end
    assert node_style(goal.steps["welcome"]).fill != node_style(goal.steps["area"]).fill


def test_mermaid_names_every_step_and_labels_every_condition():
    text = mermaid(shipped("menu"))

    assert text.splitlines()[1] == "flowchart TD"
    assert "  start --> s_count" in text
    assert "  s_choose -->|\"vars.topic == 'hours'\"| s_hours" in text
    assert '  s_thank -->|"vars.score #124; int #gt;= 4"| s_thank_happy' in text
    assert re.search(r'^  s_done\(\["done<br/><i>end</i>"\]\):::kind_end$', text, re.M)
    for step_id in shipped("menu").steps:
        assert f"  s_{step_id}" in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_flows_graph_writes_mermaid_and_svg(cli, tmp_path):
    result = cli().invoke(args=["flows", "graph", "goal_setting", "-o", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "goal_setting.mmd").read_text() == mermaid(shipped("goal_setting"))
    svg = (tmp_path / "goal_setting.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for text in ("welcome", "coach", "vars.goal.agreed", "else", "retry"):
        assert f">{text}<" in svg or f">{text} " in svg or text in svg


def test_the_readme_picture_is_the_generated_one():
    committed = (ROOT / "docs" / "goal_setting.mmd").read_text(encoding="utf-8")

    assert committed == mermaid(shipped("goal_setting")), (
        "docs/goal_setting.mmd is out of date: run "
        "`flask --app app flows graph goal_setting -o docs` and commit docs/"
    )


def test_flows_graph_of_an_unknown_flow_says_so(cli):
    result = cli().invoke(args=["flows", "graph", "nope"])

    assert result.exit_code != 0
    assert "no flow file 'nope'" in result.output
