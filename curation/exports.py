"""Exports of curated conversations: JSONL for fine-tuning, CSV, conversation tests.

Only redacted text leaves: a message a curator has not reviewed is exported
with the detectors' suggested redaction, never its original body.

- JSONL: one conversation per line in OpenAI's chat fine-tuning format,
  ``{"messages": [{"role": "user" | "assistant", "content": ...}]}``
  (platform.openai.com/docs/guides/fine-tuning, "Preparing your dataset").
- CSV: one row per message, with the conversation's curation repeated.
- YAML: one conversation test per conversation (`curation.conversation_tests`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from curation import conversation_tests, transcripts
from curation.curator import Curator
from models.curation import Curation
from models.entities import Conversation

FORMATS = ("jsonl", "csv", "yaml")
CSV_COLUMNS = (
    "conversation_id",
    "channel",
    "flow_id",
    "published",
    "question",
    "answer",
    "teaser",
    "tags",
    "rating",
    "position",
    "role",
    "step_id",
    "text",
)


@dataclass
class ExportedMessage:
    """One message as exported."""

    role: str
    """``user`` (the contact) or ``assistant`` (the bot, an agent, the system)."""
    text: str
    step_id: str | None
    flow_id: str | None


@dataclass
class ExportedConversation:
    """One curated conversation, redacted."""

    id: int
    channel: str
    curation: Curation
    tags: list[str]
    messages: list[ExportedMessage]
    session: Session | None = field(default=None, repr=False)
    """Where it was read from (the YAML writer reads the model's answers there)."""

    @property
    def flow_id(self) -> str | None:
        """The first flow its messages belong to."""
        return next((m.flow_id for m in self.messages if m.flow_id), None)


def curated(session: Session, published_only: bool = True) -> Iterator[ExportedConversation]:
    """The curated (by default: published) conversations, oldest first, redacted."""
    query = (
        sa.select(Conversation.id, Conversation.channel, Curation)
        .join(Curation, Curation.conversation_id == Conversation.id)
        .order_by(Conversation.id)
    )
    if published_only:
        query = query.where(Curation.published.is_(True))
    curator = Curator(session, "export")
    for conversation_id, channel, curation in session.execute(query).all():
        messages = [
            ExportedMessage(
                role="user" if s.message.author == "contact" else "assistant",
                text=s.redacted if s.redacted is not None else s.suggested,
                step_id=s.message.step_id,
                flow_id=s.message.flow_id,
            )
            for s in curator.suggestions(conversation_id)
            if s.message.body
        ]
        tags = transcripts.tags_of(session, [conversation_id]).get(conversation_id, [])
        yield ExportedConversation(conversation_id, channel, curation, tags, messages, session)


def write_jsonl(conversations: Iterator[ExportedConversation], out: IO[str]) -> int:
    """Write OpenAI chat fine-tuning lines; returns how many conversations."""
    count = 0
    for conversation in conversations:
        messages = [{"role": m.role, "content": m.text} for m in conversation.messages]
        out.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
        count += 1
    return count


#: What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise(cell: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a line break (or
    their full-width forms, which some spreadsheets also accept) gets a leading
    ``'``, as OWASP's CSV Injection page recommends; the writer quotes cells and
    doubles quotes inside them. Numbers are left as they are.
    """
    if isinstance(cell, str) and cell.startswith(FORMULA_TRIGGERS):
        return "'" + cell
    return cell


def write_csv(conversations: Iterator[ExportedConversation], out: IO[str]) -> int:
    """Write one CSV row per message, with a header; returns how many conversations.

    Every text cell goes through `neutralise` (what a contact wrote is data,
    never a formula).
    """
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for conversation in conversations:
        curation = conversation.curation
        for position, message in enumerate(conversation.messages, start=1):
            writer.writerow(
                neutralise(cell)
                for cell in (
                    conversation.id,
                    conversation.channel,
                    message.flow_id or "",
                    "yes" if curation.published else "no",
                    curation.summary_question,
                    curation.summary_answer,
                    curation.teaser,
                    ",".join(conversation.tags),
                    curation.rating or "",
                    position,
                    message.role,
                    message.step_id or "",
                    message.text,
                )
            )
        count += 1
    return count


def write_yaml(conversations: Iterator[ExportedConversation], out: IO[str]) -> int:
    """Write the conversations as conversation tests, one YAML document each.

    Each is `curation.conversation_tests.build`'s test (what ``flask transcripts
    to-test`` writes); a conversation that cannot be one is a comment saying why.
    """
    count = 0
    for conversation in conversations:
        if count:
            out.write("---\n")
        assert conversation.session is not None
        try:
            test = conversation_tests.build(conversation.session, conversation.id)
        except conversation_tests.ConversionError as error:
            out.write(f"# {error}\n")
        else:
            out.write(test.yaml())
        count += 1
    return count


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "yaml": write_yaml}
MEDIA_TYPES = {"jsonl": "application/jsonl", "csv": "text/csv", "yaml": "application/yaml"}
