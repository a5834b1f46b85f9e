"""Flows: the pydantic model of a flow file, and loading flow files with line numbers."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.ports import ExecutionState, FlowArchive
from engine.steps import Step, StepBase, step_kind
from engine.steps.ask import fold
from engine.steps.paywall import PaywallTexts

_STEP: TypeAdapter[Any] = TypeAdapter(Step)

DEFAULT_FALLBACK = "Sorry, I'm having trouble right now. Please try again in a minute."

Location = tuple[str | int, ...]


class Trigger(BaseModel):
    """When a flow starts for a contact who is in no flow."""

    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = []
    """Messages that start this flow (whole message, case and accents ignored)."""
    default: bool = False
    """Start this flow for any message no keyword matched (one flow at most)."""


class LLMDefaults(BaseModel):
    """Defaults for the flow's ``llm`` steps."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    """The model, e.g. ``gpt-4o-mini``; ``OPENAI_MODEL`` when absent."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature, 0 to 2."""


class Flow(BaseModel):
    """One flow file: a graph of steps a contact moves through."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)
    """The flow's name: lower case, digits, ``_`` and ``-``."""
    description: str = ""
    """What the flow is for, in a sentence."""
    trigger: Trigger = Trigger()
    """Keywords that start it, and whether it is the default flow (of its numbers,
    when it has ``numbers``)."""
    numbers: list[str] = []
    """The numbers it answers on, as a Studio flow is bound to a number
    (``whatsapp:+14155238886``, ``+14155238886``): it starts only for messages
    written to one of them, and the only flow bound to a number starts on any
    message there. Empty: every number."""
    responders: bool = True
    """Whether the responders of ``_settings.yaml`` (opt-out keywords, reset
    code, welcome, after-hours) answer before this flow; imported Studio flows
    say ``false``, as Studio has no global keywords."""
    transcribe: StrictBool = True
    """Transcribe its contacts' voice notes (``voice_notes`` in ``_settings.yaml``);
    ``false``: its steps get the audio as media, with no text, whatever their own
    ``transcribe`` says."""
    llm: LLMDefaults = LLMDefaults()
    """Defaults for its ``llm`` steps."""
    entitlement: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    """Paywall the whole flow: only contacts with this entitlement (e.g.
    ``subscription``) get past the start, while the paywall is on."""
    paywall: PaywallTexts = PaywallTexts()
    """What an unentitled contact is told (with ``entitlement``)."""
    fallback: str = DEFAULT_FALLBACK
    """Sent when a step fails (the LLM is down, an answer never fits)."""
    variables: dict[str, Any] = {}
    """Initial values of ``vars``."""
    start: str
    """The first step."""
    steps: dict[str, Step] = Field(min_length=1)
    """The steps by id."""
    on_change: Literal["keep", "restart", "move"] = "keep"
    """What happens to executions of an older version when this file changes:
    ``keep`` (they finish on the version they started), ``restart`` (they end
    and this version starts at the contact's next message) or ``move`` (they go
    on in this version at the same step id, or the one ``step_map`` names)."""
    step_map: dict[str, str] = {}
    """``{old_step: new_step}`` for steps renamed since the last version; implies
    ``on_change: move``."""

    @field_validator("numbers")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for number in value:
            if not re.fullmatch(r"(?:whatsapp:)?\+[1-9][0-9]{6,14}", number):
                raise ValueError(
                    f"{number!r} is not a number: write +14155238886 or whatsapp:+14155238886"
                )
        return value

    def answers_on(self, address: str | None) -> bool:
        """Whether a message written to `address` (Twilio's ``To``) may start this flow."""
        return not self.numbers or address is None or address in self.numbers

    @model_validator(mode="after")
    def _step_map_moves(self) -> Flow:
        if self.step_map and self.on_change == "restart":
            raise ValueError("step_map moves executions: it cannot go with on_change: restart")
        if self.step_map:
            self.on_change = "move"
        return self

    _source: str = PrivateAttr(default="<flow>")
    _lines: dict[Location, int] = PrivateAttr(default_factory=dict)
    _version: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """The file the flow was read from."""
        return self._source

    @property
    def version(self) -> str:
        """A content hash of the flow file (12 hex digits)."""
        return self._version

    def line_of(self, location: Location) -> int:
        """The line of `location` in the file, or of its nearest enclosing key."""
        for end in range(len(location), 0, -1):
            line = self._lines.get(tuple(location[:end]))
            if line is not None:
                return line
        return 1


@dataclass(frozen=True)
class FlowProblem:
    """One thing wrong with a flow file.

    Attributes:
        source: The file.
        line: The 1-based line in it.
        message: What is wrong.
        hint: How to fix it, in one line (may be empty).
        flow_id: The flow, when known.
        step_id: The step, when the problem is in one.
        warning: A likely mistake that does not stop the flow from loading.
    """

    source: str
    line: int
    message: str
    hint: str = ""
    flow_id: str | None = None
    step_id: str | None = None
    warning: bool = False

    def __str__(self) -> str:
        where = f" step {self.step_id!r}:" if self.step_id else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        severity = " warning:" if self.warning else ""
        return f"{self.source}:{self.line}:{where}{severity} {self.message}{hint}"


class FlowError(Exception):
    """Flows that cannot be used; `problems` lists every problem found.

    Attributes:
        problems: Each problem, with file and line.
    """

    def __init__(self, problems: list[FlowProblem]) -> None:
        self.problems = problems
        report = "\n".join(str(problem) for problem in problems)
        super().__init__(f"{len(problems)} problem(s) in the flows:\n{report}")


def yaml_lines(text: str) -> tuple[dict[Location, int], list[tuple[Location, int]]]:
    """Map every key path of a YAML document to the 1-based line it stands on.

    Returns:
        ``{("steps", "welcome", "say"): 12, ...}`` (sequence items keyed by
        index), and the keys that stand twice in one mapping, with the line of
        the second (PyYAML would silently keep only the last).

    Raises:
        yaml.YAMLError: the text is not YAML.
    """
    lines: dict[Location, int] = {}
    duplicates: list[tuple[Location, int]] = []
    root = yaml.compose(text, Loader=yaml.SafeLoader)

    def walk(node: yaml.Node, path: Location) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                if name in seen:
                    duplicates.append(((*path, name), key.start_mark.line + 1))
                    continue
                seen.add(name)
                lines[(*path, name)] = key.start_mark.line + 1
                walk(value, (*path, name))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                walk(item, (*path, index))

    if root is not None:
        walk(root, ())
    return lines, duplicates


def _location_in_file(loc: tuple[Any, ...], data: Any) -> Location:
    """A pydantic error location with the union tags (step kinds) removed."""
    path: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        # The step's kind is also a key of the step (`say: ...`), so the tag must
        # be recognised before keys are: `steps.a.say.bogus` is the key `bogus`.
        at_step = index == 2 and loc[0] == "steps" and isinstance(node, dict)
        if at_step and step_kind(node) == part:
            continue  # a discriminated-union tag, not a key of the file
        if isinstance(node, list) and isinstance(part, str):
            continue  # a union member's label (`list[Transition]`), not a key
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        else:
            path.append(part)
            node = None
    return tuple(path)


def _step_of(location: Location) -> str | None:
    if len(location) >= 2 and location[0] == "steps":
        return str(location[1])
    return None


def parse_flow(text: str, source: str) -> tuple[Flow | None, list[FlowProblem]]:
    """Parse one flow file's text.

    Args:
        text: The YAML.
        source: The file name, used in problems.

    Returns:
        The flow (None when its shape is wrong) and the shape problems found.
    """
    try:
        data = yaml.safe_load(text)
        lines, duplicates = yaml_lines(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        reason = getattr(error, "problem", None) or str(error)
        return None, [FlowProblem(source, line, f"not valid YAML: {reason}")]
    if not isinstance(data, dict):
        return None, [FlowProblem(source, 1, "a flow file is a mapping with id, start and steps")]
    flow_id = data.get("id") if isinstance(data.get("id"), str) else None
    problems = [
        FlowProblem(
            source,
            line,
            f"{'.'.join(str(part) for part in location)} is written twice; "
            "only the last would count",
            hint="rename or remove one of them",
            flow_id=flow_id,
            step_id=_step_of(location),
        )
        for location, line in duplicates
    ]
    try:
        flow = Flow.model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            location = _location_in_file(item["loc"], data)
            field_name = ".".join(str(part) for part in location) or "flow"
            problems.append(
                FlowProblem(
                    source,
                    _line(lines, location),
                    f"{field_name}: {item['msg']}",
                    flow_id=flow_id,
                    step_id=_step_of(location),
                )
            )
        return None, problems
    problems.extend(
        FlowProblem(
            source,
            _line(lines, ("step_map", old_step)),
            f"step_map: {old_step!r} moves to unknown step {new_step!r}",
            hint=f"one of: {', '.join(sorted(flow.steps))}",
            flow_id=flow.id,
        )
        for old_step, new_step in flow.step_map.items()
        if new_step not in flow.steps
    )
    if problems:
        return None, problems
    flow._source = source
    flow._lines = lines
    flow._version = hashlib.sha256(text.encode()).hexdigest()[:12]
    return flow, []


class UnparsedStep(StepBase):
    """A step whose shape is wrong, kept in a partial flow for the graph checks.

    It leads where its raw ``next``, ``then``, ``else``, ``success``, ``fail``
    and ``timeout.next`` say, and counts as waiting (no loop is blamed on it).
    """

    kind: ClassVar[str] = "unparsed"
    waits: ClassVar[bool] = True

    raw_targets: list[str] = Field(default_factory=list)
    """The step ids its raw definition names."""

    def targets(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Each step id the raw definition names."""
        for target in self.raw_targets:
            yield (), target


def _raw_targets(raw: Any) -> list[str]:
    """Step ids named by a raw step's transition keys, however wrong its shape."""
    found: list[str] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key in ("next", "then", "else", "success", "fail") and isinstance(value, str):
                found.append(value)
            elif isinstance(value, dict | list):
                found.extend(_raw_targets(value))
    elif isinstance(raw, list):
        for item in raw:
            found.extend(_raw_targets(item))
    return found


def partial_flow(text: str, source: str) -> Flow | None:
    """The flow of a file with shape errors, with only the steps that parsed.

    Each step that did not parse is an `UnparsedStep`, so that the graph checks
    (unknown targets, missing ``else``, loops, prompts) still run on the others:
    one ``flows validate`` shows every mistake.

    Returns:
        The partial flow, or None when the problem is outside the steps (or
        no step parsed), which leaves nothing to check.
    """
    try:
        data = yaml.safe_load(text)
        lines, _ = yaml_lines(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
        return None
    good: dict[str, Any] = {}
    bad: dict[str, Any] = {}
    for step_id, raw in data["steps"].items():
        try:
            _STEP.validate_python(raw)
            good[str(step_id)] = raw
        except ValidationError:
            bad[str(step_id)] = raw
    if not bad or not good:
        return None
    try:
        flow = Flow.model_validate({**data, "steps": good})
    except ValidationError:
        return None
    for step_id, raw in bad.items():
        flow.steps[step_id] = UnparsedStep(raw_targets=_raw_targets(raw))  # type: ignore[assignment]
    flow._source = source
    flow._lines = lines
    return flow


def _line(lines: dict[Location, int], location: Location) -> int:
    for end in range(len(location), 0, -1):
        if tuple(location[:end]) in lines:
            return lines[tuple(location[:end])]
    return 1


@dataclass
class FlowSet:
    """The loaded flows, by id, with trigger matching.

    Attributes:
        flows: Flow id → flow.
    """

    flows: dict[str, Flow] = field(default_factory=dict)
    archive: FlowArchive | None = None
    """Earlier versions of flows, for executions that started on one (None: none kept)."""
    _versions: dict[tuple[str, str], Flow | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def get(self, flow_id: str) -> Flow | None:
        """The flow with this id, or None."""
        return self.flows.get(flow_id)

    def version(self, flow_id: str, version: str) -> Flow | None:
        """The flow as it was at `version` (parsed from the archive once, then cached)."""
        current = self.flows.get(flow_id)
        if current is not None and current.version == version:
            return current
        key = (flow_id, version)
        if key not in self._versions:
            text = self.archive.flow_text(flow_id, version) if self.archive else None
            flow = parse_flow(text, f"{flow_id}@{version}")[0] if text is not None else None
            self._versions[key] = flow if flow is not None and flow.id == flow_id else None
        return self._versions[key]

    def resolve(self, execution: ExecutionState) -> tuple[Flow | None, bool]:
        """The definition an execution runs on, after its flow file changed or not.

        An execution stays on the version it started with (``on_change: keep``),
        unless the current version says ``on_change: move`` (or has a
        ``step_map``) and has the execution's step, mapped: the execution is then
        moved to the current version, at that step, in place.

        Returns:
            The flow (None when neither the current file nor the archive has
            it), and whether the execution must restart on the current version
            (``on_change: restart``).
        """
        current = self.flows.get(execution.flow_id)
        if current is None or execution.flow_version in ("", current.version):
            return current or self.version(execution.flow_id, execution.flow_version), False
        if current.on_change == "restart":
            return current, True
        if current.on_change == "move":
            target = current.step_map.get(execution.current_step, execution.current_step)
            old = self.version(execution.flow_id, execution.flow_version)
            if target in current.steps:
                old_step = old.steps.get(execution.current_step) if old else None
                if old_step is None or old_step.kind != current.steps[target].kind:
                    execution.step_state = {}
                execution.flow_version = current.version
                execution.current_step = target
                return current, False
        return self.version(execution.flow_id, execution.flow_version), False

    @property
    def default(self) -> Flow | None:
        """The flow whose trigger says ``default: true``, if any."""
        return next((flow for flow in self.flows.values() if flow.trigger.default), None)

    def match(self, text: str, address: str | None = None) -> Flow | None:
        """The flow a message starts, among those that answer on `address`.

        A keyword, else the default flow bound to `address`, else the only flow
        bound to `address` (a number with one flow starts it on any message, as
        Studio does), else the default flow of every number.

        Args:
            text: The message.
            address: The number it was written to (Twilio's ``To``); None: any.
        """
        folded = fold(text)
        candidates = [flow for flow in self.flows.values() if flow.answers_on(address)]
        bound = [flow for flow in candidates if flow.numbers and address is not None]
        for flow in bound + candidates:
            if any(fold(keyword) == folded for keyword in flow.trigger.keywords):
                return flow
        for flow in bound:
            if flow.trigger.default:
                return flow
        if len(bound) == 1:
            return bound[0]
        return next((flow for flow in candidates if flow.trigger.default), None)

    def responders_apply(self, flow_id: str | None, text: str, address: str | None = None) -> bool:
        """Whether the responders answer before the flow in this turn.

        Args:
            flow_id: The flow of the contact's open execution, or None.
            text: The inbound message.
            address: The number it was written to (Twilio's ``To``).

        Returns:
            The ``responders`` setting of the execution's flow, else of the flow
            the message would start; True when no flow would run.
        """
        flow = self.flows.get(flow_id) if flow_id else None
        flow = flow or self.match(text, address)
        return flow.responders if flow is not None else True


def load_flow_files(flows_dir: Path) -> tuple[list[Flow], list[FlowProblem]]:
    """Parse every ``*.yaml``/``*.yml`` file of a folder (shape only, sorted by name).

    Returns:
        The flows that parsed, and the problems of those that did not.
    """
    flows: list[Flow] = []
    problems: list[FlowProblem] = []
    paths = sorted([*flows_dir.glob("*.yaml"), *flows_dir.glob("*.yml")])
    # `_settings.yaml` (responders) and other `_*` files are not flows.
    paths = [path for path in paths if not path.name.startswith("_")]
    if not paths:
        problems.append(FlowProblem(str(flows_dir), 1, "no flow files (*.yaml) in this folder"))
    for path in paths:
        flow, found = parse_flow(path.read_text(encoding="utf-8"), str(path))
        problems.extend(found)
        if flow is not None:
            flows.append(flow)
    return flows, problems
