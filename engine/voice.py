"""Which flow a voice note goes to, and whether that flow and its step let it be transcribed.

Transcription itself happens outside the engine (conversation/voice.py, before
the turn's run); the engine only knows the designer's switches: a flow's
``transcribe`` and an ``ask`` or ``llm`` step's ``transcribe``. Either set to
``false`` means the voice note reaches the flow as media with no text, as if
voice notes were off.
"""

from __future__ import annotations

from engine.flow import FlowSet
from engine.ports import ExecutionState, InboundMessage


def voice_target(
    flows: FlowSet,
    execution: ExecutionState | None,
    inbound: InboundMessage,
    flow_id: str | None = None,
) -> tuple[str | None, bool]:
    """Where a voice note goes, and whether the flow and its step let it be transcribed.

    The step is the one the execution waits at. A contact in no flow sends it
    to the flow the message starts (for a voice note without text, the default
    flow of the number), where only the flow's ``transcribe`` counts.

    Args:
        flows: The loaded flows.
        execution: The contact's open execution, or None.
        inbound: The voice note.
        flow_id: The flow the turn runs, when the caller names one (``flask chat``).

    Returns:
        The flow's id (None: no flow would run) and whether to transcribe.
    """
    open_execution = execution is not None and execution.status not in ("ended", "failed")
    if execution is not None and open_execution and flow_id in (None, execution.flow_id):
        flow, restart = flows.resolve(execution)
        if flow is None:
            return execution.flow_id, True
        step = None if restart else flow.steps.get(execution.current_step)
        return flow.id, flow.transcribe and (step is None or step.transcribes())
    flow = flows.get(flow_id) if flow_id else flows.match(inbound.text, inbound.to)
    if flow is None:
        return None, True
    return flow.id, flow.transcribe
