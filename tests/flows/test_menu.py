"""The ``menu`` flow (``flows/menu.yaml``), every branch, through the signed webhook.

The flow has no LLM step: `run_script` also checks that no turn calls the LLM.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from models import Execution, Message, db
from tests.flows.script import ANY, Turn, run_script

MENU = (
    "What would you like?\n"
    "1. Opening hours\n"
    "2. Talk to us\n"
    "3. Rate this service\n"
    "4. Nothing, thanks"
)
MENU_RETRY = "Please reply with a number from 1 to 4."
HOURS = "We're open Monday to Friday, 9:00 to 17:00."
CONTACT = "Call us on +1 555 010 0100 or email hello@example.org."
RATE = "From 1 (poor) to 5 (great), how was it?"
RATE_RETRY = "Just a number from 1 to 5, please."
HAPPY = "Thank you! Glad it helped."
SORRY = "Thanks for telling us. We'll do better."
MORE = "Anything else? (yes/no)"
BYE = "Bye for now! Reply MENU any time."
FALLBACK = "Sorry, something went wrong. Reply MENU to start again."


def outbound_steps() -> list[str | None]:
    return list(
        db.session.scalars(
            sa.select(Message.step_id).where(Message.direction == "outbound").order_by(Message.id)
        )
    )


def only_execution() -> Execution:
    return db.session.scalars(sa.select(Execution)).one()


def test_every_branch_then_no_says_bye(app, twilio, fake_openai):
    run_script(
        twilio,
        fake_openai,
        [
            Turn("MENU", [MENU]),
            Turn("1", [HOURS, MORE]),
            Turn("yes", [MENU]),
            Turn("2", [CONTACT, MORE]),
            Turn("Yes!", [MENU]),
            Turn("pizza", [MENU_RETRY]),  # not a choice: asked again
            Turn("3", [RATE]),
            Turn("five", [RATE_RETRY]),
            Turn("5", [HAPPY, MORE]),  # >= 4: thank_happy
            Turn("yes", [MENU]),
            Turn("rate", [RATE]),  # a choice by its label
            Turn("4", [HAPPY, MORE]),  # 4 is still happy
            Turn("yes", [MENU]),
            Turn("Rate", [RATE]),
            Turn("3", [SORRY, MORE]),  # < 4: thank_sorry
            Turn("yes", [MENU]),
            Turn("hours", [HOURS, MORE]),
            Turn("no", [BYE]),
        ],
    )

    with app.app_context():
        execution = only_execution()
        assert (execution.status, execution.current_step) == ("ended", "done")
        assert execution.variables == {
            "visits": 6,
            "topic": "hours",
            "score": "3",
            "more": "no",
        }
        assert execution.step_results["count"] == {"visits": 6}
        assert outbound_steps() == [
            "choose",
            "hours",
            "more",
            "choose",
            "contact_us",
            "more",
            "choose",
            "choose",
            "rate",
            "rate",
            "thank_happy",
            "more",
            "choose",
            "rate",
            "thank_happy",
            "more",
            "choose",
            "rate",
            "thank_sorry",
            "more",
            "choose",
            "hours",
            "more",
            "bye",
        ]
        inbound = db.session.scalars(sa.select(Message).where(Message.direction == "inbound"))
        assert {(m.turn_status, m.execution_id, m.flow_id) for m in inbound} == {
            ("done", execution.id, "menu")
        }
    assert fake_openai.requests == []


def test_visits_count_each_time_yes_loops_back(app, twilio, fake_openai):
    def visits() -> int:
        with app.app_context():
            return only_execution().variables["visits"]

    run_script(twilio, fake_openai, [Turn("menu", [MENU])])
    assert visits() == 1
    for expected in (2, 3):
        run_script(twilio, fake_openai, [Turn("2", [CONTACT, MORE]), Turn("yes", [MENU])])
        assert visits() == expected
    run_script(twilio, fake_openai, [Turn("2", [CONTACT, MORE]), Turn("NO", [BYE])])
    assert visits() == 3


def test_nothing_says_bye_and_ends(app, twilio, fake_openai):
    run_script(twilio, fake_openai, [Turn("info", [MENU]), Turn("4", [BYE])])

    with app.app_context():
        execution = only_execution()
        assert execution.status == "ended"
        assert execution.variables == {"visits": 1, "topic": "nothing"}


def test_a_choice_never_given_fails_with_the_fallback_and_menu_starts_again(
    app, twilio, fake_openai
):
    run_script(
        twilio,
        fake_openai,
        [
            Turn("help", [MENU]),
            Turn("what?", [MENU_RETRY]),
            Turn("7", [MENU_RETRY]),
            Turn("I said what?", [FALLBACK]),  # choose.retry has no `next`
            Turn("menu", [MENU]),
        ],
    )

    with app.app_context():
        failed, again = db.session.scalars(sa.select(Execution).order_by(Execution.id))
        assert (failed.status, failed.current_step) == ("failed", "choose")
        assert "no valid answer after 2 retries" in failed.error
        assert (again.status, again.current_step) == ("waiting", "choose")
        fallback = db.session.scalars(sa.select(Message).where(Message.body == FALLBACK)).one()
        assert (fallback.author, fallback.step_id) == ("system", "choose")
        turn_statuses = db.session.scalars(
            sa.select(Message.turn_status)
            .where(Message.direction == "inbound")
            .order_by(Message.id)
        )
        assert list(turn_statuses) == ["done", "done", "done", "failed", "done"]


def test_a_wrong_script_fails_with_the_transcript_and_the_first_difference(
    app, twilio, fake_openai
):
    with pytest.raises(AssertionError) as failure:
        run_script(
            twilio,
            fake_openai,
            [
                Turn("menu", [ANY]),
                Turn("1", [re.compile(r"We're open .*"), MORE]),
                Turn("no", ["Bye for now! Reply HELP any time."]),
            ],
        )

    message = str(failure.value)
    assert message.startswith("Conversation script failed at turn 3 of 3 ('no'): reply 1 differs.")
    assert "expected: 'Bye for now! Reply HELP any time.'" in message
    assert f"got:      {BYE!r}" in message
    assert "first difference at character 19" in message
    assert "Transcript so far:" in message
    transcript = message.split("Transcript so far:\n", 1)[1]
    for line in ("1  contact: menu", "bot:     What would you like?", "1. Opening hours"):
        assert line in transcript
    for line in ("2  contact: 1", f"bot:     {HOURS}", "3  contact: no", f"bot:     {BYE}"):
        assert line in transcript


def test_a_script_with_too_few_replies_names_the_unexpected_one(app, twilio, fake_openai):
    with pytest.raises(AssertionError, match=r"expected 1 replies, got 2; unexpected reply 2"):
        run_script(twilio, fake_openai, [Turn("menu", [MENU]), Turn("1", [HOURS])])


def test_a_script_that_expects_an_llm_call_the_flow_does_not_make_fails(app, twilio, fake_openai):
    with pytest.raises(AssertionError, match=r"made 0 LLM call\(s\) but scripted 1"):
        run_script(twilio, fake_openai, [Turn("menu", [MENU], llm=["unused"])])
