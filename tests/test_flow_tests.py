"""``flask flows test``: YAML conversation tests run through the real turn path.

CI runs the shipped flows' scripts (``flows/tests/``) here; the other tests
show what a designer sees when a script and a flow disagree.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from app import create_app
from models import Message, db

ROOT = Path(__file__).resolve().parent.parent
FLOW_TESTS = ROOT / "flows" / "tests"
MENU = "What would you like?\n1. Opening hours\n2. Talk to us\n3. Rate this service\n" + (
    "4. Nothing, thanks"
)


@pytest.fixture
def cli(tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    return app.test_cli_runner()


def write(tmp_path: Path, text: str, name: str = "script.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_shipped_flow_has_a_conversation_test():
    flows = {
        yaml.safe_load(path.read_text())["id"]
        for path in (ROOT / "flows").glob("*.yaml")
        if not path.name.startswith("_")  # not a flow (responder settings)
    }
    tested = {yaml.safe_load(path.read_text())["flow"] for path in FLOW_TESTS.glob("*.yaml")}

    assert flows <= tested, f"flows without a script in flows/tests/: {sorted(flows - tested)}"


def test_the_shipped_conversation_tests_pass(app):
    result = app.test_cli_runner().invoke(args=["flows", "test"])

    assert result.exit_code == 0, result.output
    conversations = sum(
        len(yaml.safe_load(path.read_text()).get("tests", [])) for path in FLOW_TESTS.glob("*.yaml")
    )
    assert f"{conversations} passed, 0 failed" in result.output
    assert "FAIL" not in result.output
    with app.app_context():  # a throwaway database: the app's is untouched
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


WRONG_BYE = """
    flow: menu
    contact: {phone: "+15551230009", channel: sms}
    tests:
      - name: a wrong goodbye
        turns:
          - say: menu
            expect: [{any: true}]
          - say: "1"
            expect: [{regex: "We're open .*"}, {contains: "yes/no"}]
          - say: "no"
            expect: ["Bye for now! Reply HELP any time."]
"""


def test_a_failing_script_shows_the_first_difference_and_each_turn(cli, tmp_path):
    result = cli.invoke(args=["flows", "test", str(write(tmp_path, WRONG_BYE))])

    assert result.exit_code == 1
    assert f"FAIL {tmp_path / 'script.yaml'}: a wrong goodbye" in result.output
    assert (
        "Conversation test failed at turn 3 of 3 ('no'): reply 1 (step bye) differs.\n"
        "  expected: 'Bye for now! Reply HELP any time.'\n"
        "  got:      'Bye for now! Reply MENU any time.'\n"
        "            first difference at character 19\n"
        "Turn by turn:\n"
        "  ✓ turn 1  contact: 'menu'   steps: count → choose\n"
        "  ✓ turn 2  contact: '1'   steps: choose → hours → more\n"
        "  ✗ turn 3  contact: 'no'   steps: more → bye → done\n"
        "      expected: 'Bye for now! Reply HELP any time.'\n"
        "      got:      'Bye for now! Reply MENU any time.'  [bye]\n"
        "      → reply 1 (step bye) differs.\n"
    ) in result.output
    assert "0 passed, 1 failed" in result.output


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (
            """
            flow: menu
            turns:
              - say: menu
                llm: ["unused"]
            """,
            "turn 1 of 1 ('menu'): the turn made 0 LLM call(s) but scripted 1",
        ),
        (
            """
            flow: goal_setting
            turns:
              - say: hi
              - say: sleep
                expect: ["?"]
            """,
            "turn 2 of 2 ('sleep'): reply 1 (step coach) differs.\n  expected: '?'\n"
            '  got:      "Sorry, I\'m having trouble right now. Please try again in a minute."'
            "\n            first difference at character 0\n"
            "  (the turn failed: LLM call failed: the conversation test scripted no output",
        ),
        (
            """
            flow: menu
            turns:
              - say: menu
              - say: "4"
            expect_vars: {topic: hours}
            """,
            "the end: vars.topic differs.\n  expected: 'hours'\n  got:      'nothing'",
        ),
        (
            """
            flow: menu
            turns:
              - say: menu
            expect_status: ended
            """,
            "the end: the execution is 'waiting', expected 'ended'",
        ),
        (
            """
            flow: menu
            turns:
              - say: menu
                expect: []
            """,
            "turn 1 of 1 ('menu'): expected 0 replies, got 1; unexpected:\n  got:      "
            + repr(MENU)
            + " (step choose)",
        ),
        (
            """
            flow: nope
            turns:
              - say: hi
            """,
            "the start: no flow 'nope'",
        ),
    ],
    ids=["llm-not-called", "llm-not-scripted", "vars", "status", "extra-reply", "unknown-flow"],
)
def test_each_kind_of_difference_is_named(cli, tmp_path, script, reason):
    result = cli.invoke(args=["flows", "test", str(write(tmp_path, script))])

    assert result.exit_code == 1
    assert f"Conversation test failed at {reason}" in result.output


def test_an_exported_transcript_runs_as_a_test(cli, tmp_path):
    exported = """
        name: conversation-12
        flow: menu
        turns:
          - contact: menu
            bot:
              - "What would you like?\\n1. Opening hours\\n2. Talk to us\\n3. Rate this service\\n\\
                4. Nothing, thanks"
          - contact: "4"
            bot: ["Bye for now! Reply MENU any time."]
    """

    result = cli.invoke(args=["flows", "test", str(write(tmp_path, exported))])

    assert result.exit_code == 0, result.output
    assert "conversation-12" in result.output and "1 passed, 0 failed" in result.output


def test_a_malformed_test_file_is_reported_with_its_line(cli, tmp_path):
    path = write(
        tmp_path,
        """
        flow: menu
        tests:
          - name: typo
            turns:
              - says: menu
        """,
    )

    result = cli.invoke(args=["flows", "test", str(path)])

    assert result.exit_code == 1
    assert f"{path}:6: tests.0.turns.0.says: Extra inputs are not permitted" in result.output


def test_a_folder_without_tests_fails(cli, tmp_path):
    result = cli.invoke(args=["flows", "test", str(tmp_path)])

    assert result.exit_code == 1
    assert "no conversation tests found" in result.output
