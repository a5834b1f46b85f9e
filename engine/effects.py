"""What a turn asks of the world outside the engine, as typed values.

A step never reaches the database, an agent inbox or Stripe itself: it adds an
effect to the turn (`engine.steps.base.StepContext.emit`), and the turn service
(conversation/turn.py) carries each one out in the transaction that commits the
turn. A new step kind that needs something new from the world adds an effect
here; no service tests a step's kind by name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HandOver:
    """Pass the conversation to a person (a ``handover`` step, moderation's safe message).

    Attributes:
        to: ``queue:<name>``, ``agent:<email>`` or ``available`` (the available
            agent who waited longest).
        only_if_agents: Only where people answer handed-over conversations
            (agents configured: the turn service knows, the engine does not);
            otherwise the bot keeps the conversation.
    """

    to: str
    only_if_agents: bool = False


@dataclass(frozen=True)
class AwaitPayment:
    """The execution now waits for a payment (a ``paywall`` step, or a flow's ``entitlement``).

    Attributes:
        entitlement: The entitlement the contact lacks, e.g. ``subscription``.
    """

    entitlement: str


#: Every effect a turn can carry.
Effect = HandOver | AwaitPayment
