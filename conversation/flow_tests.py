"""Conversation tests: YAML scripts of what a contact says and what the bot must answer.

A test file (``flows/tests/*.yaml``)::

    flow: goal_setting                 # the flow every conversation of the file runs
    flow_version: 3f2a9c01b7de         # optional: the version it was written for
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
            live: {max_chars: 300, judge: "Asks one question about moving"}
        expect_vars: {area: movement}  # values the execution's variables hold at the end
        expect_status: waiting         # optional: active, waiting, ended, failed

A file may also be one conversation: ``name``, ``flow``, ``turns`` at the top.
``expect`` is either the replies in order, each exact text or a mapping of
criteria, or one mapping of criteria for the turn's replies taken together
(``expect: {not_contains: diet pills}``). Criteria: ``regex`` (the whole
reply matches), ``contains``, ``not_contains``, ``max_chars``, ``any: true``,
and ``judge`` (a rubric a second model call checks, in live runs only); a
mapping with several holds when all of them do. Without ``expect`` a turn's
replies are not checked. ``llm`` outputs are a mapping (structured output), a
text, or ``{error: ...}`` for a failed call; a turn must make exactly that
many LLM calls. ``live`` holds the criteria for the replies the model writes
when the test runs against the real model (`conversation.live_tests`).
(``contact``/``bot`` are accepted for ``say``/``expect``.) ``source`` says
where a test came from (``{conversation: 12}``, written by
`curation.conversation_tests`).

Each conversation runs through the real path of a webhook turn,
`conversation.turn.TurnService` and the flow runner, on its own throwaway in-memory
SQLite database, with `ScriptedLLM` (an `engine.ports.LLM`) answering the
model calls: nothing is sent, no model is called and the app's database is not
touched. Responders (welcome, opt-out …) are not part of it: a test is about
its flow. A failure is reported turn by turn: expected and actual replies, the
step that wrote each one, and the steps that ran.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from conversation.turn import Incoming, TurnService, outbound_parts
from engine.flow import Flow, FlowSet, yaml_lines
from engine.ports import LLM, ExecutionState, LLMError, LLMRequest, LLMResponse, LLMUsage
from engine.runner import LLMCall, Runner
from integrations.twilio import split_body
from models import Base

#: Our side of simulated conversations (Twilio's ``To``).
OUR_NUMBER = "+15550009999"


class FlowTestError(Exception):
    """A test file cannot be read; the message says where (``file:line``) and why."""


class Expect(BaseModel):
    """Criteria for a reply (or a turn's replies): every one given must hold."""

    model_config = ConfigDict(extra="forbid")

    regex: str | None = None
    """A regular expression the whole reply must match."""
    contains: str | None = None
    """Text the reply must contain."""
    not_contains: str | None = None
    """Text the reply must not contain (case-insensitive)."""
    max_chars: int | None = Field(default=None, ge=1)
    """The most characters the reply may have."""
    any: bool = False
    """Any reply at all."""
    judge: str | None = None
    """A rubric: a second model call says whether the reply meets it (live runs only)."""

    def failures(self, reply: str) -> list[str]:
        """What `reply` misses of these criteria, ``judge`` aside (it needs a model)."""
        missed = []
        if self.regex is not None and re.fullmatch(self.regex, reply, re.DOTALL) is None:
            missed.append(f"does not match /{self.regex}/")
        if self.contains is not None and self.contains not in reply:
            missed.append(f"does not contain {self.contains!r}")
        if self.not_contains is not None and self.not_contains.lower() in reply.lower():
            missed.append(f"contains {self.not_contains!r}")
        if self.max_chars is not None and len(reply) > self.max_chars:
            missed.append(f"has {len(reply)} characters, more than {self.max_chars}")
        return missed

    def matches(self, reply: str) -> bool:
        """Whether `reply` meets the criteria (``judge`` is not checked here)."""
        return not self.failures(reply)

    def __str__(self) -> str:
        parts = []
        if self.regex is not None:
            parts.append(f"/{self.regex}/ (regex, whole reply)")
        if self.contains is not None:
            parts.append(f"containing {self.contains!r}")
        if self.not_contains is not None:
            parts.append(f"not containing {self.not_contains!r}")
        if self.max_chars is not None:
            parts.append(f"at most {self.max_chars} characters")
        if self.judge is not None:
            parts.append(f"judged: {self.judge!r}")
        return "a reply " + ", ".join(parts) if parts else "any reply"


Expected = str | Expect


class TurnSpec(BaseModel):
    """One turn: what the contact says, what the model answers, what the bot must say."""

    model_config = ConfigDict(extra="forbid")

    say: str = Field(validation_alias=AliasChoices("say", "contact"))
    """What the contact sends."""
    expect: list[Expected] | Expect | None = Field(
        default=None, validation_alias=AliasChoices("expect", "bot")
    )
    """The bot's replies in order, or criteria for all of them together; unchecked when absent."""
    llm: list[dict[str, Any] | str] = []
    """The model's outputs for this turn's LLM calls, in order."""
    live: Expect | list[Expect] | None = None
    """Live runs: criteria every reply the model writes this turn must meet."""

    def live_criteria(self) -> list[Expect]:
        """The ``live`` criteria as a list."""
        if self.live is None:
            return []
        return [self.live] if isinstance(self.live, Expect) else list(self.live)


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
    flow_version: str | None = None
    """The flow version it was written for (the file's when absent)."""
    source: dict[str, Any] | None = None
    """Where it came from, e.g. ``{conversation: 12}`` for a saved transcript."""
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
    flow_version: str | None = None
    source: dict[str, Any] | None = None
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
                    "flow_version": item.flow_version or self.flow_version,
                    "source": item.source or self.source,
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
        raise FlowTestError("\n".join(dict.fromkeys(messages))) from error
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
        """Queue outputs for the next calls, instead of any left over."""
        self._queue = deque(outputs)

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
class PlayedReply:
    """One reply of a played turn.

    Attributes:
        text: The message body.
        step_id: The step that wrote it, if any.
        by_model: Whether a model call wrote it.
    """

    text: str
    step_id: str | None
    by_model: bool


@dataclass
class PlayedTurn:
    """What one turn of a played conversation did.

    Attributes:
        number: 1 for the first turn.
        spec: The turn as the test writes it.
        replies: The replies, in order.
        steps: The steps that ran.
        error: Why the turn answered with the fallback, if it did.
        llm_calls: The model calls it made.
    """

    number: int
    spec: TurnSpec
    replies: list[PlayedReply]
    steps: list[str]
    error: str | None
    llm_calls: list[LLMCall]


@dataclass
class Played:
    """A played conversation.

    Attributes:
        turns: Each turn played, in order.
        execution: The execution after the last turn, if any.
        flow: The flow it ran (None: no such flow).
    """

    turns: list[PlayedTurn] = field(default_factory=list)
    execution: ExecutionState | None = None
    flow: Flow | None = None


def play(
    spec: ConversationSpec,
    runner: Runner,
    llm: LLM,
    before_turn: Callable[[TurnSpec], None] | None = None,
) -> Played:
    """Send each turn's ``say`` through the real turn path on a throwaway database.

    Args:
        spec: The conversation.
        runner: The runner (its flows); its LLM is replaced by `llm`.
        llm: What answers the model calls.
        before_turn: Called before each turn (to script the model's answers).

    Returns:
        What each turn did; no turn at all when the flow is not loaded.
    """
    played = Played(flow=runner.flows.get(spec.flow or ""))
    if played.flow is None:
        return played
    turns = TurnService(throwaway_session(), dataclasses.replace(runner, llm=llm), split_body)
    contact = spec.contact or ContactSpec()
    address = f"whatsapp:{OUR_NUMBER}" if contact.channel == "whatsapp" else OUR_NUMBER
    try:
        for number, turn in enumerate(spec.turns, start=1):
            if before_turn is not None:
                before_turn(turn)
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
            result = outcome.result
            parts = outbound_parts(result.replies, split_body) if result else []
            replies = [
                PlayedReply(
                    text,
                    parts[index].step_id if index < len(parts) else None,
                    index < len(parts) and parts[index].usage is not None,
                )
                for index, text in enumerate(outcome.replies)
            ]
            played.turns.append(
                PlayedTurn(
                    number,
                    turn,
                    replies,
                    list(result.steps) if result else [],
                    outcome.error,
                    list(result.llm_calls) if result else [],
                )
            )
            if result is not None and result.execution is not None:
                played.execution = result.execution
    finally:
        turns.session.close()
        turns.session.get_bind().dispose()  # type: ignore[union-attr]
    return played


@dataclass
class ConversationResult:
    """How one conversation went.

    Attributes:
        name: ``file: conversation name``.
        passed: Whether every check held.
        report: On failure: where, the first difference, and the turn-by-turn diff.
        transcript: ``(contact says, bot replies)`` per turn run.
        spec: The conversation.
        flow_version: The version of the flow it ran on.
    """

    name: str
    passed: bool
    report: str = ""
    transcript: list[tuple[str, list[str]]] = field(default_factory=list)
    spec: ConversationSpec | None = None
    flow_version: str | None = None


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


def _step(steps: list[str | None] | None, index: int) -> str:
    if steps is None or index >= len(steps) or steps[index] is None:
        return ""
    return f" (step {steps[index]})"


def first_difference(
    expected: list[Expected] | Expect, got: list[str], steps: list[str | None] | None = None
) -> str | None:
    """The first difference between expected and actual replies, or None.

    Args:
        expected: The replies in order, or criteria for all of them together.
        got: The replies.
        steps: The step that wrote each reply, to name it.
    """
    if isinstance(expected, Expect):
        together = "\n".join(got)
        missed = expected.failures(together)
        if missed:
            return f"the replies {'; '.join(missed)}.\n  expected: {expected}\n  got:      " + (
                "\n            ".join(repr(reply) for reply in got) or "(no reply)"
            )
        return None
    for index, (want, reply) in enumerate(zip(expected, got, strict=False)):
        if not _matches(want, reply):
            text = (
                f"reply {index + 1}{_step(steps, index)} differs.\n"
                f"  expected: {_describe(want)}\n  got:      {reply!r}"
            )
            if isinstance(want, str):
                at = next(
                    (i for i, (a, b) in enumerate(zip(want, reply, strict=False)) if a != b),
                    min(len(want), len(reply)),
                )
                text += f"\n            first difference at character {at}"
            return text
    if len(got) > len(expected):
        extra = "\n".join(
            f"  got:      {reply!r}{_step(steps, len(expected) + index)}"
            for index, reply in enumerate(got[len(expected) :])
        )
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


def turn_difference(turn: PlayedTurn) -> str | None:
    """What differs in a scripted turn: its replies, or the number of model calls."""
    error = f"\n  (the turn failed: {turn.error})" if turn.error else ""
    if turn.spec.expect is not None:
        steps = [reply.step_id for reply in turn.replies]
        difference = first_difference(turn.spec.expect, [r.text for r in turn.replies], steps)
        if difference is not None:
            return difference + error
    if len(turn.llm_calls) != len(turn.spec.llm):
        return (
            f"the turn made {len(turn.llm_calls)} LLM call(s) "
            f"but scripted {len(turn.spec.llm)}{error}"
        )
    return None


def turn_by_turn(played: Played, differences: dict[int, str]) -> str:
    """The readable diff: each turn's contact message, steps run, and replies.

    A turn that held is one line with its steps; a turn that differs shows what
    was expected and what the bot said, naming the step of each reply.
    """
    lines = []
    for turn in played.turns:
        steps = " → ".join(turn.steps) or "(none)"
        mark = "✗" if turn.number in differences else "✓"
        lines.append(f"  {mark} turn {turn.number}  contact: {turn.spec.say!r}   steps: {steps}")
        if turn.number not in differences:
            continue
        expected = turn.spec.expect
        if isinstance(expected, list):
            for want in expected:
                lines.append(f"      expected: {_describe(want)}")
        elif isinstance(expected, Expect):
            lines.append(f"      expected: {expected} (all replies together)")
        for reply in turn.replies or [PlayedReply("(no reply)", None, False)]:
            where = f"  [{reply.step_id}]" if reply.step_id else ""
            lines.append(f"      got:      {reply.text!r}{where}")
        reason = differences[turn.number].splitlines()[0]
        failed = f" (the turn failed: {turn.error})" if turn.error else ""
        lines.append(f"      → {reason}{failed}")
    return "\n".join(lines)


def run_conversation(spec: ConversationSpec, runner: Runner, label: str) -> ConversationResult:
    """Run one conversation with its scripted model answers; never raises for a failed check.

    Every turn is played even after a difference, so that the report shows
    what a change to the flow does to the whole conversation.
    """
    llm = ScriptedLLM()
    played = play(spec, runner, llm, lambda turn: llm.script(turn.llm))
    transcript = [(turn.spec.say, [r.text for r in turn.replies]) for turn in played.turns]
    version = played.flow.version if played.flow else None
    if played.flow is None:
        known = ", ".join(runner.flows.flows) or "none"
        report = f"Conversation test failed at the start: no flow {spec.flow!r}; flows: {known}"
        return ConversationResult(label, False, report, transcript, spec)
    differences: dict[int, str] = {}
    for turn in played.turns:
        difference = turn_difference(turn)
        if difference is not None:
            differences[turn.number] = difference
    end = _end_difference(spec, played.execution)
    if not differences and end is None:
        return ConversationResult(label, True, "", transcript, spec, version)
    if differences:
        number = min(differences)
        where = f"turn {number} of {len(spec.turns)} ({spec.turns[number - 1].say!r})"
        headline = f"Conversation test failed at {where}: {differences[number]}"
    else:
        headline = f"Conversation test failed at the end: {end}"
    note = ""
    if spec.flow_version and spec.flow_version != version:
        note = (
            f"\nThe test was written for version {spec.flow_version} of {spec.flow}; "
            f"it ran on {version}."
        )
    report = f"{headline}{note}\nTurn by turn:\n{turn_by_turn(played, differences)}"
    if differences and end is not None:
        report += f"\n  ✗ the end: {end}"
    return ConversationResult(label, False, report, transcript, spec, version)


def _end_difference(spec: ConversationSpec, execution: ExecutionState | None) -> str | None:
    variables = execution.variables if execution else {}
    for name, value in spec.expect_vars.items():
        if name not in variables:
            return f"vars.{name} is not set (variables: {variables})"
        if variables[name] != value:
            return f"vars.{name} differs.\n  expected: {value!r}\n  got:      {variables[name]!r}"
    status = execution.status if execution else None
    if spec.expect_status is not None and status != spec.expect_status:
        return f"the execution is {status!r}, expected {spec.expect_status!r}"
    return None


def find_test_files(target: Path) -> list[Path]:
    """The test files at `target`: the file itself, or a folder's ``*.yaml``/``*.yml``."""
    if target.is_file():
        return [target]
    return sorted([*target.glob("*.yaml"), *target.glob("*.yml")])


def read_plan(target: Path) -> list[tuple[Path, ConversationSpec]]:
    """Every conversation of the test files at `target`, with its file.

    Raises:
        FlowTestError: a test file cannot be read.
    """
    return [
        (path, conversation)
        for path in find_test_files(target)
        for conversation in read_test_file(path)
    ]


def with_flow_version(runner: Runner, flow: Flow) -> Runner:
    """`runner` with `flow` (another version of one of its flows) in place of the current one."""
    flows = FlowSet(flows={**runner.flows.flows, flow.id: flow}, archive=runner.flows.archive)
    return dataclasses.replace(runner, flows=flows)


def run_test_files(target: Path, runner: Runner) -> list[ConversationResult]:
    """Run every conversation of the test files at `target` against `runner`'s flows.

    Raises:
        FlowTestError: a test file cannot be read (nothing is run then).
    """
    return [
        run_conversation(conversation, runner, f"{path}: {conversation.name}")
        for path, conversation in read_plan(target)
    ]
