"""A transcript as a conversation test for its flow (`conversation.flow_tests`' format).

The one way a stored conversation becomes a test, used by ``flask transcripts
to-test``, the console's "Save as test" and ``flask transcripts export
--format yaml``::

    # Saved from conversation 12 …
    flow: goal_setting
    flow_version: 3f2a9c01b7de          # the version the conversation ran on
    source: {conversation: 12}
    contact: {phone: "+15550100100", channel: whatsapp, name: "[NAME]"}
    tests:
      - name: conversation 12
        turns:
          - say: hello
            expect: ["Hi [NAME]! …", "Which matters most …?"]
          - say: "2"
            llm: [{reply: "Movement it is! …", goal: "", agreed: false}]
            expect: ["Movement it is! …"]

What the contact said becomes ``say``; what the model answered at each turn
(`Message.llm_calls`, structured output included) the scripted ``llm``
answers; what the bot said ``expect``. Replies the flow did not write
(responders, a handover note) are left out; the test stops where a person took
over, or where the conversation went on in another flow.

Redaction: the contact's messages are the curation's redacted texts where a
curator reviewed them, else the detectors' suggestions (`curation.redaction`).
The bot's replies and the model's outputs get the same treatment for what is
the contact's (what the curator or the detectors took out of the contact's
messages, the contact's number and name, any e-mail, phone number or address
the detectors find) but keep the flow's own words (a number written in the
flow file is not the contact's), so that the flow, replayed on the redacted
messages, says what the test expects. The contact becomes a fictional
``+15550100100`` named ``[NAME]``.

A turn the designer marks as wrong (`Mark`) gets the designer's expectation
instead of what the bot said: ``expect: {not_contains: …}`` (and the same
criterion for live runs), or a corrected reply; when the model wrote the
reply, the corrected text is also its scripted answer.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session

from curation import redaction
from curation.curator import Curator
from models.entities import Contact, Conversation, Execution
from models.runtime import FlowVersion

if TYPE_CHECKING:
    from conversation.flow_tests import ConversationResult
    from engine.flow import FlowSet
    from engine.runner import Runner

#: The contact of every saved test: a fictional number (555-01xx is reserved).
TEST_PHONE = "+15550100100"
#: What the contact's name becomes (the name detector's placeholder).
TEST_NAME = "[NAME]"


class ConversionError(ValueError):
    """The conversation cannot become a test; the message says why."""


@dataclass(frozen=True)
class Mark:
    """A turn the designer marks as wrong, and what it should have been.

    Attributes:
        turn: The turn's number in the test (1 for the first).
        not_contains: Text the turn's replies must not contain.
        reply: The corrected reply (replaces what the bot said; the model's
            answer too, when the model wrote it).
    """

    turn: int
    not_contains: str | None = None
    reply: str | None = None


@dataclass
class SavedTest:
    """A conversation as a test.

    Attributes:
        document: The test file's content (`conversation.flow_tests` format).
        flow_id: The flow it runs.
        flow_version: The version the conversation ran on, if known.
        conversation_id: The conversation it came from.
        notes: What was left out, and why.
    """

    document: dict[str, Any]
    flow_id: str
    flow_version: str | None
    conversation_id: int
    notes: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        """The test file's text, with a comment saying where it came from."""
        header = (
            f"# Saved from conversation {self.conversation_id} (flow {self.flow_id}, "
            f"version {self.flow_version or 'unknown'}), redacted.\n"
            "# Run it with `flask flows test FILE`; `--live` asks the real model.\n"
        )
        return header + dump(self.document)


def dump(document: dict[str, Any]) -> str:
    """The document as YAML text (block style, Unicode kept)."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


@dataclass
class _Redactor:
    """Takes the contact's details out of bot replies and model outputs."""

    context: redaction.Context
    keep: str
    """The flow file's text: what appears there is the flow's, not the contact's."""
    replacements: dict[str, str] = field(default_factory=dict)
    """Original pieces of the contact's messages → what the curation put instead."""
    phone_digits: str = ""

    def learn(self, original: str, redacted: str) -> None:
        """Note what the curation (or the detectors) replaced in a contact's message."""
        matcher = difflib.SequenceMatcher(a=original, b=redacted, autojunk=False)
        for kind, i1, i2, j1, j2 in matcher.get_opcodes():
            piece = original[i1:i2].strip()
            if kind in ("replace", "delete") and len(piece) >= 3:
                self.replacements.setdefault(piece, redacted[j1:j2].strip() or "[REDACTED]")

    def text(self, text: str) -> str:
        """`text` without the contact's details, the flow's own words kept."""
        for piece in sorted(self.replacements, key=len, reverse=True):
            text = text.replace(piece, self.replacements[piece])
        spans = [
            span
            for span in redaction.find(text, self.context)
            if span.kind == "name"
            or (
                text[span.start : span.end] not in self.keep
                and text[span.start : span.end] != TEST_PHONE
            )
        ]
        pieces, position = [], 0
        for span in spans:
            pieces.append(text[position : span.start])
            found = text[span.start : span.end]
            same_number = span.kind == "phone" and _digits(found).endswith(self.phone_digits[-10:])
            pieces.append(TEST_PHONE if same_number and self.phone_digits else span.placeholder)
            position = span.end
        pieces.append(text[position:])
        return "".join(pieces)

    def value(self, value: Any) -> Any:
        """A model output with every text in it redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _scripted(call: dict[str, Any], redactor: _Redactor) -> dict[str, Any] | str:
    """A recorded model call as a scripted ``llm`` answer."""
    if "error" in call:
        return {"error": str(call["error"])}
    if "output" in call and isinstance(call["output"], dict):
        return redactor.value(call["output"])
    return redactor.text(str(call.get("text", "")))


def build(
    session: Session,
    conversation_id: int,
    marks: list[Mark] | tuple[Mark, ...] = (),
    region: str = "US",
    name: str | None = None,
    flows: FlowSet | None = None,
) -> SavedTest:
    """The conversation as a conversation test, redacted.

    Args:
        session: Reads the conversation, its curation and the flow's stored versions.
        conversation_id: The conversation.
        marks: Turns the designer marks as wrong.
        region: Region for phone numbers written without a country code.
        name: The test's name (default ``conversation N``).
        flows: The loaded flows, for the flow's own words when its version is
            not stored (`conversation.versions`).

    Raises:
        ConversionError: no such conversation, no flow ran in it, no message
            of the contact to replay, or a mark names a turn the test lacks.
    """
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise ConversionError(f"no conversation {conversation_id}")
    contact = session.get_one(Contact, conversation.contact_id)
    suggestions = Curator(session, "to-test", region).suggestions(conversation_id)
    first = next(
        (s.message for s in suggestions if s.message.direction == "inbound" and s.message.flow_id),
        None,
    )
    if first is None:
        raise ConversionError(
            f"conversation {conversation_id}: no flow ran on the contact's messages"
        )
    flow_id = first.flow_id
    assert flow_id is not None
    execution = session.get(Execution, first.execution_id) if first.execution_id else None
    version = execution.flow_version if execution else None
    flow_text = (
        session.scalar(
            sa.select(FlowVersion.text).where(
                FlowVersion.flow_id == flow_id, FlowVersion.version == version
            )
        )
        or ""
    )
    loaded = flows.get(flow_id) if flows is not None else None
    if not flow_text and loaded is not None and loaded.version == version:
        flow_text = Path(loaded.source).read_text(encoding="utf-8")
    redactor = _Redactor(
        redaction.Context(
            regions=redaction.regions_for(region, contact.phone),
            names=(contact.name,) if contact.name else (),
        ),
        keep=flow_text,
        phone_digits=_digits(contact.phone),
    )
    notes: list[str] = []
    turns: list[dict[str, Any]] = []
    for suggestion in suggestions:
        message = suggestion.message
        if message.direction == "inbound":
            if message.flow_id not in (None, flow_id):
                notes.append(f"stopped at message {message.id}: it went on in {message.flow_id}")
                break
            if message.turn_status == "skipped":
                notes.append(f"stopped at message {message.id}: a person had the conversation")
                break
            if message.author != "contact" or message.flow_id is None:
                continue  # no flow ran on it (a responder answered): not replayable
            said = suggestion.redacted if suggestion.redacted is not None else suggestion.suggested
            redactor.learn(message.body, said)
            turn: dict[str, Any] = {"say": said}
            calls = [_scripted(call, redactor) for call in message.llm_calls or []]
            if calls:
                turn["llm"] = calls
            turn["expect"] = []
            turns.append(turn)
            continue
        if message.author.startswith("agent:"):
            notes.append(f"stopped at message {message.id}: a person answered")
            break
        if message.author == "system" and message.step_id is None:
            continue  # a responder's answer or a note: not the flow's
        if not turns:
            notes.append(f"left out message {message.id}: the bot spoke before the contact")
            continue
        turns[-1]["expect"].append(redactor.text(message.body))
        turns[-1].setdefault("_by_model", []).append(message.model is not None)
    if not turns:
        raise ConversionError(f"conversation {conversation_id}: no message of the contact")
    for mark in marks:
        _apply(turns, mark)
    for turn in turns:
        turn.pop("_by_model", None)
    document: dict[str, Any] = {
        "flow": flow_id,
        **({"flow_version": version} if version else {}),
        "source": {"conversation": conversation_id},
        "contact": {
            "phone": TEST_PHONE,
            "channel": conversation.channel,
            **({"name": TEST_NAME} if contact.name else {}),
        },
        "tests": [{"name": name or f"conversation {conversation_id}", "turns": turns}],
    }
    return SavedTest(document, flow_id, version, conversation_id, notes)


def _apply(turns: list[dict[str, Any]], mark: Mark) -> None:
    """Put the designer's expectation on a turn marked wrong."""
    if not 1 <= mark.turn <= len(turns):
        raise ConversionError(f"there is no turn {mark.turn}: the test has {len(turns)} turn(s)")
    turn = turns[mark.turn - 1]
    if mark.not_contains:
        turn["expect"] = {"not_contains": mark.not_contains}
        turn["live"] = {"not_contains": mark.not_contains}
    if mark.reply is not None:
        replies: list[str] = turn["expect"] if isinstance(turn["expect"], list) else []
        by_model: list[bool] = turn.get("_by_model", [])
        written = [index for index, model in enumerate(by_model) if model]
        index = written[-1] if written else len(replies) - 1
        if index < 0:
            turn["expect"] = [mark.reply]
            return
        wrong = replies[index]
        replies[index] = mark.reply
        turn["expect"] = replies
        for position, answer in enumerate(turn.get("llm", [])):
            if isinstance(answer, dict) and answer.get("reply") == wrong:
                turn["llm"][position] = {**answer, "reply": mark.reply}
            elif answer == wrong:
                turn["llm"][position] = mark.reply


def default_path(tests_dir: Path, test: SavedTest) -> Path:
    """Where a saved test goes by default: ``TESTS_DIR/<flow>_conversation_<id>.yaml``."""
    return tests_dir / f"{test.flow_id}_conversation_{test.conversation_id}.yaml"


def save(test: SavedTest, path: Path, runner: Runner) -> ConversationResult:
    """Write the test file, then run it as ``flask flows test`` would.

    Returns:
        How the saved test went against `runner`'s flows (it passes at once
        unless a turn is marked wrong or the flow changed since).
    """
    from conversation.flow_tests import read_test_file, run_conversation

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(test.yaml(), encoding="utf-8")
    (spec,) = read_test_file(path)
    return run_conversation(spec, runner, f"{path}: {spec.name}")


def tests_of_conversation(tests_dir: Path, conversation_id: int) -> list[tuple[Path, str]]:
    """The saved tests in `tests_dir` that came from a conversation: ``(file, test name)``."""
    found = []
    for path in sorted([*tests_dir.glob("*.yaml"), *tests_dir.glob("*.yml")]):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(data, dict):
            continue
        top = data.get("source") if isinstance(data.get("source"), dict) else {}
        for test in data.get("tests") or [data]:
            if not isinstance(test, dict):
                continue
            source = test.get("source") if isinstance(test.get("source"), dict) else top
            if source.get("conversation") == conversation_id:
                found.append((path, str(test.get("name") or "")))
    return found
