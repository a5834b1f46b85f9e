"""The default flow, ``flows/goal_setting.yaml``, held to its end through the signed webhook.

Each test is a conversation script (`tests.flows.script`): what the contact
says, what the bot must answer, and the LLM's structured outputs for the turns
that call it. The tests then read the transcript and the execution back from
the database and look at what the LLM was sent.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from models import Contact, Conversation, Execution, Message, db
from tests.flows.script import ANY, Turn, run_script

GREETING = (
    "Hi {name}! I'm Parley, your well-being companion. Let's pick one small goal for this week."
)
QUESTION = "Which matters most to you right now: 1. sleep, 2. movement or 3. connection?"
RETRY = "Just reply sleep, movement or connection (or 1, 2 or 3)."
PICK_FOR_THEM = "No worries, let's start with sleep: it helps with everything else."
CONFIRM = (
    "Great, your goal for this week: {goal}. "
    "I'll be cheering you on. Message me any time to set a new one."
)
PARK = (
    "Let's leave it there for today. Choosing a goal can take time. "
    "Message me whenever you'd like to try again."
)
HISTORY_WINDOW = 12  # coach.llm.history in the flow
GOAL = "a 10-minute walk after lunch on weekdays"


def coach(reply: str, goal: str = "", agreed: bool = False) -> dict[str, Any]:
    """One structured output of the coach step."""
    return {"reply": reply, "goal": goal, "agreed": agreed}


HAPPY_PATH = [
    Turn("hello", [GREETING.format(name="Ana"), QUESTION]),
    Turn("pizza", [RETRY]),
    Turn(
        "2",
        ["Movement it is! What kind of moving do you enjoy?"],
        llm=[coach("Movement it is! What kind of moving do you enjoy?")],
    ),
    Turn(
        "I like walking but I'm busy at work",
        ["How about a 10-minute walk after lunch on weekdays?"],
        llm=[coach("How about a 10-minute walk after lunch on weekdays?", GOAL)],
    ),
    Turn(
        "Hmm, maybe. Only weekdays?",
        ["Yes, weekends are free. Does that sound doable?"],
        llm=[coach("Yes, weekends are free. Does that sound doable?", GOAL)],
    ),
    Turn(
        "It does",
        ["Great. Shall we make it your goal for this week?"],
        llm=[coach("Great. Shall we make it your goal for this week?", GOAL)],
    ),
    Turn(
        "Yes, let's do it!",
        ["Wonderful, it's a deal!", CONFIRM.format(goal=GOAL)],
        llm=[coach("Wonderful, it's a deal!", GOAL, agreed=True)],
    ),
]


def messages() -> list[Message]:
    return list(db.session.scalars(sa.select(Message).order_by(Message.id)))


def executions() -> list[Execution]:
    return list(db.session.scalars(sa.select(Execution).order_by(Execution.id)))


def chat_messages(turns: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """The conversation as the LLM sees it: the contact is the user, the bot the assistant."""
    result = []
    for says, replies in turns:
        result.append({"role": "user", "content": says})
        result.extend({"role": "assistant", "content": reply} for reply in replies)
    return result


def test_goal_is_set_from_greeting_to_end(app, twilio, fake_openai):
    transcript = run_script(twilio, fake_openai, HAPPY_PATH, ProfileName="Ana")

    with app.app_context():
        stored = messages()
        assert [(m.direction, m.author, m.step_id, m.body) for m in stored] == [
            ("inbound", "contact", None, "hello"),
            ("outbound", "bot", "welcome", GREETING.format(name="Ana")),
            ("outbound", "bot", "area", QUESTION),
            ("inbound", "contact", None, "pizza"),
            ("outbound", "bot", "area", RETRY),
            ("inbound", "contact", None, "2"),
            ("outbound", "bot", "coach", "Movement it is! What kind of moving do you enjoy?"),
            ("inbound", "contact", None, "I like walking but I'm busy at work"),
            ("outbound", "bot", "coach", "How about a 10-minute walk after lunch on weekdays?"),
            ("inbound", "contact", None, "Hmm, maybe. Only weekdays?"),
            ("outbound", "bot", "coach", "Yes, weekends are free. Does that sound doable?"),
            ("inbound", "contact", None, "It does"),
            ("outbound", "bot", "coach", "Great. Shall we make it your goal for this week?"),
            ("inbound", "contact", None, "Yes, let's do it!"),
            ("outbound", "bot", "coach", "Wonderful, it's a deal!"),
            ("outbound", "bot", "confirm", CONFIRM.format(goal=GOAL)),
        ]
        assert [m.body for m in stored if m.direction == "outbound"] == transcript.replies

        (execution,) = executions()
        assert {m.execution_id for m in stored} == {execution.id}
        assert {m.flow_id for m in stored} == {"goal_setting"}
        assert len({m.conversation_id for m in stored}) == 1
        assert all(m.turn_status == "done" for m in stored if m.direction == "inbound")
        assert all(m.turn_status is None for m in stored if m.direction == "outbound")

        llm_replies = [m for m in stored if m.step_id == "coach"]
        assert len(llm_replies) == 5
        for message in llm_replies:
            assert message.model == "gpt-4o-mini"
            assert message.prompt_tokens > 0
            assert message.completion_tokens > 0
            assert message.latency_ms >= 0
        for message in stored:
            if message.step_id != "coach":
                assert (message.model, message.prompt_tokens, message.latency_ms) == (
                    None,
                    None,
                    None,
                )

        assert (execution.status, execution.current_step) == ("ended", "done")
        assert execution.ended_at is not None
        assert execution.error is None
        assert execution.variables["area"] == "movement"
        assert execution.variables["goal"] == coach("Wonderful, it's a deal!", GOAL, agreed=True)

        contact = db.session.scalars(sa.select(Contact)).one()
        assert (contact.phone, contact.name) == ("+15551230001", "Ana")


def test_llm_is_sent_the_system_prompt_history_window_and_strict_schema(app, twilio, fake_openai):
    transcript = run_script(twilio, fake_openai, HAPPY_PATH, ProfileName="Ana")

    requests = fake_openai.requests
    assert len(requests) == 5
    llm_turns = [index for index, turn in enumerate(HAPPY_PATH) if turn.llm]
    for request, turn_index in zip(requests, llm_turns, strict=True):
        assert request["model"] == "gpt-4o-mini"
        assert request["temperature"] == 0.7
        assert request["response_format"] == {
            "type": "json_schema",
            "json_schema": {
                "name": "coach_output",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {
                        "reply": {"type": "string"},
                        "goal": {"type": "string"},
                        "agreed": {"type": "boolean"},
                    },
                    "required": ["reply", "goal", "agreed"],
                    "additionalProperties": False,
                },
            },
        }

        system, *history, user = request["messages"]
        assert system["role"] == "system"
        assert "They chose to work on: movement." in system["content"]
        assert "The person's name is Ana." in system["content"]
        assert "chatting on WhatsApp" in system["content"]
        assert "Answer as JSON" in system["content"]
        # The history is what came before this turn's message, at most 12 messages...
        before = chat_messages(transcript.turns[:turn_index])
        assert history == before[-HISTORY_WINDOW:]
        # ... and the contact's new message is the user turn.
        assert user == {"role": "user", "content": HAPPY_PATH[turn_index].says}

    # The first call sees the whole (short) conversation; the last one a full window.
    assert len(requests[0]["messages"]) == 1 + 5 + 1
    assert len(requests[-1]["messages"]) == 1 + HISTORY_WINDOW + 1
    assert requests[-1]["messages"][1] == {
        "role": "assistant",
        "content": GREETING.format(name="Ana"),
    }


def test_contact_who_never_picks_an_area_gets_sleep_picked_for_them(app, twilio, fake_openai):
    run_script(
        twilio,
        fake_openai,
        [
            Turn("hello", [GREETING.format(name="there"), QUESTION]),
            Turn("pizza", [RETRY]),
            Turn("4", [RETRY]),  # a number, but not one of the three
            Turn(
                "I really don't know",
                [PICK_FOR_THEM, "What time do you usually go to bed?"],
                llm=[coach("What time do you usually go to bed?")],
            ),
            Turn(
                "Around 1am",
                ["Could lights out by 23:30 on weeknights work?"],
                llm=[coach("Could lights out by 23:30 on weeknights work?", "lights out by 23:30")],
            ),
        ],
    )

    with app.app_context():
        (execution,) = executions()
        assert (execution.status, execution.current_step) == ("waiting", "coach")
        assert execution.variables["area"] == "sleep"
        assert [m.step_id for m in messages() if m.direction == "outbound"] == [
            "welcome",
            "area",
            "area",
            "area",
            "pick_for_them",
            "coach",
            "coach",
        ]
    system = fake_openai.requests[0]["messages"][0]["content"]
    assert "They chose to work on: sleep." in system
    assert "The person's name" not in system  # no ProfileName was sent


def test_next_message_after_the_end_starts_the_flow_again(app, twilio, fake_openai):
    run_script(
        twilio,
        fake_openai,
        [
            Turn("hi", [GREETING.format(name="Ana"), QUESTION]),
            Turn(
                "connection",
                ["Calling one friend this week sounds lovely. Deal!", ANY],
                llm=[
                    coach(
                        "Calling one friend this week sounds lovely. Deal!", "call a friend", True
                    )
                ],
            ),
            Turn("thanks!", [GREETING.format(name="Ana"), QUESTION]),
            Turn("1", ["Let's talk about sleep."], llm=[coach("Let's talk about sleep.")]),
        ],
        ProfileName="Ana",
    )

    with app.app_context():
        first, second = executions()
        assert (first.status, first.variables["area"]) == ("ended", "connection")
        assert first.variables["goal"]["goal"] == "call a friend"
        assert (second.status, second.current_step) == ("waiting", "coach")
        assert second.variables == {"area": "sleep", "goal": coach("Let's talk about sleep.")}
        by_execution = [(m.body, m.execution_id) for m in messages() if m.direction == "inbound"]
        assert by_execution == [
            ("hi", first.id),
            ("connection", first.id),
            ("thanks!", second.id),
            ("1", second.id),
        ]
        confirm = db.session.scalars(sa.select(Message).where(Message.step_id == "confirm")).one()
        assert confirm.body == CONFIRM.format(goal="call a friend")


def test_coaching_that_never_agrees_is_parked_after_max_turns(app, twilio, fake_openai):
    questions = [f"Question {number}: what would help?" for number in range(1, 9)]
    turns = [
        Turn("hello", [GREETING.format(name="there"), QUESTION]),
        Turn("movement", [questions[0]], llm=[coach(questions[0])]),
        *(
            Turn(f"not sure ({number})", [questions[number]], llm=[coach(questions[number])])
            for number in range(1, 7)
        ),
        Turn("still not sure", [questions[7], PARK], llm=[coach(questions[7])]),
    ]
    run_script(twilio, fake_openai, turns)

    with app.app_context():
        (execution,) = executions()
        assert (execution.status, execution.current_step) == ("ended", "done")
        assert execution.variables["goal"]["agreed"] is False
    assert len(fake_openai.requests) == 8  # coach.llm.max_turns


def test_goal_is_set_over_sms(app, twilio, fake_openai):
    sms = {"sender": "+15551230002", "to": "+15550001111"}
    run_script(
        twilio,
        fake_openai,
        [
            Turn("start", [GREETING.format(name="there"), QUESTION]),
            Turn(
                "Sleep.",
                ["What gets in the way of sleeping well?"],
                llm=[coach("What gets in the way of sleeping well?")],
            ),
            Turn(
                "My phone",
                ["Phone out of the bedroom from 22:30, every night?"],
                llm=[coach("Phone out of the bedroom from 22:30, every night?", "phone out")],
            ),
            Turn(
                "ok yes",
                ["Deal!", CONFIRM.format(goal="phone out of the bedroom from 22:30")],
                llm=[coach("Deal!", "phone out of the bedroom from 22:30", True)],
            ),
        ],
        **sms,
    )

    with app.app_context():
        conversation = db.session.scalars(sa.select(Conversation)).one()
        assert (conversation.channel, conversation.address) == ("sms", "+15550001111")
        contact = db.session.scalars(sa.select(Contact)).one()
        assert (contact.phone, contact.name) == ("+15551230002", None)
        (execution,) = executions()
        assert execution.status == "ended"
        assert execution.variables["area"] == "sleep"
        assert execution.variables["goal"]["goal"] == "phone out of the bedroom from 22:30"
        assert all(m.turn_status == "done" for m in messages() if m.direction == "inbound")
    system = fake_openai.requests[0]["messages"][0]["content"]
    assert re.search(r"chatting on SMS\.", system)
    assert "They chose to work on: sleep." in system
