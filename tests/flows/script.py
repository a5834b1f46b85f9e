"""Conversations as scripts: ``(contact says, bot replies)`` turns run through the real webhook.

A script is a list of `Turn`. Each turn posts one signed Twilio webhook as the
contact, reads the TwiML answer and compares its messages, in order, with what
the turn expects: an exact string, a compiled regular expression that must
match the whole reply (`re.fullmatch`), or `ANY`. The LLM outputs a turn
needs are queued on the fake OpenAI server just before its message is sent,
and the turn must use exactly those::

    run_script(
        twilio,
        fake_openai,
        [
            Turn("hello", [GREETING, QUESTION]),
            Turn("sleep", ["How do you sleep?"], llm=[{"reply": "How do you sleep?", ...}]),
        ],
        ProfileName="Ana",
    )

On the first difference the test fails with the transcript so far and the
difference, e.g.::

    Conversation script failed at turn 2 of 5 ('pizza'): reply 1 differs.
      expected: 'Just reply sleep, movement or connection (or 1, 2 or 3).'
      got:      'Just reply sleep or movement.'
                first difference at character 16
    Transcript so far:
      1  contact: hello
         bot:     Hi Ana! I'm Parley, ...
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn

from tests.conftest import OUR_WHATSAPP, TwilioWebhook
from tests.fakes.openai_server import FakeOpenAI, ScriptedReply
from tests.twiml import messages_of

__all__ = ["ANY", "Expected", "Transcript", "Turn", "run_script"]


class _Any:
    """Matches any one reply."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()
"""Expect one reply, whatever its text."""

Expected = str | re.Pattern[str] | _Any


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation script.

    Attributes:
        says: What the contact sends.
        replies: What the bot must answer, message by message, in order.
        llm: The LLM outputs the turn uses, in order (a dict for structured
            output, a str for plain text, or a fake-server `Error`/`Reply`).
            The turn must make exactly this many LLM calls.
    """

    says: str
    replies: Sequence[Expected] = ()
    llm: Sequence[ScriptedReply] = field(default_factory=tuple)


@dataclass
class Transcript:
    """What was said in a script run, turn by turn.

    Attributes:
        turns: ``(contact says, bot replies)`` for each turn run.
    """

    turns: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def replies(self) -> list[str]:
        """Every bot reply, in order."""
        return [reply for _, replies in self.turns for reply in replies]

    def render(self) -> str:
        """The transcript as numbered lines, one message a line."""
        lines = []
        for number, (says, replies) in enumerate(self.turns, start=1):
            lines.append(f"  {number:<2} contact: {says}")
            for reply in replies or ["(no reply)"]:
                for index, line in enumerate(reply.splitlines() or [""]):
                    lines.append(f"     {'bot:    ' if index == 0 else '        '} {line}")
        return "\n".join(lines) if lines else "  (empty)"


def matches(expected: Expected, reply: str) -> bool:
    """Whether `reply` is what `expected` describes."""
    if isinstance(expected, _Any):
        return True
    if isinstance(expected, re.Pattern):
        return expected.fullmatch(reply) is not None
    return expected == reply


def _describe(expected: Expected) -> str:
    if isinstance(expected, re.Pattern):
        return f"/{expected.pattern}/ (regex, whole reply)"
    return repr(expected)


def _first_difference(expected: str, got: str) -> int:
    for index, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return index
    return min(len(expected), len(got))


def _difference(expected: Sequence[Expected], got: list[str]) -> str | None:
    """The first difference between expected and actual replies, or None."""
    for index, (want, reply) in enumerate(zip(expected, got, strict=False)):
        if not matches(want, reply):
            text = (
                f"reply {index + 1} differs.\n  expected: {_describe(want)}\n  got:      {reply!r}"
            )
            if isinstance(want, str):
                at = _first_difference(want, reply)
                text += f"\n            first difference at character {at}"
            return text
    if len(got) > len(expected):
        extra = "\n".join(f"  got:      {reply!r}" for reply in got[len(expected) :])
        return (
            f"expected {len(expected)} replies, got {len(got)}; "
            f"unexpected reply {len(expected) + 1} on:\n{extra}"
        )
    if len(got) < len(expected):
        missing = "\n".join(f"  expected: {_describe(want)}" for want in expected[len(got) :])
        return f"expected {len(expected)} replies, got {len(got)}; missing:\n{missing}"
    return None


def run_script(
    twilio: TwilioWebhook,
    fake_openai: FakeOpenAI,
    turns: Sequence[Turn],
    sender: str = "whatsapp:+15551230001",
    to: str = OUR_WHATSAPP,
    **extra: str,
) -> Transcript:
    """Run a conversation script through the signed webhook.

    Args:
        twilio: The signed webhook poster (the `twilio` fixture).
        fake_openai: The fake OpenAI server (the `fake_openai` fixture).
        turns: The script.
        sender: The contact's ``From`` (``whatsapp:+1...`` or a bare ``+1...`` for SMS).
        to: Our number, Twilio's ``To``.
        **extra: More webhook parameters sent with every message, e.g. ``ProfileName``.

    Returns:
        The transcript, for further checks.

    Raises:
        AssertionError: a reply differs, the webhook did not answer 200, or a
            turn made a different number of LLM calls than it scripted; the
            message holds the transcript so far and the first difference.
    """
    transcript = Transcript()
    for number, turn in enumerate(turns, start=1):
        calls_before = len(fake_openai.requests)
        fake_openai.script(*turn.llm)
        response = twilio.post(twilio.form(turn.says, sender=sender, to=to, **extra))
        where = f"turn {number} of {len(turns)} ({turn.says!r})"
        if response.status_code != 200:
            transcript.turns.append((turn.says, []))
            _fail(
                transcript,
                f"{where}: the webhook answered HTTP {response.status_code}: "
                f"{response.get_data(as_text=True)!r}",
            )
        replies = messages_of(response.data)
        transcript.turns.append((turn.says, replies))
        difference = _difference(turn.replies, replies)
        if difference is not None:
            _fail(transcript, f"{where}: {difference}", fake_openai, calls_before)
        calls = len(fake_openai.requests) - calls_before
        if calls != len(turn.llm):
            _fail(
                transcript,
                f"{where}: the turn made {calls} LLM call(s) but scripted {len(turn.llm)} "
                f"({fake_openai.pending} scripted output(s) left unused)",
            )
    return transcript


def _fail(
    transcript: Transcript,
    reason: str,
    fake_openai: FakeOpenAI | None = None,
    calls_before: int = 0,
) -> NoReturn:
    message = f"Conversation script failed at {reason}\nTranscript so far:\n{transcript.render()}"
    if fake_openai is not None:
        calls = len(fake_openai.requests) - calls_before
        message += (
            f"\n(LLM calls in this turn: {calls}; scripted outputs left: {fake_openai.pending})"
        )
    raise AssertionError(message)
