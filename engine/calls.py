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

from typing import Any

from engine.ports import ExecutionState
from engine.steps.base import StepError

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
