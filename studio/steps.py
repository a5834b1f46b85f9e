"""One Parley step for Twilio Studio's *Make HTTP Request* widget.

``POST /studio/flows/<flow>/steps/<step>`` (web/studio_steps.py) runs one step
of a flow for a contact, in that contact's execution, through the real runner
and store: the contact's text is stored as an inbound message, the step runs
(`engine.runner.Runner.run_step`), and the execution and the replies are
committed together. The replies are not sent by Parley: Studio sends them (a
*Send Message* widget with ``{{widgets.<name>.parsed.reply}}``), so they are
stored with status `HANDED_TO_STUDIO`, which no delivery worker picks up.
The step runs as any turn does (conversation/turn.py): under the contact's
lease, with no connection held during its model call, and not at all while
a person has the conversation.

Studio gives an HTTP widget 10 seconds and reads at most 64 KB of its answer
(https://www.twilio.com/docs/studio/widget-library/http-request). So the LLM
used here makes one attempt of at most ``STUDIO_LLM_TIMEOUT`` seconds (default
7, never more than ``OPENAI_TIMEOUT``), with no retry; a step whose LLM call
runs late answers with the flow's fallback and ``"fallback": true``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from config import Settings, reveal
from conversation.turn import History, Incoming, TurnPlan, TurnService, store_incoming
from engine.ports import LLM, Channel, Contact, ExecutionState, InboundMessage
from engine.runner import Runner
from integrations.openai import openai_llm

log = logging.getLogger("parley.studio")

#: Status of outbound rows whose text Studio sends itself.
HANDED_TO_STUDIO = "studio"

#: Studio reads at most this many bytes of an HTTP widget's answer.
MAX_RESPONSE_BYTES = 64 * 1024


def studio_llm(settings: Settings) -> LLM:
    """The LLM for step endpoints: one attempt of ``min(STUDIO_LLM_TIMEOUT, OPENAI_TIMEOUT)`` s.

    Args:
        settings: The app's settings.
    """
    return openai_llm(
        api_key=reveal(settings.openai_api_key),
        base_url=settings.openai_base_url,
        timeout=min(settings.studio_llm_timeout, settings.openai_timeout),
        max_retries=0,
        max_user_chars=settings.prompt_max_contact_chars,
    )


@dataclass
class StepAnswer:
    """What a step endpoint answers (Studio reads it as ``widgets.<name>.parsed``).

    Attributes:
        reply: The replies joined by blank lines ("" when the step said nothing).
        replies: Each reply.
        variables: The execution's ``vars`` after the step.
        next: The step to call next: the step the run leads to, this step
            again while it waits for an answer, or None when the flow ended.
        done: Whether the flow ended.
        waiting: Whether the step waits for the contact's answer (send it in
            ``Body`` to the same step).
        fallback: Whether the reply is the flow's fallback (the step failed
            or its LLM call ran late).
        error: Why, when `fallback`.
        media: URLs of pictures or documents the step sends (for a *Send
            Message* widget's Media URL).
        controlled_by: Who has the conversation when a person does (an agent
            took it over): the bot said nothing, and the step did not run.
    """

    reply: str
    replies: list[str]
    variables: dict[str, Any]
    next: str | None
    done: bool
    waiting: bool
    fallback: bool
    error: str | None
    media: list[str]
    controlled_by: str | None = None

    def as_json(self) -> bytes:
        """The JSON body, within Studio's 64 KB (``variables`` dropped, then the reply cut)."""
        data: dict[str, Any] = dict(vars(self))
        body = json.dumps(data, ensure_ascii=False, default=str).encode()
        if len(body) <= MAX_RESPONSE_BYTES:
            return body
        data["variables"], data["truncated"] = {}, True
        body = json.dumps(data, ensure_ascii=False, default=str).encode()
        while len(body) > MAX_RESPONSE_BYTES and data["reply"]:
            cut = len(data["reply"]) - (len(body) - MAX_RESPONSE_BYTES) - 16
            data["reply"] = data["reply"][: max(cut, 0)]
            data["replies"] = [data["reply"]]
            body = json.dumps(data, ensure_ascii=False, default=str).encode()
        return body


def run_studio_step(
    turns: TurnService,
    runner: Runner,
    *,
    flow_id: str,
    step_id: str,
    phone: str,
    channel: Channel,
    body: str,
    address: str,
    variables: Mapping[str, Any] | None = None,
) -> StepAnswer:
    """Store the contact's text, run one step in their execution as a turn, commit.

    A person in control of the conversation keeps the bot silent here too:
    the text is stored for them and the answer says who has it, with no reply.

    Args:
        turns: The turn service (its session is committed).
        runner: The runner (give it `studio_llm` for Studio's deadline).
        flow_id: The flow.
        step_id: Its step.
        phone: The contact's E.164 number.
        channel: ``whatsapp`` or ``sms``.
        body: What the contact typed ("" when the widget sends none).
        address: Our side of the conversation (Studio's ``To``, or ``studio``).
        variables: Set in the execution's ``vars`` before the step runs (data).

    Raises:
        KeyError: no such flow or step.
        sqlalchemy.exc.OperationalError: the database is unreachable.
    """
    flow = runner.flows.get(flow_id)
    if flow is None or step_id not in flow.steps:
        raise KeyError(f"no flow {flow_id!r}" if flow is None else f"no step {step_id!r}")
    stored = store_incoming(
        turns.session,
        Incoming(
            phone=phone,
            channel=channel,
            address=address,
            body=body,
            message_sid=f"studio-{uuid.uuid4().hex}",
        ),
    )
    assert stored is not None  # a fresh id is never a duplicate
    inbound = InboundMessage(text=body, channel=channel) if body else None

    def engine(execution: ExecutionState | None, contact: Contact, history: History):
        return runner.run_step(
            execution,
            flow_id,
            step_id,
            inbound,
            contact,
            history,
            entitlements=turns.entitlements,
            variables=variables,
        )

    plan = TurnPlan(
        stored.contact_id,
        stored.conversation_id,
        engine,
        status=HANDED_TO_STUDIO,
        inbound=stored,
        split=False,
        raise_errors=True,
    )
    outcome = turns.execute(plan)
    if outcome.controlled_by is not None:
        log.info(
            "studio.step.skipped contact=%s controlled_by=%s",
            stored.contact_id,
            outcome.controlled_by,
        )
        return StepAnswer(
            reply="",
            replies=[],
            variables={},
            next=step_id,
            done=False,
            waiting=True,
            fallback=False,
            error=None,
            media=[],
            controlled_by=outcome.controlled_by,
        )
    result = outcome.result
    assert result is not None and result.execution is not None
    state = result.execution
    error = outcome.error
    texts = [reply.text for reply in result.replies if reply.text.strip()]
    done = state.status in ("ended", "failed")
    waiting = state.status == "waiting" and state.current_step == step_id and error is None
    log.info(
        "studio.step contact=%s flow=%s step=%s next=%s error=%s",
        stored.contact_id,
        flow_id,
        step_id,
        None if done else state.current_step,
        error,
    )
    return StepAnswer(
        reply="\n\n".join(texts),
        replies=texts,
        variables=dict(state.variables),
        next=None if done else state.current_step,
        done=done,
        waiting=waiting,
        fallback=error is not None,
        error=error,
        media=[reply.media_url for reply in result.replies if reply.media_url],
    )


def runner_for_studio(runner: Runner, llm: LLM) -> Runner:
    """The app's runner with Studio's LLM (same flows, templates, HTTP)."""
    return replace(runner, llm=llm)
