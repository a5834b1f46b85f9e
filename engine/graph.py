"""A flow as a graph: its edges with labels, how each step is drawn, and Mermaid text.

Everything here is derived from the step models (`StepBase.targets`,
`StepBase.waits`, whether a kind takes a ``next``) and the `STEP_KINDS` union,
never from a list of kind names, so a new step kind is drawn and checked
without changes here. `engine.validate` uses the same edges for its loop and
"can it finish" checks; ``flask flows graph`` renders `mermaid` and, through
Graphviz, an SVG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from pydantic import ValidationError

from engine.flow import Flow, Location
from engine.steps import STEP_KINDS, StepBase
from engine.steps.base import Transition
from engine.templating import expression_of

#: Fill colours given to the step kinds in `STEP_KINDS` order (then repeated).
PALETTE = (
    "#dbeafe",
    "#fef3c7",
    "#ede9fe",
    "#fce7f3",
    "#dcfce7",
    "#fee2e2",
    "#e5e7eb",
    "#cffafe",
    "#ffedd5",
    "#f5f5f4",
    "#ecfccb",
    "#e0e7ff",
)

#: Where `next`-like failure exits sit: variables a step stores are not set
#: when it leaves through one of these.
FAILURE_EXITS = frozenset({"retry", "timeout", "fail"})


@dataclass(frozen=True)
class Edge:
    """One transition of the graph.

    Attributes:
        source: The step it leaves.
        target: The step it leads to.
        location: Where it is written in the source step, e.g. ``("next", 0)``.
        label: The condition (``vars.goal.agreed``), ``else``, or the field
            that leads there (``retry``, ``timeout``); empty for a plain ``next``.
    """

    source: str
    target: str
    location: Location
    label: str

    @property
    def failure(self) -> bool:
        """Whether the edge is a failure exit (a retry or timeout ran out)."""
        return bool(self.location) and self.location[0] in FAILURE_EXITS


def _at(step: StepBase, location: Location) -> Any:
    """The value at `location` inside a step (attributes and list indexes), or None."""
    node: Any = step
    for part in location:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict):
            node = node.get(part)
        elif isinstance(part, str):
            node = getattr(node, part.rstrip("_"), None) or getattr(node, part + "_", None)
        else:
            return None
    return node


def condition_text(source: str) -> str:
    """A condition as people read it: ``"{{ vars.x }}"`` → ``vars.x``."""
    return (expression_of(source, bare=True) or source).strip()


def edges(flow: Flow) -> list[Edge]:
    """Every transition of the flow, in file order, targets unknown to the flow included."""
    found: list[Edge] = []
    for step_id, step in flow.steps.items():
        for location, target in step.targets():
            node = _at(step, location)
            if isinstance(node, Transition):
                label = "else" if node.else_ is not None else condition_text(node.if_ or "")
            elif location and location[-1] == "next" and len(location) > 1:
                label = ".".join(str(part) for part in location[:-1])
            elif location == ("next",):
                label = ""
            else:
                label = ".".join(str(part) for part in location)
            found.append(Edge(step_id, target, tuple(location), label))
    return found


_TAKES_NEXT: dict[type[StepBase], bool] = {}


def takes_next(step: StepBase) -> bool:
    """Whether the step's kind routes with ``next`` (``branch`` and ``end`` refuse one).

    Asked of the model itself, once per kind: the step, with a ``next`` added.
    """
    kind = type(step)
    if kind not in _TAKES_NEXT:
        try:
            kind.model_validate({**_raw(step), "next": "x"})
            _TAKES_NEXT[kind] = True
        except ValidationError:
            _TAKES_NEXT[kind] = False
    return _TAKES_NEXT[kind]


def _raw(step: StepBase) -> dict[str, Any]:
    return step.model_dump(by_alias=True, exclude_defaults=True, exclude={"next"})


def can_finish(step: StepBase) -> bool:
    """Whether the execution can end at this step.

    A step ends the flow when it has no ``next`` (the runner ends an execution
    whose step leads nowhere), and a kind that refuses ``next`` ends it when it
    leads nowhere at all (``end``).
    """
    if takes_next(step):
        return step.next is None
    return not any(True for _ in step.targets())


KIND_INDEX: dict[type[StepBase], int] = {kind: index for index, kind in enumerate(STEP_KINDS)}


@dataclass(frozen=True)
class NodeStyle:
    """How one step is drawn.

    Attributes:
        shape: ``terminal`` (ends the flow), ``decision`` (only routes),
            ``wait`` (waits for the contact) or ``action``.
        fill: The kind's colour.
    """

    shape: str
    fill: str


def node_style(step: StepBase) -> NodeStyle:
    """The shape and colour of a step, from what its kind does."""
    fill = PALETTE[KIND_INDEX.get(type(step), len(PALETTE) - 1) % len(PALETTE)]
    if not takes_next(step) and not any(True for _ in step.targets()):
        return NodeStyle("terminal", fill)
    if not takes_next(step):
        return NodeStyle("decision", fill)
    if step.waits:
        return NodeStyle("wait", fill)
    return NodeStyle("action", fill)


def preview(step: StepBase, limit: int = 40) -> str:
    """The start of the step's text (``say``, ``ask`` …), when its kind key holds text."""
    value = getattr(step, step.kind, None)
    if not isinstance(value, str) or value in ("", "True"):
        return ""
    text = " ".join(value.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mermaid_text(text: str) -> str:
    """Text inside Mermaid's quotes: entity codes for what would end the string."""
    return (
        text.replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("|", "#124;")
    )


_MERMAID_SHAPES = {
    "terminal": ('(["', '"])'),
    "decision": ('{"', '"}'),
    "wait": ('[/"', '"/]'),
    "action": ('["', '"]'),
}


def mermaid(flow: Flow) -> str:
    """The flow as a Mermaid flowchart (GitHub renders it in Markdown).

    Node ids are ``s_<step id>`` since ``end`` is a Mermaid keyword. Waiting
    steps are parallelograms, routing steps diamonds, ends stadiums, the rest
    rectangles; each kind has its fill colour; edges carry their conditions.
    """
    lines = [
        f"%% Generated by `flask flows graph` from {PurePath(flow.source).name}",
        "flowchart TD",
        '  start(("start"))',
    ]
    kinds_used: dict[str, str] = {}
    for step_id, step in flow.steps.items():
        style = node_style(step)
        opening, closing = _MERMAID_SHAPES[style.shape]
        body = preview(step)
        label = _mermaid_text(step_id) + "<br/><i>" + step.kind + "</i>"
        if body:
            label += "<br/>" + _mermaid_text(body)
        lines.append(f"  s_{step_id}{opening}{label}{closing}:::kind_{step.kind}")
        kinds_used[step.kind] = style.fill
    lines.append(f"  start --> s_{flow.start}")
    for edge in edges(flow):
        arrow = "-.->" if edge.failure else "-->"
        label = f'|"{_mermaid_text(edge.label)}"|' if edge.label else ""
        lines.append(f"  s_{edge.source} {arrow}{label} s_{edge.target}")
    for kind, fill in kinds_used.items():
        lines.append(f"  classDef kind_{kind} fill:{fill},stroke:#555")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DotNode:
    """A step for Graphviz: id, label lines and attributes."""

    id: str
    attributes: dict[str, str]


_DOT_SHAPES = {
    "terminal": {"shape": "doublecircle"},
    "decision": {"shape": "diamond"},
    "wait": {"shape": "parallelogram"},
    "action": {"shape": "box", "style": "rounded,filled"},
}


def dot_nodes(flow: Flow) -> list[DotNode]:
    """The steps with Graphviz attributes (shape by what the kind does, fill by kind)."""
    nodes = []
    for step_id, step in flow.steps.items():
        style = node_style(step)
        label = f"{step_id}\n({step.kind})"
        body = preview(step, 32)
        if body:
            label += f"\n{body}"
        attributes = {
            "label": label,
            "style": "filled",
            "fillcolor": style.fill,
            **_DOT_SHAPES[style.shape],
        }
        nodes.append(DotNode(step_id, attributes))
    return nodes
