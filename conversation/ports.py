"""What the turn service needs of storage, as Protocols (DESIGN.md: "State behind a small
interface").

`models.store.SqlStore` implements `Executions` and `Transcript`, and
`models.turn_store.SqlTurnStore` implements `TurnLeases`, on SQLite and
PostgreSQL; tests/test_store_contract.py holds every implementation to the same
contract on both. Each method runs in the caller's transaction; the caller
commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from engine.ports import Channel, ExecutionState, HistoryMessage
from models.store import OutboundPart, StoredInbound
from models.turn_store import TurnView


@runtime_checkable
class TurnLeases(Protocol):
    """One turn at a time per contact, without a lock held across the turn."""

    def claim(self, contact_id: int, now: dt.datetime, seconds: float) -> int | None:
        """A new fencing token when the contact's lease is free or expired, else None."""
        ...

    def fence(self, contact_id: int, token: int) -> bool:
        """Release the lease if `token` still holds it (locking it until commit); else False."""
        ...

    def release(self, contact_id: int, token: int) -> None:
        """Release the lease if `token` still holds it."""
        ...

    def lease_expiry(self, contact_id: int) -> dt.datetime | None:
        """When the lease expires, or None when it is free."""
        ...

    def view(self, contact_id: int, conversation_id: int | None) -> TurnView | None:
        """Who the contact is, the conversation (the latest when None) and who controls it."""
        ...

    def controller(self, conversation_id: int) -> str:
        """Who controls the conversation now (``bot``, ``agent:<id>``...), share-locked."""
        ...


@runtime_checkable
class Executions(Protocol):
    """A contact's runs through flows (Twilio Studio's executions)."""

    def active_execution(self, contact_id: int) -> ExecutionState | None:
        """The open execution (active, waiting or handed over), newest first, or None."""
        ...

    def save_execution(
        self, contact_id: int, state: ExecutionState, error: str | None = None
    ) -> int:
        """Insert or update `state` (its ``id`` is set on insert); returns the id."""
        ...

    def end_execution(self, execution_id: int) -> None:
        """Mark an execution ended."""
        ...


@runtime_checkable
class Transcript(Protocol):
    """Every message, inbound and outbound, keyed by Twilio's ``MessageSid``."""

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
        """Store an inbound message first; None when its ``MessageSid`` is already stored."""
        ...

    def history(
        self, contact_id: int, limit: int, before_message_id: int | None = None
    ) -> list[HistoryMessage]:
        """The last `limit` messages in turn order, oldest first, without `before_message_id`."""
        ...

    def store_outbound(
        self,
        stored: StoredInbound,
        parts: Sequence[OutboundPart],
        *,
        execution_id: int | None,
        flow_id: str | None,
        status: str = "queued",
    ) -> list[int]:
        """Store a turn's outbound messages in order (the outbox); returns their ids."""
        ...

    def finish_inbound(
        self, message_id: int, turn_status: str, execution_id: int | None, flow_id: str | None
    ) -> None:
        """Record how an inbound message's turn ended (``done``, ``failed``, ``skipped``)."""
        ...
