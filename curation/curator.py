"""Curating a conversation: redaction, summary, tags, rating, publishing.

Every change is written to `AuditEvent` with who made it and when. The
redacted text of each message is stored in `RedactedMessage`, apart from the
original; publishing fills in, from the detectors' suggestions, the redaction
of any message a curator has not reviewed, so that a published conversation
never falls back to an original text.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from curation import redaction
from engine.ports import LLM, LLMError, LLMRequest
from models.curation import AuditEvent, ConversationTag, Curation, RedactedMessage
from models.entities import Contact, Conversation, Message, utcnow

log = logging.getLogger("parley.curation")

MAX_TAGS = 20
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

DRAFT_SYSTEM = (
    "You summarise a coaching conversation for a public website. Write the question "
    "the person brought (one sentence, first person), the gist of the answer they got "
    "(two to four sentences), and a teaser of at most 15 words. Keep placeholders such "
    "as [NAME] or [PHONE] out of your text; add no private details."
)
DRAFT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "answer": {"type": "string"},
        "teaser": {"type": "string"},
    },
    "required": ["question", "answer", "teaser"],
    "additionalProperties": False,
}


class CurationError(ValueError):
    """A curation change is not allowed or malformed; the message says why."""


@dataclass
class Suggestion:
    """A message with what the detectors found in it.

    Attributes:
        message: The message.
        spans: What the detectors found in its original text.
        suggested: The original with every span replaced.
        redacted: The stored redacted text, if a curator reviewed it.
    """

    message: Message
    spans: list[redaction.Span]
    suggested: str
    redacted: str | None

    @property
    def segments(self) -> list[tuple[str, str | None]]:
        """The original cut into pieces for highlighting."""
        return redaction.segments(self.message.body, self.spans)


class Curator:
    """Curation changes made by one person.

    Args:
        session: The SQLAlchemy session; the caller commits.
        actor: Who is acting (a user's e-mail), recorded with every change.
        region: ``REDACTION_REGION``: the region(s) of phone numbers written without a
            country code (``US``, or several: ``US,GB``); the contact's own
            country is added for each conversation.

    Raises:
        ValueError: `region` names a region libphonenumber does not know.
    """

    def __init__(self, session: Session, actor: str, region: str = "US") -> None:
        self.session = session
        self.actor = actor
        self.region = region
        redaction.parse_regions(region)  # a typo must not quietly redact less

    def curation(self, conversation_id: int) -> Curation:
        """The conversation's curation row, created on first use.

        Raises:
            CurationError: there is no such conversation.
        """
        row = self.session.get(Curation, conversation_id)
        if row is None:
            if self.session.get(Conversation, conversation_id) is None:
                raise CurationError(f"no conversation {conversation_id}")
            row = Curation(conversation_id=conversation_id, updated_by=self.actor)
            self.session.add(row)
            self.session.flush()
        return row

    def _record(self, conversation_id: int, action: str, **detail: Any) -> None:
        row = self.curation(conversation_id)
        row.updated_by = self.actor
        row.updated_at = utcnow()
        self.session.add(
            AuditEvent(
                actor=self.actor,
                action=action,
                conversation_id=conversation_id,
                detail=detail,
                at=utcnow(),
            )
        )

    def _context(self, conversation_id: int) -> redaction.Context:
        contact = self.session.execute(
            sa.select(Contact.name, Contact.phone)
            .join(Conversation, Conversation.contact_id == Contact.id)
            .where(Conversation.id == conversation_id)
        ).first()
        name, phone = contact if contact is not None else (None, None)
        return redaction.Context(
            regions=redaction.regions_for(self.region, phone), names=(name,) if name else ()
        )

    def suggestions(self, conversation_id: int) -> list[Suggestion]:
        """Each message of the conversation with the detectors' suggestions."""
        context = self._context(conversation_id)
        stored = dict(
            self.session.execute(
                sa.select(RedactedMessage.message_id, RedactedMessage.text).where(
                    RedactedMessage.conversation_id == conversation_id
                )
            ).all()
        )
        rows = self.session.scalars(
            sa.select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at, Message.id)
        )
        result = []
        for message in rows:
            spans = redaction.find(message.body, context)
            suggested = redaction.apply(message.body, spans)
            result.append(Suggestion(message, spans, suggested, stored.get(message.id)))
        return result

    def _store_redaction(self, message: Message, text: str, reviewer: str) -> None:
        row = self.session.get(RedactedMessage, message.id)
        if row is None:
            row = RedactedMessage(message_id=message.id, conversation_id=message.conversation_id)
            self.session.add(row)
        row.text = text
        row.reviewed_by = reviewer
        row.reviewed_at = utcnow()

    def redact_message(self, conversation_id: int, message_id: int, text: str | None) -> None:
        """Store a message's redacted text: `text` as edited, or (None) the suggestion.

        Raises:
            CurationError: the message is not in that conversation.
        """
        message = self.session.get(Message, message_id)
        if message is None or message.conversation_id != conversation_id:
            raise CurationError(f"no message {message_id} in conversation {conversation_id}")
        edited = text is not None
        if text is None:
            text = redaction.redact(message.body, self._context(conversation_id))
        self._store_redaction(message, text.strip(), self.actor)
        self._record(conversation_id, "curation.redact", message_id=message_id, edited=edited)

    def accept_all(self, conversation_id: int) -> int:
        """Accept the suggestions for every message not reviewed yet; returns how many."""
        count = 0
        for suggestion in self.suggestions(conversation_id):
            if suggestion.redacted is None:
                self._store_redaction(suggestion.message, suggestion.suggested, self.actor)
                count += 1
        self._record(conversation_id, "curation.redact_all", messages=count)
        return count

    def set_summary(self, conversation_id: int, question: str, answer: str, teaser: str) -> None:
        """Set the summary question, answer and teaser (a person approves a draft here)."""
        row = self.curation(conversation_id)
        row.summary_question = question.strip()
        row.summary_answer = answer.strip()
        row.teaser = teaser.strip()
        self._record(conversation_id, "curation.summary")

    def set_tags(self, conversation_id: int, tags: list[str]) -> list[str]:
        """Replace the conversation's tags (lower-case letters, digits, ``-``, ``_``).

        Raises:
            CurationError: a tag is malformed, or there are more than `MAX_TAGS`.
        """
        clean = sorted({tag.strip().lower() for tag in tags if tag.strip()})
        bad = [tag for tag in clean if not _TAG.match(tag)]
        if bad:
            raise CurationError(
                f"bad tag(s) {', '.join(bad)}: use letters, digits, - and _ (at most 64)"
            )
        if len(clean) > MAX_TAGS:
            raise CurationError(f"at most {MAX_TAGS} tags")
        self.curation(conversation_id)
        self.session.execute(
            sa.delete(ConversationTag).where(ConversationTag.conversation_id == conversation_id)
        )
        self.session.add_all(ConversationTag(conversation_id=conversation_id, tag=t) for t in clean)
        self._record(conversation_id, "curation.tags", tags=clean)
        return clean

    def set_rating(self, conversation_id: int, rating: int | None) -> None:
        """Rate the conversation 1 to 5, or clear the rating (None).

        Raises:
            CurationError: the rating is outside 1 to 5.
        """
        if rating is not None and not 1 <= rating <= 5:
            raise CurationError("the rating is 1 to 5")
        self.curation(conversation_id).rating = rating
        self._record(conversation_id, "curation.rating", rating=rating)

    def publish(self, conversation_id: int) -> int:
        """Publish the conversation; returns how many redactions were filled in.

        Raises:
            CurationError: the summary question or answer is empty.
        """
        row = self.curation(conversation_id)
        if not row.summary_question or not row.summary_answer:
            raise CurationError("write the summary question and answer before publishing")
        filled = 0
        for suggestion in self.suggestions(conversation_id):
            if suggestion.redacted is None:
                self._store_redaction(suggestion.message, suggestion.suggested, "auto")
                filled += 1
        row.published = True
        row.published_at = utcnow()
        self._record(conversation_id, "curation.publish", auto_redacted=filled)
        return filled

    def unpublish(self, conversation_id: int) -> None:
        """Take the conversation off the public API."""
        row = self.curation(conversation_id)
        row.published = False
        self._record(conversation_id, "curation.unpublish")

    def draft_summary(self, conversation_id: int, llm: LLM, model: str) -> dict[str, str]:
        """Ask the LLM for a summary draft, from the redacted texts; nothing is saved.

        Returns:
            ``{"question", "answer", "teaser"}``.

        Raises:
            CurationError: the LLM failed (the message says why).
        """
        lines = []
        for suggestion in self.suggestions(conversation_id):
            who = "Person" if suggestion.message.author == "contact" else "Coach"
            lines.append(f"{who}: {suggestion.redacted or suggestion.suggested}")
        request = LLMRequest(
            model=model,
            messages=[
                {"role": "system", "content": DRAFT_SYSTEM},
                {"role": "user", "content": "\n".join(lines) or "(no messages)"},
            ],
            temperature=0.3,
            output_schema=DRAFT_SCHEMA,
            schema_name="summary",
        )
        try:
            response = llm.complete(request)
        except LLMError as error:
            log.warning("curation.draft_failed conversation=%s reason=%s", conversation_id, error)
            raise CurationError(f"the LLM could not draft a summary: {error}") from error
        data = response.data or {}
        return {key: str(data.get(key, "")) for key in ("question", "answer", "teaser")}
