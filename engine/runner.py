"""Advance a contact's execution by one inbound message and say what to send.

The runner is steps 5 of a turn (DESIGN.md, "A turn, step by step"): resume
the execution or start a flow, run steps until one waits or the flow ends, and
return the replies. It does no I/O: storing, locking and sending are the
caller's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from engine import calls
from engine.flow import DEFAULT_FALLBACK, Flow, FlowSet
from engine.moderation import Moderator
from engine.ports import (
    HTTP,
    LLM,
    AlwaysEntitled,
    Clock,
    Contact,
    Entitlements,
    ExecutionState,
    HistoryMessage,
    InboundMessage,
    NoHTTP,
    Reply,
)
from engine.steps.base import Continue, Jump, StepContext, StepError, Wait, resolve_next
from engine.steps.paywall import awaits_payment, flow_gate
from engine.templating import TemplateFailure, Templates
from engine.turn_result import LLMCall, RecordingLLM, TurnResult, history_with_turn

__all__ = ["MAX_STEPS_PER_TURN", "FlowLoopError", "LLMCall", "Runner", "TurnResult"]

log = logging.getLogger("parley.engine")

#: Statuses of an execution that is over.
_CLOSED = ("ended", "failed")

#: More steps than this in one turn is a loop in the flow, not a conversation.
MAX_STEPS_PER_TURN = 50


class FlowLoopError(StepError):
    """A turn ran more than `MAX_STEPS_PER_TURN` steps without waiting.

    Attributes:
        flow_id: The flow.
        steps: The steps run in the turn, in order.
    """

    def __init__(self, flow_id: str, steps: list[str]) -> None:
        tail = " → ".join(steps[-8:])
        super().__init__(
            steps[-1],
            f"flow {flow_id!r} ran {len(steps)} steps in one turn without waiting "
            f"(a loop?): … {tail}",
        )
        self.flow_id = flow_id
        self.steps = steps


@dataclass
class Runner:
    """Runs turns of the loaded flows.

    Attributes:
        flows: The loaded, validated flows.
        templates: The sandboxed Jinja environment (with the prompts folder).
        llm: The chat model.
        clock: The time source.
        default_model: Model for ``llm`` steps that name none (``OPENAI_MODEL``).
        max_steps: The per-turn step budget.
        http: Makes ``http`` steps' requests (fails clearly when not given).
        env: The environment variables ``http`` steps may read (the operator's
            ``HTTP_ENV_ALLOWLIST``, name → value).
        turn_seconds: How long one run of the flow may take (a deadline for an
            inline turn, under Twilio's 15 s): each model and HTTP call gets the
            time left, and past it the turn answers with the fallback
            (`TurnTimedOut`); None: no deadline.
        moderator: Checks the contact's text before ``llm`` steps and the
            model's replies before they are sent (``moderation`` in
            ``_settings.yaml``); None: off.
    """

    flows: FlowSet
    templates: Templates
    llm: LLM
    clock: Clock
    default_model: str = "gpt-4o-mini"
    max_steps: int = MAX_STEPS_PER_TURN
    http: HTTP = field(default_factory=NoHTTP)
    env: Mapping[str, str] = field(default_factory=dict)
    turn_seconds: float | None = None
    moderator: Moderator | None = None

    def has_step(self, flow_id: str, step_id: str) -> bool:
        """Whether the loaded flow `flow_id` has a step `step_id`."""
        flow = self.flows.get(flow_id)
        return flow is not None and step_id in flow.steps

    def awaits_payment(self, execution: ExecutionState) -> bool:
        """Whether `execution` waits for a payment (a paywall step or the flow's gate)."""
        flow = self.flows.resolve(execution)[0]
        return flow is not None and awaits_payment(flow, execution)

    def merges_bursts(self, execution: ExecutionState | None) -> bool:
        """Whether a burst of messages to `execution` is answered as one (its step converses)."""
        if execution is None or execution.status != "waiting":
            return False
        flow = self.flows.resolve(execution)[0]
        step = flow.steps.get(execution.current_step) if flow else None
        return bool(step is not None and step.merges_bursts)

    def run_turn(
        self,
        execution: ExecutionState | None,
        inbound: InboundMessage | None,
        contact: Contact,
        history: Callable[[int], list[HistoryMessage]],
        flow_id: str | None = None,
        entitlements: Entitlements | None = None,
        variables: Mapping[str, object] | None = None,
    ) -> TurnResult:
        """Advance `execution` with `inbound`, or start a flow for it.

        Args:
            execution: The contact's active execution, or None.
            inbound: The message that caused the turn.
            contact: Who the turn is for.
            history: ``history(n)``: the last n messages before this turn.
            flow_id: Run this flow: an execution of another flow is ended and
                this one started (``flask chat FLOW``); None to follow triggers.
            entitlements: Who may pass paywalls; everyone when None.
            variables: A flow started here starts with these ``vars`` over its
                own ``variables`` (as ``call ... with:``; ``POST /api/v1/executions``).

        Returns:
            The execution as it now stands and the replies. A failing step does
            not raise: the result carries the error and the flow's fallback.
        """
        if execution is not None and execution.status in ("ended", "failed"):
            execution = None
        if execution is not None and flow_id is not None and execution.flow_id != flow_id:
            execution.status = "ended"
            execution = None
        flow, restart = self.flows.resolve(execution) if execution else (None, False)
        if execution is not None and flow is not None and restart:
            # The flow changed and says `on_change: restart`: its new version
            # starts afresh at this message.
            log.info("flow.version.restart contact=%s flow=%s", contact.id, flow.id)
            execution.status = "ended"
            execution, flow_id = None, flow_id or flow.id
        if execution is not None and (flow is None or execution.current_step not in flow.steps):
            log.warning(
                "flow.execution.orphaned contact=%s flow=%s step=%s",
                contact.id,
                execution.flow_id,
                execution.current_step,
            )
            execution.status = "ended"
            execution = None
        result = TurnResult(execution=execution)
        if execution is None:
            flow = (
                self.flows.get(flow_id)
                if flow_id
                else self.flows.match(
                    inbound.text if inbound else "", inbound.to if inbound else None
                )
            )
            if flow is None:
                result.error = StepError("-", "no flow matches and there is no default flow")
                result.replies.append(Reply(text=DEFAULT_FALLBACK, author="system"))
                return result
            execution = ExecutionState(
                flow_id=flow.id,
                flow_version=flow.version,
                current_step=flow.start,
                variables={**flow.variables, **(variables or {})},
            )
            result.execution = execution
            result.started = True
        assert flow is not None
        context = self._context(flow, execution, contact, inbound, history, result, entitlements)
        try:
            resume = not result.started
            if flow.entitlement:
                gate = flow_gate(flow, context)
                if gate is None:
                    return result
                resume = resume and gate
        except (StepError, TemplateFailure) as error:
            self._fail(flow, context, result, _as_step_error(error, context.step_id))
            return result
        self._run_or_fail(flow, context, result, resume=resume)
        return result

    def fire_timeout(
        self,
        execution: ExecutionState,
        contact: Contact,
        history: Callable[[int], list[HistoryMessage]],
        entitlements: Entitlements | None = None,
    ) -> TurnResult:
        """Move a waiting execution on along its step's ``timeout`` (a timer fired).

        Args:
            execution: An execution waiting at a step with a ``timeout``, whose
                ``wait_deadline`` has passed (the caller selects those).
            contact: Who it is for.
            history: ``history(n)``: the last n messages.
            entitlements: Who may pass paywalls; everyone when None.

        Returns:
            The turn: the execution moved to ``timeout.next`` and run from there
            until it waits or ends. Nothing happens (no replies, no steps) when
            the execution is not waiting, its flow or step is gone, or the step
            has no timeout.
        """
        result = TurnResult(execution=execution)
        flow, restart = self.flows.resolve(execution)
        if restart:
            flow = None  # it restarts at the contact's next message
        step = flow.steps.get(execution.current_step) if flow else None
        timeout = getattr(step, "timeout", None)
        if execution.status != "waiting" or flow is None or timeout is None:
            return result
        log.info(
            "flow.step.timeout contact=%s flow=%s step=%s next=%s",
            contact.id,
            flow.id,
            execution.current_step,
            timeout.next,
        )
        execution.current_step = timeout.next
        execution.step_state = {}
        execution.wait_deadline = None
        context = self._context(flow, execution, contact, None, history, result, entitlements)
        self._run_or_fail(flow, context, result, resume=False)
        return result

    def run_step(
        self,
        execution: ExecutionState | None,
        flow_id: str,
        step_id: str,
        inbound: InboundMessage | None,
        contact: Contact,
        history: Callable[[int], list[HistoryMessage]],
        entitlements: Entitlements | None = None,
        variables: Mapping[str, object] | None = None,
    ) -> TurnResult:
        """Run one named step and stop there (a Twilio Studio step endpoint).

        Whatever the step leads to is not run: the caller (Studio) decides. A
        step the execution waits at is resumed with `inbound`; any other is
        entered with it.

        Args:
            execution: The contact's open execution; a new one of `flow_id` is
                started when it is None, ended or of another flow.
            flow_id: The flow.
            step_id: The step to run.
            inbound: The contact's text (``Body``), or None.
            contact: Who it is for.
            history: ``history(n)``: the last n messages.
            entitlements: Who may pass paywalls; everyone when None.
            variables: Set in the execution's ``vars`` before the step runs.

        Returns:
            The turn. Its execution stands at the step the run leads to
            (status ``active``), still at `step_id` when the step waits for an
            answer (``waiting``), or has ended. A failing step answers with the
            flow's fallback, as in `run_turn`.

        Raises:
            KeyError: no such flow or step (the message names it).
        """
        flow = self.flows.get(flow_id)
        if flow is None or step_id not in flow.steps:
            what = f"flow {flow_id!r}" if flow is None else f"step {step_id!r} in {flow_id!r}"
            raise KeyError(f"no {what}")
        result = TurnResult(execution=execution)
        if execution is None or execution.flow_id != flow_id or execution.status in _CLOSED:
            execution = ExecutionState(
                flow_id=flow.id,
                flow_version=flow.version,
                current_step=step_id,
                variables=dict(flow.variables),
            )
            result.execution, result.started = execution, True
        execution.variables.update(variables or {})
        resume = execution.status == "waiting" and execution.current_step == step_id
        if not resume:
            execution.current_step, execution.step_state = step_id, {}
        context = self._context(flow, execution, contact, inbound, history, result, entitlements)
        step = flow.steps[step_id]
        try:
            result.steps.append(step_id)
            outcome = step.resume(context) if resume else step.enter(context)
            if isinstance(outcome, Jump):
                raise StepError(step_id, "call and goto steps cannot run one step at a time")
            # Studio keeps the time (its widget's own timeout): no Parley timer fires.
            execution.wait_deadline = None
            if isinstance(outcome, Wait):
                execution.status = "waiting"
                return result
            target = None
            if isinstance(outcome, Continue):
                target = outcome.target or resolve_next(step.next, context)
            execution.step_state = {}
            if target is None:
                execution.status = "ended"
            else:
                execution.status, execution.current_step = "active", target
        except (StepError, TemplateFailure) as error:
            self._fail(flow, context, result, _as_step_error(error, step_id))
        return result

    def enter_step(
        self,
        execution: ExecutionState,
        step_id: str,
        contact: Contact,
        history: Callable[[int], list[HistoryMessage]],
        entitlements: Entitlements | None = None,
    ) -> TurnResult:
        """Enter `step_id` afresh with no inbound message (an agent handed back there).

        Raises:
            KeyError: the execution's flow is not loaded or has no such step.
        """
        result = TurnResult(execution=execution)
        flow = self.flows.resolve(execution)[0]
        if flow is None or step_id not in flow.steps:
            raise KeyError(f"flow {execution.flow_id!r} has no step {step_id!r}")
        execution.current_step, execution.step_state, execution.wait_deadline = step_id, {}, None
        context = self._context(flow, execution, contact, None, history, result, entitlements)
        self._run_or_fail(flow, context, result, resume=False)
        return result

    def _run_or_fail(
        self, flow: Flow, context: StepContext, result: TurnResult, resume: bool
    ) -> None:
        """Run steps; a failing step answers with the fallback instead of raising."""
        try:
            self._run(flow, context, result, resume=resume)
        except (StepError, TemplateFailure) as error:
            self._fail(flow, context, result, _as_step_error(error, context.step_id))

    def _context(
        self,
        flow: Flow,
        execution: ExecutionState,
        contact: Contact,
        inbound: InboundMessage | None,
        history: Callable[[int], list[HistoryMessage]],
        result: TurnResult,
        entitlements: Entitlements | None,
    ) -> StepContext:
        context = StepContext(
            flow=flow,
            step_id=execution.current_step,
            execution=execution,
            contact=contact,
            input=inbound,
            templates=self.templates,
            llm=self.llm,
            clock=self.clock,
            history=history_with_turn(history, result.replies),
            default_model=self.default_model,
            replies=result.replies,
            effects=result.effects,
            entitlements=entitlements or AlwaysEntitled(),
            http=self.http,
            env=self.env,
            deadline=time.monotonic() + self.turn_seconds if self.turn_seconds else None,
            deadline_seconds=self.turn_seconds or 0.0,
            moderator=self.moderator,
            moderation=result.moderation,
        )
        context.llm = RecordingLLM(self.llm, context, result.llm_calls)
        return context

    def _run(self, flow: Flow, context: StepContext, result: TurnResult, resume: bool) -> None:
        execution = context.execution
        execution.status = "active"
        while True:
            if len(result.steps) >= self.max_steps:
                raise FlowLoopError(flow.id, result.steps)
            step = flow.steps[execution.current_step]
            context.step_id = execution.current_step
            context.time_left()  # past the turn's deadline, no further step runs
            result.steps.append(context.step_id)
            started = time.perf_counter()
            outcome = step.resume(context) if resume else step.enter(context)
            log.info(
                "flow.step.run contact=%s flow=%s step=%s kind=%s phase=%s outcome=%s ms=%d",
                context.contact.id,
                flow.id,
                context.step_id,
                step.kind,
                "resume" if resume else "enter",
                type(outcome).__name__.lower(),
                (time.perf_counter() - started) * 1000,
            )
            resume = False
            if isinstance(outcome, Jump):
                flow = calls.jump(self.flows, context, result, outcome)
                execution = context.execution
                continue
            if isinstance(outcome, Wait):
                execution.status = "waiting"
                execution.wait_deadline = outcome.deadline
                return
            target = None
            if isinstance(outcome, Continue):
                target = outcome.target or resolve_next(step.next, context)
            while target is None:  # the flow ends here: back to a caller, if any
                back = calls.come_back(self.flows, context)
                if back is None:
                    execution.status = "ended"
                    return
                flow, target = back
            execution.current_step = target
            execution.step_state = {}
            execution.wait_deadline = None

    def _fail(self, flow: Flow, context: StepContext, result: TurnResult, error: StepError) -> None:
        """Answer with the fallback; keep the execution where a retry makes sense."""
        log.error(
            "flow.step.failed contact=%s flow=%s step=%s reason=%s",
            context.contact.id,
            flow.id,
            error.step_id,
            error.reason,
        )
        result.error = error
        if isinstance(error, FlowLoopError):
            # A loop through `say` steps would otherwise send the same texts
            # dozens of times before the fallback: keep only what steps outside
            # the loop said.
            visits = Counter(result.steps)
            result.replies[:] = [reply for reply in result.replies if visits[reply.step_id] == 1]
        # A step that can be tried again (an LLM call that timed out) waits for
        # the contact's next message; anything else would fail the same way.
        context.execution.status = "waiting" if error.retryable else "failed"
        try:
            # After a `call` or `goto`, the flow running is that one (context.flow).
            text = self.templates.render(context.flow.fallback, context.template_context())
        except TemplateFailure:
            text = DEFAULT_FALLBACK
        result.replies.append(Reply(text=text, step_id=error.step_id, author="system"))


def _as_step_error(error: StepError | TemplateFailure, step_id: str) -> StepError:
    if isinstance(error, StepError):
        return error
    return StepError(step_id, f"template failed: {error}")
