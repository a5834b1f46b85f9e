"""The SQL implementation of `engine.ports.ExecutionStore`, and the transcript writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from engine.ports import Channel, ExecutionState, HistoryMessage, LLMUsage
from models.entities import (
    OPEN_STATUSES,
    Contact,
    Conversation,
    Execution,
    Message,
    utcnow,
)

# Core tables for the hot path: statements on them skip the ORM's bulk-DML layer.
contact_table: sa.Table = Contact.__table__  # type: ignore[assignment]
conversation_table: sa.Table = Conversation.__table__  # type: ignore[assignment]
message_table: sa.Table = Message.__table__  # type: ignore[assignment]
execution_table: sa.Table = Execution.__table__  # type: ignore[assignment]

#: No media is SQL NULL, not JSON ``null`` (JSON's default for None).
_MEDIA_NONE_AS_NULL = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
_INSERT_MESSAGE = (
    sa.insert(message_table)
    .values(media=sa.bindparam("media", type_=_MEDIA_NONE_AS_NULL))
    .returning(message_table.c.id)
)

#: Hot-path writes, built once: their SET clauses come from each call's
#: parameters (SQLAlchemy caches a compiled form per set of keys), so nothing
#: is built, and no cache key computed, per turn.
_UPDATE_EXECUTION = sa.update(execution_table).where(
    execution_table.c.id == sa.bindparam("execution_id")
)
_END_EXECUTION = _UPDATE_EXECUTION.values(
    ended_at=sa.func.coalesce(execution_table.c.ended_at, sa.bindparam("ended_now"))
)
_INSERT_EXECUTION = sa.insert(execution_table).returning(execution_table.c.id)
_FINISH_INBOUND = sa.update(message_table).where(message_table.c.id == sa.bindparam("finished_id"))
#: The conversation's last_message_at moves up to an inbound message's arrival
#: (``finished_id``), never back. Also the turn's controller read
#: (`models.turn_store`), which adds RETURNING.
STAMP_CONVERSATION = (
    sa.update(conversation_table)
    .where(
        message_table.c.id == sa.bindparam("finished_id"),
        conversation_table.c.id == message_table.c.conversation_id,
    )
    .values(
        last_message_at=sa.case(
            (
                conversation_table.c.last_message_at < message_table.c.created_at,
                message_table.c.created_at,
            ),
            else_=conversation_table.c.last_message_at,
        )
    )
)

_OPEN_EXECUTION = (
    sa.select(execution_table)
    .where(
        execution_table.c.contact_id == sa.bindparam("contact_id"),
        execution_table.c.status.in_(OPEN_STATUSES),
    )
    .order_by(execution_table.c.id.desc())
    .limit(1)
)


@dataclass(frozen=True)
class StoredInbound:
    """An inbound message as stored, with the ids the turn needs.

    Attributes:
        message_id: The message row.
        contact_id: The contact row.
        conversation_id: The conversation row.
    """

    message_id: int
    contact_id: int
    conversation_id: int


@dataclass(frozen=True)
class OutboundPart:
    """One outbound message to store (a reply, or one part of a split reply).

    Attributes:
        body: The text, at most one Twilio message long.
        author: ``bot``, ``system`` or ``agent:<id>``.
        step_id: The step that produced it.
        usage: LLM model, tokens and latency, on the first part of an LLM reply.
    """

    body: str
    author: str = "bot"
    step_id: str | None = None
    usage: LLMUsage | None = None
    template: dict[str, Any] | None = None
    """A WhatsApp template (``{"content_sid", "content_variables"}``) to send
    instead outside the 24-hour window; kept as ``media = {"template": ...}``."""
    media_url: str | None = None
    """An image or document sent with the text (a ``say`` step's ``media``);
    kept as ``media = {"urls": [url]}``."""
    delay_seconds: float = 0.0
    """Wait this long before sending it (a ``say`` step's ``delay``); kept as
    ``media = {"delay_seconds": ...}``."""

    def media_column(self) -> dict[str, Any] | None:
        """What the row's ``media`` column keeps for this part, or None."""
        media: dict[str, Any] = {}
        if self.template:
            media["template"] = self.template
        if self.media_url:
            media["urls"] = [self.media_url]
        if self.delay_seconds:
            media["delay_seconds"] = self.delay_seconds
        return media or None


_STORE_KNOWN: dict[Any, Any] = {}


def _dialect_insert(dialect: str, table: Any) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the dialect (PostgreSQL or SQLite)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _store_known(dialect: str) -> Any:
    """INSERT ... SELECT of an inbound message for a known contact and conversation.

    Built once per dialect (for ON CONFLICT): it runs for every webhook. Parameters: ``phone``,
    ``channel``, ``address`` and the message's columns; returns the message's
    id, conversation_id, contact_id and the contact's stored name.
    """
    if dialect not in _STORE_KNOWN:
        contact, conversation, message = contact_table.c, conversation_table.c, message_table.c
        columns = (
            "media",
            "direction",
            "author",
            "body",
            "message_sid",
            "status",
            "turn_status",
            "created_at",
        )
        source = (
            sa.select(
                conversation.id,
                contact.id,
                sa.bindparam("media", type_=_MEDIA_NONE_AS_NULL),
                *(sa.bindparam(name, type_=message[name].type) for name in columns[1:]),
            )
            .join(contact_table, contact.id == conversation.contact_id)
            .where(
                contact.phone == sa.bindparam("phone"),
                conversation.channel == sa.bindparam("channel"),
                conversation.address == sa.bindparam("address"),
            )
        )
        stored_name = (
            sa.select(contact.name)
            # RETURNING does not correlate: name the inserted row's column.
            .where(contact.id == sa.literal_column("message.contact_id"))
            .scalar_subquery()
        )
        _STORE_KNOWN[dialect] = (
            _dialect_insert(dialect, message_table)
            .from_select(["conversation_id", "contact_id", *columns], source)
            .on_conflict_do_nothing(index_elements=["message_sid"])
            .returning(message.id, message.conversation_id, message.contact_id, stored_name)
        )
    return _STORE_KNOWN[dialect]


class SqlStore:
    """Reads and writes one turn's rows inside the caller's transaction.

    Args:
        session: The SQLAlchemy session; the caller begins and commits. For
            `store_inbound` alone, also a Core connection (the webhook's, in
            autocommit: see `conversation.turn.store_incoming`).
    """

    def __init__(self, session: Session | sa.Connection) -> None:
        self.session = session

    def _dialect(self) -> str:
        session = self.session
        bind = session if isinstance(session, sa.Connection) else session.get_bind()
        return bind.dialect.name

    def _insert(self, table: Any) -> Any:
        return _dialect_insert(self._dialect(), table)

    def upsert_contact(self, phone: str, name: str | None, *, insert_first: bool = False) -> int:
        """The contact's id, creating the contact on first sight (race-safe).

        Looks first and inserts only when missing: one query when the contact
        exists. With `insert_first` (the caller expects a new contact: the
        webhook found none), inserts first and looks only when the insert
        met an existing row: one statement for a new contact.
        """
        row = None
        if not insert_first:
            row = self.session.execute(
                sa.select(Contact.id, Contact.name).where(Contact.phone == phone)
            ).first()
        if row is None:
            now = utcnow()
            row = self.session.execute(
                self._insert(Contact)
                .values(phone=phone, name=name, created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=["phone"])
                .returning(Contact.id, Contact.name)
            ).first()
        if row is None:  # it was there after all (or another request just made it)
            row = self.session.execute(
                sa.select(Contact.id, Contact.name).where(Contact.phone == phone)
            ).one()
        if name and row.name != name:
            self.session.execute(
                sa.update(Contact)
                .where(Contact.id == row.id)
                .values(name=name, updated_at=utcnow())
            )
        return row.id

    def upsert_conversation(
        self, contact_id: int, channel: Channel, address: str, *, insert_first: bool = False
    ) -> int:
        """The conversation's id on this channel and sender address (race-safe).

        `insert_first` as in `upsert_contact`.
        """
        where = (
            Conversation.contact_id == contact_id,
            Conversation.channel == channel,
            Conversation.address == address,
        )
        if not insert_first:
            found = self.session.scalar(sa.select(Conversation.id).where(*where))
            if found is not None:
                return found
        now = utcnow()
        created = self.session.scalar(
            self._insert(Conversation)
            .values(
                contact_id=contact_id,
                channel=channel,
                address=address,
                controlled_by="bot",
                created_at=now,
                last_message_at=now,
            )
            .on_conflict_do_nothing(index_elements=["contact_id", "channel", "address"])
            .returning(Conversation.id)
        )
        if created is not None:
            return created
        return self.session.scalars(sa.select(Conversation.id).where(*where)).one()

    def store_inbound(
        self,
        *,
        phone: str,
        name: str | None,
        channel: Channel,
        address: str,
        body: str,
        message_sid: str,
        media: Sequence[str] = (),
        details: Mapping[str, Any] | None = None,
    ) -> StoredInbound | None:
        """Store an inbound message first, keyed by its ``MessageSid``.

        `details` (media content types, a WhatsApp button, a location) are kept
        beside the media URLs: ``media = {"urls": [...], "types": [...],
        "button": {...}, "location": {...}}``.

        Returns:
            The stored ids, or None when that ``MessageSid`` is already stored
            (Twilio delivered it twice).
        """
        now = utcnow()
        media_value = {"urls": list(media), **(details or {})} if media or details else None
        fields = {
            "direction": "inbound",
            "author": "contact",
            "body": body,
            "message_sid": message_sid,
            "status": "received",
            "turn_status": "pending",
            "created_at": now,
        }
        # The common case, a known contact writing on a known conversation, is
        # one statement: INSERT ... SELECT finds the ids and stores the message
        # (and returns the contact's stored name). Nothing here waits for a
        # row lock (a turn holds the contact's, a send the conversation's): the
        # turn stamps the conversation's last_message_at (`finish_inbound`).
        message = message_table.c
        row = self.session.execute(
            _store_known(self._dialect()),
            {
                "phone": phone,
                "channel": channel,
                "address": address,
                "media": media_value,
                **fields,
            },
        ).first()
        if row is not None:
            message_id, conversation_id, contact_id, known_name = row
            if name and known_name != name:
                self._rename(contact_id, name, now)
            return StoredInbound(message_id, contact_id, conversation_id)
        # A new contact or conversation (or, rarely, a duplicate: the contact
        # and conversation are then found, and the message is not stored).
        contact_id = self.upsert_contact(phone, name, insert_first=True)
        conversation_id = self.upsert_conversation(contact_id, channel, address, insert_first=True)
        message_id = self.session.execute(
            self._insert(message_table)
            .values(
                conversation_id=conversation_id,
                contact_id=contact_id,
                media=sa.null() if media_value is None else media_value,  # not JSON null
                **fields,
            )
            .on_conflict_do_nothing(index_elements=["message_sid"])
            .returning(message.id)
        ).scalar()
        if message_id is None:
            return None
        return StoredInbound(message_id, contact_id, conversation_id)

    def _rename(self, contact_id: int, name: str, now: dt.datetime) -> None:
        """A new WhatsApp profile name, unless a turn holds the contact's lock.

        The webhook must not wait for an LLM call; the contact's next message
        brings the name again.
        """
        unlocked = (
            sa.select(contact_table.c.id)
            .where(contact_table.c.id == contact_id)
            .with_for_update(key_share=True, skip_locked=True)
            .scalar_subquery()
        )
        self.session.execute(
            sa.update(contact_table)
            .where(contact_table.c.id == unlocked)
            .values(name=name, updated_at=now)
        )

    def lock_contact(self, contact_id: int, nowait: bool = False) -> Contact:
        """Take the contact's row lock for the rest of the transaction.

        On PostgreSQL this is ``SELECT ... FOR UPDATE``: a second turn of the
        same contact waits here until the first commits. On SQLite the
        transaction already holds the database's write lock (BEGIN IMMEDIATE).
        The lock is ``FOR NO KEY UPDATE``: it serialises turns but does not make
        the webhook wait to store the contact's next message (a row referencing
        the contact takes ``FOR KEY SHARE``, which only ``FOR UPDATE`` blocks).

        Args:
            contact_id: The contact.
            nowait: Fail at once rather than wait for another turn's lock.

        Raises:
            sqlalchemy.exc.OperationalError: with `nowait`, another transaction
                holds the lock (PostgreSQL ``lock_not_available``, 55P03).
        """
        return self.session.scalars(
            sa.select(Contact)
            .where(Contact.id == contact_id)
            .with_for_update(key_share=True, nowait=nowait)
        ).one()

    def active_execution(self, contact_id: int) -> ExecutionState | None:
        """The contact's open execution (active, waiting or handed over), or None."""
        row = self.session.execute(_OPEN_EXECUTION, {"contact_id": contact_id}).first()
        if row is None:
            return None
        return ExecutionState(
            id=row.id,
            flow_id=row.flow_id,
            flow_version=row.flow_version,
            current_step=row.current_step,
            status=row.status,
            variables=dict(row.variables or {}),
            step_results=dict(row.step_results or {}),
            step_state=dict(row.step_state or {}),
            wait_deadline=row.wait_deadline,
        )

    def save_execution(
        self, contact_id: int, state: ExecutionState, error: str | None = None
    ) -> int:
        """Insert or update the execution from the engine's state; returns its id.

        One statement, on the table (no ORM unit of work: this runs every turn).
        """
        now = utcnow()
        values: dict[str, Any] = {
            "flow_id": state.flow_id,
            "flow_version": state.flow_version,
            "current_step": state.current_step,
            "status": state.status,
            "variables": state.variables,
            "step_results": state.step_results,
            "step_state": state.step_state,
            "wait_deadline": state.wait_deadline,
            "updated_at": now,
        }
        if error:
            values["error"] = error
        ended = state.status in ("ended", "failed")
        if state.id:
            if ended:
                update, params = _END_EXECUTION, {"ended_now": now, **values}
            else:
                update, params = _UPDATE_EXECUTION, values
            result = self.session.execute(update, {"execution_id": state.id, **params})
            if result.rowcount:  # type: ignore[attr-defined]
                return state.id
        state.id = self.session.execute(
            _INSERT_EXECUTION,
            {
                "contact_id": contact_id,
                "started_at": now,
                "ended_at": now if ended else None,
                **values,
            },
        ).scalar_one()
        return state.id

    def end_execution(self, execution_id: int) -> None:
        """Mark an execution ended (its flow or step is gone)."""
        self.session.execute(
            sa.update(Execution)
            .where(Execution.id == execution_id)
            .values(status="ended", ended_at=utcnow())
        )

    def history(
        self, contact_id: int, limit: int, before_message_id: int | None = None
    ) -> list[HistoryMessage]:
        """The contact's last `limit` messages before a message, oldest first.

        "Before" is in turn order, not id order: every message but
        `before_message_id` itself, inbound messages whose turn has not run
        yet, and ones merged into a later turn (their text is its input). A
        contact's next message can be stored before the replies to the one
        being answered (queued turns), and those replies belong in the
        history of the next turn. With no `before_message_id` (a turn with
        no inbound message: a timer, a payment), every message counts.
        """
        if limit <= 0:
            return []
        rows = self.session.execute(
            sa.select(Message.author, Message.body)
            .where(Message.contact_id == contact_id)
            .where(sa.true() if before_message_id is None else Message.id != before_message_id)
            .where(Message.body != "")
            .where(
                sa.or_(
                    Message.turn_status.is_(None),
                    Message.turn_status.not_in(("pending", "merged")),
                )
            )
            .order_by(Message.id.desc())
            .limit(limit)
        ).all()
        return [
            HistoryMessage(role="user" if author == "contact" else "assistant", content=body)
            for author, body in reversed(rows)
        ]

    def store_outbound(
        self,
        stored: StoredInbound,
        parts: Sequence[OutboundPart],
        *,
        execution_id: int | None,
        flow_id: str | None,
        status: str = "queued",
    ) -> list[int]:
        """Store the turn's outbound messages, in order; returns their ids."""
        ids = []
        for part in parts:
            ids.append(
                self.session.execute(
                    _INSERT_MESSAGE,
                    {
                        "conversation_id": stored.conversation_id,
                        "contact_id": stored.contact_id,
                        "direction": "outbound",
                        "author": part.author,
                        "body": part.body,
                        "media": part.media_column(),
                        "status": status,
                        "execution_id": execution_id,
                        "flow_id": flow_id,
                        "step_id": part.step_id,
                        "model": part.usage.model if part.usage else None,
                        "prompt_tokens": part.usage.prompt_tokens if part.usage else None,
                        "completion_tokens": part.usage.completion_tokens if part.usage else None,
                        "latency_ms": part.usage.latency_ms if part.usage else None,
                        "created_at": utcnow(),
                    },
                ).scalar_one()
            )
        return ids

    def note_transcript(self, message_id: int, transcript: Mapping[str, Any]) -> None:
        """Keep a voice note's transcript with the message: ``media["transcript"]``.

        `transcript` is ``{"model", "bytes", "ms"}`` and ``text``, or ``error``
        when it failed (conversation/voice.py).
        """
        media = self.session.scalar(
            sa.select(message_table.c.media).where(message_table.c.id == message_id)
        )
        value = {**(media or {}), "transcript": dict(transcript)}
        self.session.execute(
            sa.update(message_table).where(message_table.c.id == message_id).values(media=value)
        )

    def finish_inbound(
        self,
        message_id: int,
        turn_status: str,
        execution_id: int | None,
        flow_id: str | None,
        llm_calls: list[dict[str, Any]] | None = None,
        moderation: list[dict[str, Any]] | None = None,
        *,
        stamp: bool = True,
    ) -> None:
        """Record how the inbound message's turn ended (``done``, ``failed``, ``skipped``).

        Also moves the conversation's ``last_message_at`` up to the message's
        arrival (the webhook leaves the conversation row alone: a send may
        hold its lock). `llm_calls`, when given, are the turn's model calls
        (`Message.llm_calls`); `moderation`, the turn's moderation decisions
        (`Message.moderation`). ``stamp=False``: the caller moved
        ``last_message_at`` already (`SqlTurnStore.controller`).
        """
        values: dict[str, Any] = {
            "turn_status": turn_status,
            "execution_id": execution_id,
            "flow_id": flow_id,
        }
        if llm_calls:
            values["llm_calls"] = llm_calls
        if moderation:
            values["moderation"] = moderation
        self.session.execute(_FINISH_INBOUND, {"finished_id": message_id, **values})
        if stamp:
            self.session.execute(STAMP_CONVERSATION, {"finished_id": message_id})

    def latest_conversation(self, contact_id: int) -> Conversation | None:
        """The contact's conversation with the most recent message, or None."""
        return self.session.scalars(
            sa.select(Conversation)
            .where(Conversation.contact_id == contact_id)
            .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
            .limit(1)
        ).first()
