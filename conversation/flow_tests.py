"""Conversation tests: YAML scripts of what a contact says and what the bot must answer.

A test file (``flows/tests/*.yaml``)::

    flow: goal_setting                 # the flow every conversation of the file runs
    contact: {phone: "+15551230001", channel: whatsapp, name: Ana}   # optional
    tests:
      - name: a goal is agreed
        turns:
          - say: hello
            expect:
              - "Hi Ana! I'm Parley, your well-being companion. Let's pick one small goal…"
              - {regex: "Which matters most .*"}
          - say: "2"
            llm:                       # what the model answers, in order, this turn
              - {reply: "Movement it is! What do you enjoy?", goal: "", agreed: false}
            expect: [{any: true}]
        expect_vars: {area: movement}  # values the execution's variables hold at the end
        expect_status: waiting         # optional: active, waiting, ended, failed

A file may also be one conversation: ``name``, ``flow``, ``turns`` at the top.
Each expected reply is exact text, ``{regex: ...}`` (the whole reply must
match), ``{contains: ...}`` or ``{any: true}``; without ``expect`` a turn's
replies are not checked. ``llm`` outputs are a mapping (structured output),
a text, or ``{error: ...}`` for a failed call; a turn must make exactly that
many LLM calls. (``contact``/``bot`` are accepted for ``say``/``expect``, the
shape curated transcripts are exported in.)

Each conversation runs through the real path of a webhook turn,
`conversation.turn.TurnService` and the flow runner, on its own throwaway in-memory
SQLite database, with `ScriptedLLM` (an `engine.ports.LLM`) answering the
model calls: nothing is sent, no model is called and the app's database is not
touched. Responders (welcome, opt-out …) are not part of it: a test is about
its flow.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from conversation.turn import Incoming, TurnService
from engine.flow import yaml_lines
from engine.ports import LLMError, LLMRequest, LLMResponse, LLMUsage
from engine.runner import Runner
from integrations.twilio import split_body
from models import Base

#: Our side of simulated conversations (Twilio's ``To``).
OUR_NUMBER = "+15550009999"


class FlowTestError(Exception):
    """A test file cannot be read; the message says where (``file:line``) and why."""


class Expect(BaseModel):
    """One expected reply, in its mapping form."""

    model_config = ConfigDict(extra="forbid")

    regex: str | None = None
    """A regular expression the whole reply must match."""
    contains: str | None = None
    """Text the reply must contain."""
    any: bool = False
    """Any reply at all."""

    def matches(self, reply: str) -> bool:
        """Whether `reply` is what this describes."""
        if self.regex is not None:
            return re.fullmatch(self.regex, reply, re.DOTALL) is not None
        if self.contains is not None:
            return self.contains in reply
        return self.any

    def __str__(self) -> str:
        if self.regex is not None:
            return f"/{self.regex}/ (regex, whole reply)"
        if self.contains is not None:
            return f"a reply containing {self.contains!r}"
        return "any reply"


Expected = str | Expect


class TurnSpec(BaseModel):
    """One turn: what the contact says, what the model answers, what the bot must say."""

    model_config = ConfigDict(extra="forbid")

    say: str = Field(validation_alias=AliasChoices("say", "contact"))
    """What the contact sends."""
    expect: list[Expected] | None = Field(
        default=None, validation_alias=AliasChoices("expect", "bot")
    )
    """The bot's replies, in order; unchecked when absent."""
    llm: list[dict[str, Any] | str] = []
    """The model's outputs for this turn's LLM calls, in order."""


class ContactSpec(BaseModel):
    """Who the conversation is with."""

    model_config = ConfigDict(extra="forbid")

    phone: str = "+15550100100"
    """E.164 number."""
    channel: str = Field(default="whatsapp", pattern="^(whatsapp|sms)$")
    """``whatsapp`` or ``sms``."""
    name: str | None = None
    """WhatsApp profile name."""


class ConversationSpec(BaseModel):
    """One scripted conversation."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    """What it shows."""
    flow: str | None = None
    """The flow it runs (the file's ``flow`` when absent)."""
    contact: ContactSpec | None = None
    """Who talks (the file's ``contact`` when absent)."""
    turns: list[TurnSpec] = Field(min_length=1)
    """The turns, in order."""
    expect_vars: dict[str, Any] = {}
    """Variables the execution must hold at the end (others are not checked)."""
    expect_status: str | None = None
    """The execution's status at the end: active, waiting, ended, failed."""


class FlowTestFile(BaseModel):
    """A test file: defaults and conversations, or a single conversation."""

    model_config = ConfigDict(extra="forbid")

    flow: str | None = None
    contact: ContactSpec = ContactSpec()
    tests: list[ConversationSpec] = []
    name: str = ""
    turns: list[TurnSpec] = []
    expect_vars: dict[str, Any] = {}
    expect_status: str | None = None

    def conversations(self) -> list[ConversationSpec]:
        """Every conversation, defaults filled in."""
        items = list(self.tests)
        if self.turns:
            items.insert(
                0,
                ConversationSpec(
                    name=self.name,
                    turns=self.turns,
                    expect_vars=self.expect_vars,
                    expect_status=self.expect_status,
                ),
            )
        return [
            item.model_copy(
                update={
                    "flow": item.flow or self.flow,
                    "contact": item.contact or self.contact,
                    "name": item.name or f"conversation {index}",
                }
            )
            for index, item in enumerate(items, start=1)
        ]


def read_test_file(path: Path) -> list[ConversationSpec]:
    """Parse one test file.

    Raises:
        FlowTestError: not YAML, or not the shape above (``file:line: what``).
    """
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        lines, _ = yaml_lines(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise FlowTestError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML") from error
    try:
        conversations = FlowTestFile.model_validate(data).conversations()
    except ValidationError as error:
        messages = []
        for item in error.errors():
            location = tuple(part for part in item["loc"] if not _is_union_tag(part))
            line = next(
                (
                    lines[location[:end]]
                    for end in range(len(location), 0, -1)
                    if location[:end] in lines
                ),
                1,
            )
            messages.append(f"{path}:{line}: {'.'.join(map(str, location))}: {item['msg']}")
        raise FlowTestError("\n".join(messages)) from error
    for conversation in conversations:
        if not conversation.flow:
            raise FlowTestError(f"{path}:1: {conversation.name}: no `flow` to run")
    return conversations


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and (
        part in {"str", "Expect"} or part.startswith(("dict[", "list["))
    )


class ScriptedLLM:
    """An `engine.ports.LLM` that answers with scripted outputs, in order.

    Attributes:
        requests: Every request made, in order.
    """

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []
        self._queue: deque[dict[str, Any] | str] = deque()

    def script(self, outputs: list[dict[str, Any] | str]) -> None:
        """Queue outputs for the next calls."""
        self._queue.extend(outputs)

    @property
    def pending(self) -> int:
        """Scripted outputs not used yet."""
        return len(self._queue)

    def complete(self, request: LLMRequest) -> LLMResponse:
        """The next scripted output.

        Raises:
            LLMError: none is left, or the script says ``{error: ...}``.
        """
        self.requests.append(request)
        if not self._queue:
            raise LLMError("the conversation test scripted no output for this LLM call")
        output = self._queue.popleft()
        usage = LLMUsage(model=request.model, prompt_tokens=0, completion_tokens=0, latency_ms=0)
        if isinstance(output, dict) and set(output) == {"error"}:
            raise LLMError(str(output["error"]))
        if isinstance(output, dict):
            return LLMResponse(text=yaml.safe_dump(output), usage=usage, data=output)
        return LLMResponse(text=output, usage=usage)


@dataclass
class ConversationResult:
    """How one conversation went.

    Attributes:
        name: ``file: conversation name``.
        passed: Whether every check held.
        report: On failure: where, the first difference and the transcript so far.
        transcript: ``(contact says, bot replies)`` per turn run.
    """

    name: str
    passed: bool
    report: str = ""
    transcript: list[tuple[str, list[str]]] = field(default_factory=list)


def render_transcript(transcript: list[tuple[str, list[str]]]) -> str:
    """The transcript as numbered lines, one message a line."""
    lines = []
    for number, (says, replies) in enumerate(transcript, start=1):
        lines.append(f"  {number:<2} contact: {says}")
        for reply in replies or ["(no reply)"]:
            for index, line in enumerate(reply.splitlines() or [""]):
                lines.append(f"     {'bot:    ' if index == 0 else '        '} {line}")
    return "\n".join(lines) if lines else "  (empty)"


def _describe(expected: Expected) -> str:
    return repr(expected) if isinstance(expected, str) else str(expected)


def _matches(expected: Expected, reply: str) -> bool:
    return expected == reply if isinstance(expected, str) else expected.matches(reply)


def first_difference(expected: list[Expected], got: list[str]) -> str | None:
    """The first difference between expected and actual replies, or None."""
    for index, (want, reply) in enumerate(zip(expected, got, strict=False)):
        if not _matches(want, reply):
            text = (
                f"reply {index + 1} differs.\n  expected: {_describe(want)}\n  got:      {reply!r}"
            )
            if isinstance(want, str):
                at = next(
                    (i for i, (a, b) in enumerate(zip(want, reply, strict=False)) if a != b),
                    min(len(want), len(reply)),
                )
                text += f"\n            first difference at character {at}"
            return text
    if len(got) > len(expected):
        extra = "\n".join(f"  got:      {reply!r}" for reply in got[len(expected) :])
        return f"expected {len(expected)} replies, got {len(got)}; unexpected:\n{extra}"
    if len(got) < len(expected):
        missing = "\n".join(f"  expected: {_describe(want)}" for want in expected[len(got) :])
        return f"expected {len(expected)} replies, got {len(got)}; missing:\n{missing}"
    return None


def throwaway_session() -> Session:
    """A session on a new in-memory SQLite database with every table created."""
    engine = sa.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    Base.metadata.create_all(engine)
    return Session(engine)


def run_conversation(spec: ConversationSpec, runner: Runner, label: str) -> ConversationResult:
    """Run one conversation on a throwaway database; never raises for a failed check."""
    llm = ScriptedLLM()
    turns = TurnService(throwaway_session(), dataclasses.replace(runner, llm=llm), split_body)
    contact = spec.contact or ContactSpec()
    transcript: list[tuple[str, list[str]]] = []
    last_execution = None

    def fail(where: str, reason: str) -> ConversationResult:
        report = (
            f"Conversation test failed at {where}: {reason}\n"
            f"Transcript so far:\n{render_transcript(transcript)}"
        )
        return ConversationResult(label, False, report, transcript)

    try:
        if runner.flows.get(spec.flow or "") is None:
            known = ", ".join(runner.flows.flows) or "none"
            return fail("the start", f"no flow {spec.flow!r}; flows: {known}")
        for number, turn in enumerate(spec.turns, start=1):
            where = f"turn {number} of {len(spec.turns)} ({turn.say!r})"
            calls_before = len(llm.requests)
            llm.script(turn.llm)
            address = f"whatsapp:{OUR_NUMBER}" if contact.channel == "whatsapp" else OUR_NUMBER
            outcome = turns.handle(
                Incoming(
                    phone=contact.phone,
                    channel=contact.channel,  # type: ignore[arg-type]
                    address=address,
                    body=turn.say,
                    message_sid=f"test-{uuid.uuid4().hex}",
                    name=contact.name,
                ),
                flow_id=spec.flow,
            )
            transcript.append((turn.say, list(outcome.replies)))
            if outcome.result is not None and outcome.result.execution is not None:
                last_execution = outcome.result.execution
            error = f"\n  (the turn failed: {outcome.error})" if outcome.error else ""
            if turn.expect is not None:
                difference = first_difference(turn.expect, outcome.replies)
                if difference is not None:
                    return fail(where, difference + error)
            calls = len(llm.requests) - calls_before
            if calls != len(turn.llm):
                return fail(
                    where,
                    f"the turn made {calls} LLM call(s) but scripted {len(turn.llm)}{error}",
                )
        variables = last_execution.variables if last_execution else {}
        for name, value in spec.expect_vars.items():
            if name not in variables:
                return fail("the end", f"vars.{name} is not set (variables: {variables})")
            if variables[name] != value:
                return fail(
                    "the end",
                    f"vars.{name} differs.\n  expected: {value!r}\n  got:      {variables[name]!r}",
                )
        status = last_execution.status if last_execution else None
        if spec.expect_status is not None and status != spec.expect_status:
            return fail("the end", f"the execution is {status!r}, expected {spec.expect_status!r}")
    finally:
        turns.session.close()
        turns.session.get_bind().dispose()  # type: ignore[union-attr]
    return ConversationResult(label, True, "", transcript)


def find_test_files(target: Path) -> list[Path]:
    """The test files at `target`: the file itself, or a folder's ``*.yaml``/``*.yml``."""
    if target.is_file():
        return [target]
    return sorted([*target.glob("*.yaml"), *target.glob("*.yml")])


def run_test_files(target: Path, runner: Runner) -> list[ConversationResult]:
    """Run every conversation of the test files at `target` against `runner`'s flows.

    Raises:
        FlowTestError: a test file cannot be read (nothing is run then).
    """
    plan = [
        (path, conversation)
        for path in find_test_files(target)
        for conversation in read_test_file(path)
    ]
    return [
        run_conversation(conversation, runner, f"{path}: {conversation.name}")
        for path, conversation in plan
    ]
