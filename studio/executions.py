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

from conversation.turn import History, TurnPlan, TurnService
from engine.ports import Channel, Contact, ExecutionState
from engine.runner import TurnResult
from models import Execution, ExecutionRequest
from models.store import SqlStore

log = logging.getLogger("parley.studio")


class ExecutionConflict(Exception):
    """The contact is already in a flow, or busy (Studio answers 409 too).

    Attributes:
        flow_id: The flow the contact is in, if that is the conflict.
    """

    def __init__(self, flow_id: str | None, reason: str | None = None) -> None:
        super().__init__(reason or f"the contact is already in flow {flow_id!r}")
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
    turns: TurnService,
    *,
    phone: str,
    channel: Channel,
    address: str | None,
    flow_id: str,
    parameters: dict[str, Any],
    key: str | None,
) -> Started:
    """Start `flow_id` for a contact and store its first messages (status ``queued``).

    The first turn runs as any turn does (conversation/turn.py): under the
    contact's lease, with no connection held during its model calls, and not
    at all while a person has the conversation (409). The caller sends
    ``message_ids`` after this returns (committed).

    Args:
        turns: The turn service (its session is committed here).
        phone: The contact's E.164 number.
        channel: ``whatsapp`` or ``sms``.
        address: Our side of the conversation (the Twilio number to send
            from); None for the contact's latest conversation.
        flow_id: A loaded flow.
        parameters: The flow's starting ``vars`` (JSON data, never templates).
        key: The client's idempotency key, or None.

    Raises:
        KeyError: no such flow.
        ExecutionConflict: the contact already has an open execution.
        ValueError: no `address` and the contact has no conversation.
    """
    session, runner = turns.session, turns.runner
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
        session.commit()
    except Exception:
        session.rollback()
        raise
    request = ExecutionRequest(
        idempotency_key=key,
        contact_id=contact_id,
        flow_id=flow_id,
        parameters=parameters,
        message_ids=[],
    )

    def engine(execution: ExecutionState | None, contact: Contact, history: History):
        if execution is not None:
            raise ExecutionConflict(execution.flow_id)
        return runner.run_turn(
            None,
            None,
            contact,
            history,
            flow_id=flow_id,
            entitlements=turns.entitlements,
            variables=parameters,
        )

    def record(
        store: SqlStore, result: TurnResult | None, execution_id: int | None, ids: list[int]
    ):
        request.execution_id, request.message_ids = execution_id, ids
        session.add(request)
        session.flush()  # a concurrent request with the same key fails here

    plan = TurnPlan(
        contact_id,
        conversation_id,
        engine,
        status="queued",
        on_commit=record,
        raise_errors=True,
        wait=True,
    )
    try:
        outcome = turns.execute(plan)
    except (IntegrityError, ExecutionConflict):
        # The same key's request may have committed while this one waited.
        earlier = replay(session, key) if key is not None else None
        session.rollback()
        if earlier is None:
            raise
        return earlier
    if outcome.controlled_by is not None:
        raise ExecutionConflict(None, f"a person has the conversation ({outcome.controlled_by})")
    if outcome.busy:
        raise ExecutionConflict(None, "another turn of the contact is running; try again")
    result = outcome.result
    state = result.execution if result else None
    log.info(
        "studio.execution.started contact=%s flow=%s execution=%s messages=%d",
        contact_id,
        flow_id,
        outcome.execution_id,
        len(outcome.message_ids),
    )
    return Started(
        request.id,
        outcome.execution_id,
        flow_id,
        state.status if state else "failed",
        outcome.message_ids,
    )


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
