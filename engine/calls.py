"""Subflows (``call``) and hand-overs (``goto``): switching an execution between flows.

A ``call`` keeps the calling flow's state in a stack of frames, stored in the
execution's step results under the reserved key `STACK_KEY` (JSON-able, so it
is saved with the execution and survives restarts; templates could read it as
``steps._call_stack`` but have no reason to). Each frame holds the
caller's flow id, version, calling step, ``vars`` and step results. The
subflow runs in the same execution; when it ends, the top frame is restored
and the calling step gets the subflow's ``vars`` as its result.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engine.ports import ExecutionState
from engine.steps.base import Continue, Jump, StepContext, StepError, resolve_next
from engine.steps.call import MAX_DEPTH

if TYPE_CHECKING:
    from engine.flow import Flow, FlowSet
    from engine.turn_result import TurnResult

log = logging.getLogger("parley.engine")

#: Where the frames of calling flows are kept in `ExecutionState.step_results`.
STACK_KEY = "_call_stack"


def stack_of(execution: ExecutionState) -> list[dict[str, Any]]:
    """The frames of the flows waiting for a subflow, innermost last."""
    return list(execution.step_results.get(STACK_KEY) or [])


def push(
    execution: ExecutionState,
    caller_step: str,
    child_id: str,
    child_version: str,
    child_start: str,
    variables: dict[str, Any],
    max_depth: int,
) -> None:
    """Keep the caller's state aside and move the execution to the subflow's start.

    Raises:
        StepError: more than `max_depth` subflows would run inside one another.
    """
    stack = stack_of(execution)
    if len(stack) >= max_depth:
        raise StepError(
            caller_step,
            f"subflows nested more than {max_depth} deep (does {child_id!r} call itself?)",
        )
    results = {key: value for key, value in execution.step_results.items() if key != STACK_KEY}
    stack.append(
        {
            "flow_id": execution.flow_id,
            "flow_version": execution.flow_version,
            "step": caller_step,
            "variables": execution.variables,
            "step_results": results,
        }
    )
    execution.flow_id = child_id
    execution.flow_version = child_version
    execution.current_step = child_start
    execution.variables = variables
    execution.step_results = {STACK_KEY: stack}
    execution.step_state = {}
    execution.wait_deadline = None


def pop(execution: ExecutionState) -> tuple[str, dict[str, Any]] | None:
    """Back to the caller of a subflow that ended, or None when there is no caller.

    Returns:
        The calling step's id (the execution now stands there, in the calling
        flow, with its variables and step results back) and the subflow's
        result (its ``vars`` at its end).
    """
    stack = stack_of(execution)
    if not stack:
        return None
    frame = stack.pop()
    result = dict(execution.variables)
    execution.flow_id = frame["flow_id"]
    execution.flow_version = frame["flow_version"]
    execution.current_step = frame["step"]
    execution.variables = frame["variables"]
    execution.step_results = dict(frame["step_results"])
    if stack:
        execution.step_results[STACK_KEY] = stack
    execution.step_state = {}
    execution.wait_deadline = None
    return frame["step"], result


def jump(flows: FlowSet, context: StepContext, result: TurnResult, jump: Jump) -> Flow:
    """Enter a subflow (``call``) or hand over to another flow (``goto``), for the runner.

    Returns:
        The flow now running; `context` now holds its execution (a new one
        for ``goto``, which ends the old one).

    Raises:
        StepError: no such flow (validation reports this before a flow
            runs), or subflows nested too deep.
    """
    target = flows.get(jump.flow_id)
    if target is None:
        raise StepError(context.step_id, f"no flow {jump.flow_id!r} is loaded")
    variables = {**target.variables, **jump.variables}
    execution = context.execution
    if jump.returns:
        push(
            execution,
            context.step_id,
            target.id,
            target.version,
            target.start,
            variables,
            MAX_DEPTH,
        )
    else:
        execution.status = "ended"
        execution = ExecutionState(
            flow_id=target.id,
            flow_version=target.version,
            current_step=target.start,
            status="active",
            variables=variables,
        )
        context.execution = execution
        result.execution = execution
        result.started = True
    log.info(
        "flow.%s contact=%s flow=%s step=%s",
        "call" if jump.returns else "goto",
        context.contact.id,
        target.id,
        target.start,
    )
    context.flow = target
    return target


def come_back(flows: FlowSet, context: StepContext) -> tuple[Flow, str | None] | None:
    """A subflow ended: back in the calling flow, where does it go on?

    Returns:
        None when no flow called this one; else the calling flow and the
        step after the calling step (None when the caller ends there too).
    """
    execution = context.execution
    back = pop(execution)
    if back is None:
        return None
    caller_step, value = back
    resolve = getattr(flows, "resolve", None)
    flow = resolve(execution)[0] if resolve else flows.get(execution.flow_id)
    if flow is None or caller_step not in flow.steps:
        raise StepError(caller_step, f"the calling flow {execution.flow_id!r} is gone")
    context.flow = flow
    context.step_id = caller_step
    step = flow.steps[caller_step]
    outcome = step.returned(context, value)  # type: ignore[union-attr]
    assert isinstance(outcome, Continue)
    return flow, outcome.target or resolve_next(step.next, context)
