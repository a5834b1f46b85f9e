"""Flow validation: every problem at once, each with its file and line.

`tests/data/flows_broken/` holds flows broken on purpose; each mistake's line
ends with a comment ``# expect: NAME``, so the expected line numbers are read
from the files rather than written here.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from app import create_app
from engine.flow import Flow, FlowError, FlowProblem, load_flow_files, parse_flow
from engine.templating import Templates
from engine.validate import load_flows, validate_flows

ROOT = Path(__file__).resolve().parent.parent
BROKEN = Path(__file__).resolve().parent / "data" / "flows_broken"
SHIPPED_FLOWS = ROOT / "flows"
SHIPPED_PROMPTS = ROOT / "prompts"

#: (file, marker, step id, a word the message must hold), one row per problem.
EXPECTED = [
    ("a_graph.yaml", "fallback-unknown-name", None, "oops"),
    ("a_graph.yaml", "unknown-name", "welcome", "user"),
    ("a_graph.yaml", "unknown-retry-next", "area", "nowhere"),
    ("a_graph.yaml", "no-else", "area", "else"),
    ("a_graph.yaml", "missing-prompt", "coach", "missing.j2"),
    ("a_graph.yaml", "prompt-syntax", "coach", "syntax"),
    ("a_graph.yaml", "output-outside-llm", "coach", "output"),
    ("a_graph.yaml", "else-not-last", "route", "else"),
    ("a_graph.yaml", "unset-var", "summary", "vars.mood"),
    ("a_graph.yaml", "maybe-unset-var", "route", "vars.goal"),
    ("a_graph.yaml", "unknown-step-ref", "recap", "steps.nope"),
    ("a_graph.yaml", "template-syntax", "broken_template", "syntax"),
    ("a_graph.yaml", "prompt-unknown-name", "reflect", "output"),
    ("a_graph.yaml", "prompt-unknown-name", "reflect", "secret"),
    ("a_graph.yaml", "unknown-next", "reflect", "ghost"),
    ("a_graph.yaml", "unreachable", "orphan", "unreachable"),
    ("b_shape.yaml", "unknown-flow-field", None, "colour"),
    ("b_shape.yaml", "bad-flow-transcribe", None, "transcribe"),
    ("b_shape.yaml", "unknown-step-field", "one", "volume"),
    ("b_shape.yaml", "two-kinds", "two_kinds", "kind"),
    ("b_shape.yaml", "no-kind", "no_kind", "kind"),
    ("b_shape.yaml", "bad-type-retry", "question", "retry.max"),
    ("b_shape.yaml", "bad-type-choices", "question", "choices.0"),
    ("b_shape.yaml", "bad-type-choices", "question", "choices.1"),
    ("b_shape.yaml", "bad-type-transcribe", "question", "transcribe"),
    ("b_shape.yaml", "bad-type-history", "coach", "llm.history"),
    ("b_shape.yaml", "branch-with-next", "route", "next"),
    ("b_shape.yaml", "end-with-next", "done", "next"),
    ("c_invalid.yaml", "invalid-yaml", None, "YAML"),
    ("d_clashes.yaml", "duplicate-id", None, "graph_mistakes"),
    ("d_clashes.yaml", "same-keyword", None, "Bröken"),
    ("d_clashes.yaml", "second-default", None, "default"),
    ("d_clashes.yaml", "unknown-start", None, "nowhere"),
]

FLOW_IDS = {
    "a_graph.yaml": "graph_mistakes",
    "b_shape.yaml": "shape_mistakes",
    "c_invalid.yaml": None,
    "d_clashes.yaml": "graph_mistakes",
}


def marker_lines(path: Path) -> dict[str, int]:
    """``{marker: line}`` for each ``# expect: marker`` comment of a file."""
    lines = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = re.search(r"# expect: ([\w-]+)", line)
        if match:
            lines[match.group(1)] = number
    return lines


def expected_location(file: str, marker: str) -> tuple[str, int]:
    return str(BROKEN / file), marker_lines(BROKEN / file)[marker]


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    """The prompt files a_graph.yaml reads (missing.j2 is missing on purpose)."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "bad_syntax.j2").write_text("Hello {{ vars.area ", encoding="utf-8")
    (folder / "unknown_name.j2").write_text("{{ output.reply }} {{ secret }}\n", encoding="utf-8")
    (folder / "good.j2").write_text("Area: {{ vars.area }}\n", encoding="utf-8")
    return folder


def broken_problems(prompts_dir: Path) -> list[FlowProblem]:
    flows, problems = load_flow_files(BROKEN)
    return problems + validate_flows(flows, Templates(prompts_dir), warnings=True)


def validate_text(text: str, prompts_dir: Path | None = None) -> list[FlowProblem]:
    """The shape and graph problems of one flow file's text."""
    flow, problems = parse_flow(textwrap.dedent(text), "test.yaml")
    if flow is None:
        return problems
    return validate_flows([flow], Templates(prompts_dir), warnings=True)


def line_with(text: str, needle: str) -> int:
    """The 1-based line of the dedented `text` holding `needle` (as `validate_text` sees it)."""
    lines = textwrap.dedent(text).splitlines()
    return next(number for number, line in enumerate(lines, start=1) if needle in line)


# --- the broken folder --------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "marker", "step_id", "word"),
    EXPECTED,
    ids=[f"{file}:{marker}:{word}" for file, marker, _, word in EXPECTED],
)
def test_each_mistake_is_reported_with_its_file_line_and_step(prompts, file, marker, step_id, word):
    source, line = expected_location(file, marker)

    matches = [
        problem
        for problem in broken_problems(prompts)
        if (problem.source, problem.line, problem.step_id) == (source, line, step_id)
        and word in problem.message
    ]

    assert len(matches) == 1, f"no problem at {source}:{line} mentioning {word!r}"
    problem = matches[0]
    assert problem.flow_id == FLOW_IDS[file]
    assert str(problem).startswith(f"{source}:{line}:")


def test_every_problem_of_the_broken_folder_is_expected_and_none_is_missing(prompts):
    found = sorted(
        (problem.source, problem.line, problem.step_id or "")
        for problem in broken_problems(prompts)
    )
    expected = sorted(
        (*expected_location(file, marker), step_id or "") for file, marker, step_id, _ in EXPECTED
    )

    assert found == expected


def test_graph_problems_of_one_flow_come_in_line_order(prompts):
    flows, _ = load_flow_files(BROKEN)
    graph = next(flow for flow in flows if flow.source.endswith("a_graph.yaml"))

    problems = validate_flows([graph], Templates(prompts), warnings=True)

    assert [problem.line for problem in problems] == sorted(problem.line for problem in problems)
    assert len(problems) == sum(1 for row in EXPECTED if row[0] == "a_graph.yaml")


#: The markers of problems that are warnings (the flows would still load).
WARNINGS = {"maybe-unset-var"}


def test_load_flows_raises_a_flow_error_listing_every_error_but_no_warning(prompts):
    with pytest.raises(FlowError) as caught:
        load_flows(BROKEN, Templates(prompts))

    errors = [row for row in EXPECTED if row[1] not in WARNINGS]
    assert len(caught.value.problems) == len(errors)
    assert not any(problem.warning for problem in caught.value.problems)
    for file, marker, _, _ in errors:
        source, line = expected_location(file, marker)
        assert f"{source}:{line}:" in str(caught.value)


def test_warnings_are_marked_as_such(prompts):
    warnings = {
        (problem.source, problem.line) for problem in broken_problems(prompts) if problem.warning
    }

    assert warnings == {expected_location(file, marker) for file, marker in _warning_rows()}


def _warning_rows() -> list[tuple[str, str]]:
    return [(file, marker) for file, marker, _, _ in EXPECTED if marker in WARNINGS]


# --- the shipped flows --------------------------------------------------------------


def test_the_shipped_flows_validate_with_no_problems():
    flows, problems = load_flow_files(SHIPPED_FLOWS)

    assert problems == []
    assert validate_flows(flows, Templates(SHIPPED_PROMPTS), warnings=True) == []
    loaded = load_flows(SHIPPED_FLOWS, Templates(SHIPPED_PROMPTS))
    assert set(loaded.flows) == {"goal_setting", "menu"}
    assert loaded.default is not None and loaded.default.id == "goal_setting"


# --- single rules -------------------------------------------------------------------


GUARDS = """
    id: guards
    start: hello
    steps:
      hello:
        say: "Hi{% if vars.nickname is defined %} {{ vars.nickname }}{% endif %}!"
        next:
          - if: "vars.age is defined and vars.age >= 18"
            then: adult
          - if: "{{ vars.level is undefined }}"
            then: adult
          - else: adult
      adult:
        say: "{{ vars.unguarded }}"
"""


def test_vars_guarded_by_is_defined_are_allowed():
    problems = validate_text(GUARDS)

    assert [(problem.step_id, problem.line) for problem in problems] == [
        ("adult", line_with(GUARDS, "vars.unguarded"))
    ]
    assert "vars.unguarded" in problems[0].message


def test_variables_count_as_set_by_flow_variables_set_ask_and_llm(tmp_path):
    (tmp_path / "turn.j2").write_text("{{ vars.answer }} {{ vars.total }}", encoding="utf-8")
    problems = validate_text(
        """
        id: declared
        variables: {visits: 0}
        start: count
        steps:
          count:
            set: {total: "{{ vars.visits + 1 }}"}
            next: question
          question:
            ask: "Visit {{ vars.total }}: anything?"
            save_as: answer
            next: tip
          tip:
            llm: {prompt: turn.j2}
            save_as: tip
            next: show
          show:
            say: "{{ vars.answer }} {{ vars['tip'] }} {{ steps.question.answer }}"
        """,
        tmp_path,
    )

    assert problems == []


def test_jinja_globals_and_loop_names_are_not_unknown_names():
    problems = validate_text(
        """
        id: names
        variables: {tags: [a, b]}
        start: show
        steps:
          show:
            say: "{% for tag in vars.tags %}{{ loop.index }}{{ tag }}{% endfor %}{{ range(2) }}"
        """
    )

    assert problems == []


OUTPUTS = """
    id: outputs
    start: coach
    steps:
      coach:
        llm:
          output: {reply: str, agreed: bool}
          reply: "{{ output.reply }}"
          until: "output.agreed"
        next: prompted
      prompted:
        llm:
          prompt: turn.j2
        next:
          - if: "{{ output.agreed }}"
            then: show
          - else: show
      show:
        say: "{{ output.reply }}"
        next: store
      store:
        set: {reply: "{{ output.reply }}"}
"""


def test_output_is_allowed_in_llm_until_and_reply_only(tmp_path):
    (tmp_path / "turn.j2").write_text("{{ output.reply }}", encoding="utf-8")

    problems = validate_text(OUTPUTS, tmp_path)

    assert [(problem.step_id, problem.line) for problem in problems] == [
        ("prompted", line_with(OUTPUTS, "prompt: turn.j2")),
        ("prompted", line_with(OUTPUTS, 'if: "{{ output.agreed }}"')),
        ("show", line_with(OUTPUTS, 'say: "{{ output.reply }}"')),
        ("store", line_with(OUTPUTS, "set: {reply:")),
    ]
    assert all("'output'" in problem.message for problem in problems)


def test_a_steps_subscript_to_an_unknown_step_is_reported():
    problems = validate_text(
        """
        id: subscripts
        start: show
        steps:
          show:
            say: "{{ steps['nope'].answer }} {{ steps.show }}"
        """
    )

    assert [(problem.step_id, problem.line) for problem in problems] == [("show", 6)]
    assert "steps.nope" in problems[0].message


def test_a_step_reached_only_by_retry_next_is_reachable():
    problems = validate_text(
        """
        id: retry
        start: question
        steps:
          question:
            ask: "Yes or no?"
            choices: ["yes", "no"]
            retry: {max: 1, next: give_up}
          give_up:
            say: "Never mind."
        """
    )

    assert problems == []


def test_keywords_that_differ_only_in_case_accents_or_punctuation_clash():
    first = parse_flow(
        "id: one\ntrigger: {keywords: [Café]}\nstart: a\nsteps: {a: {end: true}}\n", "one.yaml"
    )[0]
    second = parse_flow(
        "id: two\ntrigger:\n  keywords: [hi, cafe!]\nstart: a\nsteps: {a: {end: true}}\n",
        "two.yaml",
    )[0]

    problems = validate_flows([first, second], Templates())

    assert [(problem.source, problem.line, problem.flow_id) for problem in problems] == [
        ("two.yaml", 3, "two")
    ]
    assert "cafe!" in problems[0].message and "'one'" in problems[0].message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("- just\n- a list\n", 1),
        ("", 1),
        ("id: x\nstart: a\nsteps:\n  a:\n    say: 'unclosed\n", 6),
        ("id: x\nstart: a\nsteps: {}\n", 3),
    ],
    ids=["a-list", "empty", "unclosed-quote", "empty-steps"],
)
def test_files_that_are_no_flow_are_reported_with_a_line(text, line):
    flow, problems = parse_flow(text, "odd.yaml")

    assert flow is None
    assert [(problem.source, problem.line) for problem in problems] == [("odd.yaml", line)]


TRANSITION_WITHOUT_THEN = """
    id: half
    start: a
    steps:
      a:
        say: hi
        next:
          - if: "vars.x"
          - else: a
"""


def test_a_shape_problem_inside_a_transition_list_points_at_the_entry():
    flow, problems = parse_flow(textwrap.dedent(TRANSITION_WITHOUT_THEN), "half.yaml")

    assert flow is None
    entry = [problem for problem in problems if "`then`" in problem.message]
    assert [(problem.line, problem.step_id) for problem in entry] == [
        (line_with(TRANSITION_WITHOUT_THEN, '- if: "vars.x"'), "a")
    ]
    assert "steps.a.next.0" in entry[0].message
    # pydantic also says the value is not a step id (the other form of `next`)
    assert all(problem.line >= line_with(TRANSITION_WITHOUT_THEN, "next:") for problem in problems)


def test_a_flow_file_problem_reads_file_line_step_message_and_hint():
    problem = FlowProblem("flows/x.yaml", 12, "leads to unknown step 'b'", "one of: a", "x", "a")

    assert str(problem) == "flows/x.yaml:12: step 'a': leads to unknown step 'b' (hint: one of: a)"


def test_an_empty_folder_is_a_problem(tmp_path):
    flows, problems = load_flow_files(tmp_path)

    assert flows == []
    assert [(problem.source, problem.line) for problem in problems] == [(str(tmp_path), 1)]


def test_a_parsed_flow_knows_its_source_version_and_lines():
    flow: Flow | None
    flow, _ = parse_flow("id: x\nstart: a\nsteps:\n  a:\n    say: hi\n", "x.yaml")

    assert flow is not None
    assert flow.source == "x.yaml"
    assert re.fullmatch(r"[0-9a-f]{12}", flow.version)
    assert flow.line_of(("steps", "a", "say")) == 5
    assert flow.line_of(("steps", "a", "next", 3, "if")) == 4  # nearest enclosing key


# --- flask flows validate -----------------------------------------------------------


@pytest.fixture
def cli(tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": "sqlite:///" + str(tmp_path / "x.db")})
    return app.test_cli_runner()


def test_cli_reports_every_problem_of_the_broken_folder_as_file_line_and_exits_1(cli):
    result = cli.invoke(args=["flows", "validate", str(BROKEN)])

    assert result.exit_code == 1
    # The app's prompts folder is the shipped one, so its prompt problems differ
    # from the tmp_path prompts above: compute what to expect with the same folder.
    expected = broken_problems(SHIPPED_PROMPTS)
    lines = [line for line in result.output.splitlines() if line.strip()]
    for problem in expected:
        assert str(problem) in lines
    problem_lines = [line for line in lines if "problem(s) found" not in line]
    assert len(problem_lines) == len(expected)
    for line in problem_lines:
        match = re.match(r"^(?P<file>[^:]+\.yaml):(?P<line>\d+): ", line)
        assert match, line
        assert Path(match["file"]).is_file()
    for file, marker, _, _ in EXPECTED:
        if marker not in {"prompt-syntax", "prompt-unknown-name"}:
            source, number = expected_location(file, marker)
            assert any(line.startswith(f"{source}:{number}:") for line in lines), marker
    warnings = sum(1 for problem in expected if problem.warning)
    assert (
        f"{len(expected)} problem(s) found ({len(expected) - warnings} error(s), "
        f"{warnings} warning(s))." in result.output
    )


def test_cli_on_one_broken_file_reports_only_that_file(cli):
    path = BROKEN / "b_shape.yaml"

    result = cli.invoke(args=["flows", "validate", str(path)])

    assert result.exit_code == 1
    assert all(
        line.startswith(f"{path}:") for line in result.output.splitlines()[:-1] if line.strip()
    )


@pytest.mark.parametrize("args", [["flows", "validate", str(SHIPPED_FLOWS)], ["flows", "validate"]])
def test_cli_on_the_shipped_flows_exits_0(cli, args):
    result = cli.invoke(args=args)

    assert result.exit_code == 0, result.output
    assert "OK: 2 flow(s) valid" in result.output


def test_cli_on_one_shipped_file_exits_0(cli):
    result = cli.invoke(args=["flows", "validate", str(SHIPPED_FLOWS / "menu.yaml")])

    assert result.exit_code == 0, result.output
    assert "OK: 1 flow(s) valid (menu)." in result.output


def test_a_step_written_twice_is_reported_not_silently_dropped():
    text = "id: twice\nstart: a\nsteps:\n  a:\n    say: one\n  a:\n    say: two\n"
    flow, problems = parse_flow(text, "twice.yaml")

    assert flow is None
    assert [(p.source, p.line, p.step_id) for p in problems] == [("twice.yaml", 6, "a")]
    assert "twice" in problems[0].message


# --- issue 13, item 11: Liquid and Jinja checks, and graph checks past shape errors -------

TEMPLATE_MISTAKES = """\
id: mistakes
trigger: {default: true}
start: one
steps:
  one:
    say: "Hi {{ contact.name | shout }}"
    next: two
  two:
    say: '{{ "Hi {{flow.variables.x | upcase }" | liquid }}'
    next: three
  three:
    say: '{{ "{{ flow.variables.x | nosuchfilter }}" | liquid }}'
    next: four
  four:
    say: '{{ "{% nosuchtag %}" | liquid }}'
"""

SHAPE_AND_GRAPH = """\
id: mixed
start: one
steps:
  one:
    say: "hi"
    next: two
  two:
    bogus: 1
    next: three
  three:
    branch:
      - if: "input.text == 'x'"
        then: nowhere
"""


def test_cli_reports_liquid_and_unknown_jinja_filters_as_file_line(cli, tmp_path):
    path = tmp_path / "mistakes.yaml"
    path.write_text(TEMPLATE_MISTAKES)
    result = cli.invoke(args=["flows", "validate", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{path}:6: step 'one': template syntax error: no filter named 'shout'" in result.output
    assert f"{path}:9: step 'two': warning: liquid template error: expected '}}}}'" in result.output
    liquid = "warning: liquid template error"
    assert f"{path}:12: step 'three': {liquid}: no filter named 'nosuchfilter'" in result.output
    assert f"{path}:15: step 'four': {liquid}: unexpected tag 'nosuchtag'" in result.output


def test_graph_checks_go_on_for_the_steps_that_parsed(cli, tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(SHAPE_AND_GRAPH)
    result = cli.invoke(args=["flows", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{path}:7: step 'two': steps.two: a step names exactly one kind" in result.output
    assert f"{path}:12: step 'three': leads to unknown step 'nowhere'" in result.output
    assert f"{path}:11: step 'three': transitions without `else`" in result.output
    # `three` is reached through the step that did not parse: not "unreachable".
    assert "unreachable" not in result.output


TRANSCRIBE = """\
id: intake
transcribe: true
start: week
steps:
  week:
    ask: "Tell me about your week."
    transcribe: false
    next: talk
  talk:
    llm: {history: 0}
    transcribe: {{TALK}}
"""


def test_cli_accepts_transcribe_switches_and_rejects_a_non_boolean_with_file_line(cli, tmp_path):
    path = tmp_path / "intake.yaml"
    path.write_text(TRANSCRIBE.replace("{{TALK}}", "false"))
    result = cli.invoke(args=["flows", "validate", str(path)])
    assert result.exit_code == 0, result.output
    for value in ("often", '"false"', "0"):
        path.write_text(TRANSCRIBE.replace("{{TALK}}", value))
        result = cli.invoke(args=["flows", "validate", str(path)])
        assert result.exit_code == 1
        assert f"{path}:11: step 'talk': steps.talk.transcribe: " in result.output, value
        assert "valid boolean" in result.output
