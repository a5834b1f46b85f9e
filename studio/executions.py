"""Start a flow from outside, like Twilio Studio's Executions API (``POST /api/v1/executions``).

For reminders and check-ins: a scheduler asks Parley to start a flow for a
contact; its first turn runs at once (no inbound message) and what it says is
stored and sent through the Twilio REST API (`delivery.outbound.send_stored`).
The parameters become the flow's starting ``vars``, exactly as a ``call``
step's ``with:`` does (Studio's ``{{flow.data.X}}`` is Parley's
``{{ vars.X }}``).

As in Studio (https://www.twilio.com/docs/studio/rest-api/v2/execution), a
contact already in a flow is not started again (409). A client-supplied
idempotency key makes a retried request answer what the first one did and
start nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.ports import Channel, Contact, Entitlements
from engine.runner import Runner
from models import Execution, ExecutionRequest
from models.store import OutboundPart, SqlStore, StoredInbound

log = logging.getLogger("parley.studio")


class ExecutionConflict(Exception):
    """The contact is already in a flow (Studio answers 409 too).

    Attributes:
        flow_id: The flow the contact is in.
    """

    def __init__(self, flow_id: str) -> None:
        super().__init__(f"the contact is already in flow {flow_id!r}")
        self.flow_id = flow_id


@dataclass
class Started:
    """What ``POST /api/v1/executions`` answers.

    Attributes:
        request_id: The stored request.
        execution_id: The execution started (None when the flow did not start).
        flow_id: The flow.
        status: The execution's status after its first turn (``waiting``, ``ended``…).
        message_ids: The outbound messages stored (and sent), in order.
        replayed: The idempotency key was seen before: nothing was started now.
    """

    request_id: int
    execution_id: int | None
    flow_id: str
    status: str
    message_ids: list[int] = field(default_factory=list)
    replayed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON body."""
        return {
            "id": self.request_id,
            "execution_id": self.execution_id,
            "flow": self.flow_id,
            "status": self.status,
            "message_ids": self.message_ids,
            "replayed": self.replayed,
        }


def start_execution(
    session: Session,
    runner: Runner,
    *,
    phone: str,
    channel: Channel,
    address: str | None,
    flow_id: str,
    parameters: dict[str, Any],
    key: str | None,
    entitlements: Entitlements | None = None,
) -> Started:
    """Start `flow_id` for a contact and store its first messages (status ``queued``).

    The caller sends ``message_ids`` after this returns (committed).

    Args:
        session: The session (committed here).
        runner: The runner.
        phone: The contact's E.164 number.
        channel: ``whatsapp`` or ``sms``.
        address: Our side of the conversation (the Twilio number to send
            from); None for the contact's latest conversation.
        flow_id: A loaded flow.
        parameters: The flow's starting ``vars`` (JSON data, never templates).
        key: The client's idempotency key, or None.
        entitlements: Who may pass paywalls.

    Raises:
        KeyError: no such flow.
        ExecutionConflict: the contact already has an open execution.
        ValueError: no `address` and the contact has no conversation.
    """
    if runner.flows.get(flow_id) is None:
        raise KeyError(f"no flow {flow_id!r}")
    if key is not None:
        earlier = replay(session, key)
        if earlier is not None:
            return earlier
    store = SqlStore(session)
    try:
        contact_id = store.upsert_contact(phone, None)
        if address is None:
            latest = store.latest_conversation(contact_id)
            if latest is None:
                raise ValueError("From is required: the contact has no conversation yet")
            address, channel = latest.address, latest.channel  # type: ignore[assignment]
        conversation_id = store.upsert_conversation(contact_id, channel, address)
        row = store.lock_contact(contact_id)
        # A request with the same key may have committed while this one waited for the lock.
        earlier = replay(session, key) if key is not None else None
        if earlier is not None:
            session.commit()
            return earlier
        open_execution = store.active_execution(contact_id)
        if open_execution is not None:
            raise ExecutionConflict(open_execution.flow_id)
        request = ExecutionRequest(
            idempotency_key=key,
            contact_id=contact_id,
            flow_id=flow_id,
            parameters=parameters,
            message_ids=[],
        )
        session.add(request)
        session.flush()  # a concurrent request with the same key fails here
        contact = Contact(id=row.id, phone=row.phone, name=row.name, channel=channel)
        result = runner.run_turn(
            None,
            None,
            contact,
            history=lambda limit: store.history(contact_id, limit, 2**62),
            flow_id=flow_id,
            entitlements=entitlements,
            variables=parameters,
        )
        state = result.execution
        error = result.error.reason if result.error else None
        execution_id = store.save_execution(contact_id, state, error) if state else None
        parts = [
            OutboundPart(body=reply.text, author=reply.author, step_id=reply.step_id)
            for reply in result.replies
            if reply.text.strip()
        ]
        ids = store.store_outbound(
            StoredInbound(0, contact_id, conversation_id),
            parts,
            execution_id=execution_id,
            flow_id=flow_id,
        )
        request.execution_id, request.message_ids = execution_id, ids
        session.commit()
    except IntegrityError:
        session.rollback()
        earlier = replay(session, key) if key is not None else None
        if earlier is None:
            raise
        return earlier
    except Exception:
        session.rollback()
        raise
    log.info(
        "studio.execution.started contact=%s flow=%s execution=%s messages=%d",
        contact_id,
        flow_id,
        execution_id,
        len(ids),
    )
    return Started(request.id, execution_id, flow_id, state.status if state else "failed", ids)


def replay(session: Session, key: str) -> Started | None:
    """What the request with this idempotency key answered, or None when it is new."""
    request = session.scalars(
        sa.select(ExecutionRequest).where(ExecutionRequest.idempotency_key == key)
    ).first()
    if request is None:
        return None
    status = "failed"
    if request.execution_id is not None:
        status = (
            session.scalar(sa.select(Execution.status).where(Execution.id == request.execution_id))
            or "ended"
        )
    return Started(
        request.id,
        request.execution_id,
        request.flow_id,
        status,
        list(request.message_ids or []),
        replayed=True,
    )
