"""The deeper checks of `engine.validate`: loops, finishing, data flow, sample renders.

- **Loops without a wait**: steps that never wait for the contact
  (`StepBase.waits` is False) forming a cycle run again and again in one turn
  until the runner's step budget stops them. A cycle with no way out is an
  error; one with a condition that can leave it is a warning.
- **A flow that cannot finish**: from a step that can be reached, some path
  must lead to a step that ends the execution; otherwise a contact who gets
  there is held by the flow for good (no trigger starts another flow for a
  contact inside one). A warning: an endless chat loop may be intended.
- **Data flow**: ``vars.x`` read at a step that some path from ``start``
  reaches without setting ``x`` (a warning: conditions may make that path
  impossible, which the graph cannot see).
- **Sample renders**: templates and prompt files rendered with
  `StrictUndefined` on a sample context built from the flow's variables,
  ``save_as`` and structured ``output`` schemas, which catches a misspelt key
  such as ``vars.goal.gaol`` or ``contact.nmae``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from jinja2 import UndefinedError

from engine.flow import Flow
from engine.graph import Edge, can_finish, edges
from engine.ports import InboundMessage
from engine.steps import STEP_KINDS, StepBase
from engine.steps.base import TemplateUse
from engine.templating import TemplateFailure, Templates

WAITING_KINDS = ", ".join(kind.kind for kind in STEP_KINDS if kind.waits)


def reachable(flow: Flow, graph: list[Edge]) -> set[str]:
    """The steps a path from ``start`` reaches (``start`` included when it exists)."""
    if flow.start not in flow.steps:
        return set()
    seen = {flow.start}
    todo = [flow.start]
    while todo:
        source = todo.pop()
        for edge in graph:
            if edge.source == source and edge.target in flow.steps and edge.target not in seen:
                seen.add(edge.target)
                todo.append(edge.target)
    return seen


def _closure(start: str, successors: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(successors.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(successors.get(node, ()))
    return seen


def loops_without_wait(flow: Flow) -> list[tuple[list[str], bool]]:
    """Cycles of steps that never wait, each once, in file order.

    Returns:
        ``(steps of the cycle in file order, whether a transition leaves it)``
        for each strongly connected group of non-waiting steps that loops.
    """
    quick = {step_id for step_id, step in flow.steps.items() if not step.waits}
    successors: dict[str, set[str]] = {step_id: set() for step_id in quick}
    for edge in edges(flow):
        if edge.source in quick and edge.target in quick:
            successors[edge.source].add(edge.target)
    after = {step_id: _closure(step_id, successors) for step_id in quick}
    found: list[tuple[list[str], bool]] = []
    done: set[str] = set()
    for step_id in flow.steps:
        if step_id not in quick or step_id in done or step_id not in after[step_id]:
            continue
        group = [
            other for other in flow.steps if other in after[step_id] and step_id in after[other]
        ]
        done.update(group)
        leaves = any(
            edge.source in group and edge.target in flow.steps and edge.target not in group
            for edge in edges(flow)
        ) or any(can_finish(flow.steps[member]) for member in group)
        found.append((group, leaves))
    return found


def trapped_entries(flow: Flow) -> list[str]:
    """Reachable steps from which no path leads to an end, where contacts enter them.

    Returns:
        Step ids in file order: ``start`` alone when the flow can never finish,
        else each trapped step that a finishing part of the flow leads into.
    """
    graph = [edge for edge in edges(flow) if edge.target in flow.steps]
    seen = reachable(flow, graph)
    # A transition to an unknown step is reported already: count it as a way
    # out rather than report the flow as unable to finish too.
    dangling = {edge.source for edge in edges(flow) if edge.target not in flow.steps}
    finishing = {
        step_id for step_id in seen if can_finish(flow.steps[step_id]) or step_id in dangling
    }
    predecessors: dict[str, set[str]] = {}
    for edge in graph:
        predecessors.setdefault(edge.target, set()).add(edge.source)
    can_end = set(finishing)
    todo = list(finishing)
    while todo:
        for source in predecessors.get(todo.pop(), ()):
            if source not in can_end:
                can_end.add(source)
                todo.append(source)
    trapped = seen - can_end
    if flow.start in trapped:
        return [flow.start]
    return [
        step_id
        for step_id in flow.steps
        if step_id in trapped and predecessors.get(step_id, set()) - trapped
    ]


def variables_on_every_path(flow: Flow) -> dict[str, set[str]]:
    """For each reachable step, the ``vars`` that every path from ``start`` sets before it.

    A step's own variables count on its transitions except failure exits
    (``retry``, ``timeout``, ``fail``), which leave before anything is stored.
    """
    graph = [edge for edge in edges(flow) if edge.target in flow.steps]
    seen = reachable(flow, graph)
    if not seen:
        return {}
    universe = set(flow.variables)
    for step in flow.steps.values():
        universe |= step.variables_set()
    before: dict[str, set[str]] = {step_id: set(universe) for step_id in seen}
    before[flow.start] = set(flow.variables)
    changed = True
    while changed:
        changed = False
        for step_id in seen:
            incoming_sets = [set(flow.variables)] if step_id == flow.start else []
            for edge in graph:
                if edge.target == step_id and edge.source in seen:
                    carried = set(before[edge.source])
                    if not edge.failure:
                        carried |= flow.steps[edge.source].variables_set()
                    incoming_sets.append(carried)
            value = set.intersection(*incoming_sets) if incoming_sets else set()
            if value != before[step_id]:
                before[step_id] = value
                changed = True
    return before


def sees_own_variables(step: StepBase, use: TemplateUse) -> bool:
    """Whether a template of the step runs after the step stored its variables.

    Transitions do; so does everything in a step that does not wait (a ``set``
    entry sees the entries above it), but not the question of a waiting step.
    """
    return (bool(use.path) and use.path[0] == "next") or not step.waits


# --- sample context -----------------------------------------------------------------


class Sample(str):
    """A stand-in value of unknown shape: any attribute or key gives another sample."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Sample:
        if name.startswith("_"):
            raise AttributeError(name)
        return Sample(name)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return Sample(key)
        return str.__getitem__(self, key)


def sample_of_schema(schema: dict[str, Any] | None) -> Any:
    """A value that fits a JSON Schema (``object``, ``string``, ``boolean`` …)."""
    if not isinstance(schema, dict):
        return Sample("sample")
    kind = schema.get("type")
    if kind == "object":
        return {
            name: sample_of_schema(sub) for name, sub in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        return [sample_of_schema(schema.get("items"))]
    return {"string": "sample", "boolean": True, "integer": 1, "number": 1.0}.get(
        str(kind), Sample("sample")
    )


def _output_sample(step: StepBase) -> Any:
    schema_of = getattr(step, "output_schema", None)
    schema = schema_of() if callable(schema_of) else None
    return sample_of_schema(schema) if schema else None


def _sample_of_variable(step: StepBase, name: str) -> Any:
    if name != getattr(step, "save_as", None):
        return Sample(name)
    output = _output_sample(step)
    if output is not None:
        return output
    choices = getattr(step, "choices", None)
    if isinstance(choices, list) and choices and isinstance(choices[0], str):
        return choices[0]
    return Sample(name)


def sample_context(flow: Flow) -> dict[str, Any]:
    """The names templates see, with sample values of the right shape where known."""
    produced: dict[str, list[Any]] = {}
    for step in flow.steps.values():
        for name in step.variables_set():
            produced.setdefault(name, []).append(_sample_of_variable(step, name))
    variables: dict[str, Any] = dict(flow.variables)
    for name, values in produced.items():
        if name in variables:
            continue
        first = values[0]
        same = all(value == first and type(value) is type(first) for value in values)
        variables[name] = first if same else Sample(name)
    return {
        "contact": {"name": "Sam", "phone": "+15550100100", "channel": "whatsapp"},
        "vars": variables,
        "input": InboundMessage(text="sample", channel="whatsapp").as_context(),
        "steps": {step_id: Sample(step_id) for step_id in flow.steps},
        "flow": {"id": flow.id, "description": flow.description},
        "now": dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC),
    }


def extra_samples(step: StepBase, names: Iterable[str]) -> dict[str, Any]:
    """Samples for a template's extra names: ``output`` from the step's schema."""
    extra: dict[str, Any] = {}
    for name in names:
        output = _output_sample(step) if name == "output" else None
        extra[name] = output if output is not None else Sample(name)
    return extra


def undefined_in_render(
    templates: Templates,
    context: dict[str, Any],
    *,
    source: str | None = None,
    prompt: str | None = None,
    bare: bool = False,
) -> str | None:
    """What is undefined when a template or prompt file renders on `context`, else None.

    Only undefined names count: other failures (comparing a sample text with
    a number) say nothing about the template.
    """
    try:
        if prompt is not None:
            templates.render_prompt(prompt, context)
        elif bare:
            templates.evaluate(source or "", context, bare=True)
        else:
            templates.render(source or "", context)
    except TemplateFailure as error:
        cause = error.__cause__
        if isinstance(cause, UndefinedError):
            return str(cause)
        if cause is None:  # `evaluate` of an expression that is itself undefined
            return error.reason
    return None
