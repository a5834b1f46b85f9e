"""What one run of the engine produced: `TurnResult`, and the model calls it made.

The runner (engine/runner.py) fills a `TurnResult`; the turn service
(conversation/turn.py) stores it: the execution, the replies, the effects and
the model calls (`LLMCall`, kept with the inbound message for conversation tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.effects import Effect
from engine.ports import (
    LLM,
    ExecutionState,
    HistoryMessage,
    LLMError,
    LLMRequest,
    LLMResponse,
    LLMUsage,
    Reply,
)

if TYPE_CHECKING:
    from engine.moderation import Decision
    from engine.steps.base import StepContext, StepError


@dataclass(frozen=True)
class LLMCall:
    """One model call of a turn, as the model answered it (for transcripts and tests).

    Attributes:
        step_id: The step that made the call.
        output: The structured output, when the call asked for one and got it.
        text: The answer's text (the JSON text under structured output), or None.
        error: Why the call failed, or None.
        usage: Model, tokens and latency, when it answered.
    """

    step_id: str
    output: dict[str, Any] | None = None
    text: str | None = None
    error: str | None = None
    usage: LLMUsage | None = None

    def recorded(self) -> dict[str, Any]:
        """The call as stored with the turn's inbound message (JSON).

        ``{"step": ..., "output": {...}}``, ``{"step": ..., "text": ...}`` or
        ``{"step": ..., "error": ...}``, the shape conversation tests script.
        """
        if self.error is not None:
            return {"step": self.step_id, "error": self.error}
        if self.output is not None:
            return {"step": self.step_id, "output": self.output}
        return {"step": self.step_id, "text": self.text or ""}


@dataclass
class RecordingLLM:
    """The runner's LLM, noting each call of the turn in `TurnResult.llm_calls`."""

    llm: LLM
    context: StepContext
    calls: list[LLMCall]

    def complete(self, request: LLMRequest) -> LLMResponse:
        try:
            response = self.llm.complete(request)
        except LLMError as error:
            self.calls.append(LLMCall(self.context.step_id, error=str(error) or repr(error)))
            raise
        self.calls.append(
            LLMCall(self.context.step_id, response.data, response.text, usage=response.usage)
        )
        return response


@dataclass
class TurnResult:
    """What a turn did.

    Attributes:
        execution: The execution after the turn (None when no flow matched).
        replies: The messages to send, in order.
        steps: The step ids run, in order.
        error: The failure that made the turn answer with the fallback, if any.
        started: Whether the turn started a new execution.
        effects: What the turn asks of the world outside the engine
            (`engine.effects`), in order, for the turn service to carry out.
        llm_calls: The model calls the turn made, in order, failed ones included.
        moderation: The turn's moderation decisions (`engine.moderation`), in order.
    """

    execution: ExecutionState | None
    replies: list[Reply] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    error: StepError | None = None
    started: bool = False
    effects: list[Effect] = field(default_factory=list)
    llm_calls: list[LLMCall] = field(default_factory=list)
    moderation: list[Decision] = field(default_factory=list)


def history_with_turn(
    history: Callable[[int], list[HistoryMessage]], replies: list[Reply]
) -> Callable[[int], list[HistoryMessage]]:
    """``history(n)`` followed by what the bot said so far in this turn, n at most.

    The store only knows what earlier turns committed; an ``llm`` step after a
    ``say`` in the same turn must see that text too, as the contact does.
    """

    def read(limit: int) -> list[HistoryMessage]:
        if limit <= 0:
            return []
        said = [
            HistoryMessage(role="assistant", content=reply.text)
            for reply in replies
            if reply.text.strip()
        ]
        earlier = history(max(limit - len(said), 0)) if len(said) < limit else []
        return [*earlier, *said][-limit:]

    return read
