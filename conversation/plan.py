"""The shapes of a turn: what starts it (`TurnPlan`), how it runs, what it answered.

The turn service (conversation/turn.py) runs every `TurnPlan` the same way;
the entry points (webhook, worker, timer, Studio, Executions API, handback,
payment) each build one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from conversation.inbound import Incoming
from engine.ports import Contact, ExecutionState, HistoryMessage, Reply
from engine.runner import TurnResult
from models.store import OutboundPart, SqlStore, StoredInbound

#: ``history(n)``: the last n messages before the turn, oldest first.
History = Callable[[int], list[HistoryMessage]]

#: What a plan asks of the engine: ``engine(execution, contact, history)``
#: with the contact's open execution (None when there is none); returns the
#: turn, or None when there is nothing to do after all (a timer no longer due).
EngineCall = Callable[[ExecutionState | None, Contact, History], "TurnResult | None"]


@dataclass(frozen=True)
class Preface:
    """A responder's texts that go before the flow's replies; the flow then runs (a welcome)."""

    texts: list[str]


#: Answers a message before the flow runs: ``responder(contact, text)`` returns
#: a list of texts (the answer; the flow does not run, ``[]`` answers with
#: silence), a `Preface` (texts sent first, then the later responders and the
#: flow run) or None (let the others and the flow run). Opt-out, reset code,
#: billing keyword, after-hours, welcome: conversation/responders.py.
Responder = Callable[[Contact, str], "list[str] | Preface | None"]


@dataclass(frozen=True)
class TurnSettings:
    """How turns claim contacts and store replies.

    Attributes:
        lease_seconds: How long a claim holds a contact before another worker
            may take it over (``TURN_LEASE_SECONDS``): longer than any turn
            (the model's timeout times its retries, per step); a worker that
            dies delays the contact's next turn by at most this.
        lease_wait_seconds: How long an inline turn waits for a busy contact
            (its previous message's turn) before leaving the message to the
            sweeper (``TURN_LEASE_WAIT_SECONDS``).
        outbound_status: Status of an inbound turn's outbound rows: ``queued``
            when they go out in the webhook's TwiML, ``pending`` when a worker
            sends them (delivery/dispatcher.py).
        handover_queue: Where a ``handover`` step goes when its agent is
            unknown or none is available (``HANDOVER_QUEUE``).
        deadline_seconds: How long an inline turn's flow may run
            (``TURN_DEADLINE_SECONDS``): every model and HTTP call gets the time
            left, within Twilio's 15 s for the webhook's answer; None: no deadline.
        agent_app: An agent app gets the control events (``AGENT_WEBHOOK_URL``):
            agents are configured even with no agent in the console.
    """

    lease_seconds: float = 45.0
    lease_wait_seconds: float = 10.0
    outbound_status: str = "queued"
    handover_queue: str = "support"
    deadline_seconds: float | None = 12.0
    agent_app: bool = False


@dataclass
class TurnPlan:
    """One turn to run: for whom, what the engine does, how replies are kept.

    Attributes:
        contact_id: The contact.
        conversation_id: The conversation it speaks in; None for the contact's
            latest (a timer, a payment).
        engine: What to ask of the engine (`EngineCall`).
        status: Status of the outbound rows (``queued``, ``pending``,
            ``studio``).
        inbound: The stored inbound message the turn answers, if any.
        incoming: Its content.
        responders: Whether responders answer before the flow (inbound
            messages from the channels).
        split: Whether replies are split into Twilio-sized messages (Studio
            sends whole texts itself).
        on_commit: ``on_commit(store, result, execution_id, message_ids)``,
            run in the commit's transaction (the Executions API's request row).
        on_replies: Run last in the transaction that stores the turn's replies
            (the flow's or a responder's; not the fallback after a failure),
            before it commits: a queued turn claims its first send there
            (`delivery.dispatcher`). What it returns is the outcome's
            `TurnOutcome.claimed` once the transaction committed.
        raise_errors: Whether a failure is raised to the caller (after
            nothing was written) rather than answered with the fallback.
        wait: Whether to wait (up to `TurnSettings.lease_wait_seconds`) for
            a contact whose turn runs elsewhere; default: for inbound messages
            (a timer rather skips it until its next tick).
    """

    contact_id: int
    conversation_id: int | None
    engine: EngineCall
    status: str
    inbound: StoredInbound | None = None
    incoming: Incoming | None = None
    responders: bool = False
    split: bool = True
    on_commit: Callable[[SqlStore, TurnResult | None, int | None, list[int]], None] | None = None
    on_replies: Callable[[], object] | None = None
    raise_errors: bool = False
    wait: bool | None = None


@dataclass
class TurnOutcome:
    """What a turn answered.

    Attributes:
        replies: The message bodies stored for the contact, in order (each
            within one Twilio message's limit).
        duplicate: The ``MessageSid`` was already stored: nothing was done.
        message_id: The stored inbound message, when there is one.
        error: Why the turn answered with the fallback, if it did.
        result: The engine's result, when the engine ran.
        media: The media URL sent with each reply (same order), or None each.
        recorded: False when the turn could not be recorded, not even its
            fallback: nothing was answered, and the inbound message is still
            ``pending`` (the sweeper or a retried task runs it again).
        message_ids: The outbound rows stored, in order.
        execution_id: The execution after the turn, if any.
        controlled_by: Who has the conversation when a person does (the bot
            said nothing); None while the bot has it.
        busy: The contact's lease was held elsewhere: nothing was run.
        claimed: What `TurnPlan.on_replies` returned, in the transaction
            that committed (None when it did not run or nothing committed).
    """

    replies: list[str] = field(default_factory=list)
    duplicate: bool = False
    message_id: int | None = None
    error: str | None = None
    result: TurnResult | None = None
    media: list[str | None] = field(default_factory=list)
    recorded: bool = True
    message_ids: list[int] = field(default_factory=list)
    execution_id: int | None = None
    controlled_by: str | None = None
    busy: bool = False
    claimed: object = None


class ContactGone(Exception):
    """The contact no longer exists (erased, "delete my data"): there is no turn to run."""


class LeaseLost(Exception):
    """Another worker claimed the contact while this turn ran: it wrote nothing."""


def outbound_parts(
    replies: Sequence[Reply], split: Callable[[str], list[str]] | None
) -> list[OutboundPart]:
    """The engine's replies as outbound rows: one per Twilio message, every field kept.

    The template, the media and the delay of a reply are kept on every path
    (a reply reached by a timer goes out as its WhatsApp template outside the
    24-hour window, like any other).

    Args:
        replies: The turn's replies, in order.
        split: Splits a text into bodies Twilio accepts (1,600 characters), or
            None to keep each reply whole (Twilio Studio sends them itself).

    Returns:
        The parts: usage, template and delay on a reply's first part, its media
        on the last; a picture alone is one part with an empty body.
    """
    parts: list[OutboundPart] = []
    for reply in replies:
        text = reply.text
        bodies = ([text] if text.strip() else []) if split is None else split(text)
        bodies = bodies or ([""] if reply.media_url else [])
        for index, body in enumerate(bodies):
            last = index == len(bodies) - 1
            parts.append(
                OutboundPart(
                    body=body,
                    author=reply.author,
                    step_id=reply.step_id,
                    usage=reply.usage if index == 0 else None,
                    template=reply.template if index == 0 else None,
                    media_url=reply.media_url if last else None,
                    delay_seconds=reply.delay_seconds if index == 0 else 0.0,
                )
            )
    return parts
