"""Graph and template checks of flows, every problem reported at once with file:line.

Shape problems come from parsing (`engine.flow.parse_flow`); this module adds
what the shape cannot show: unknown ``next`` targets, unreachable steps,
transition lists without ``else``, missing prompt files, template syntax
errors and unknown variables, and problems across flows; `engine.checks`
adds loops that never wait, parts of a flow that can never finish, variables
read before every path sets them, and keys that are undefined when the
templates and prompt files render on a sample context.

Problems are errors unless marked `FlowProblem.warning`: a flow with warnings
loads (they are logged), one with errors does not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jinja2 import meta, nodes

from engine import checks
from engine.flow import (
    Flow,
    FlowError,
    FlowProblem,
    FlowSet,
    Location,
    UnparsedStep,
    load_flow_files,
    parse_flow,
    partial_flow,
)
from engine.steps.ask import fold
from engine.steps.base import StepBase, TemplateUse, Transition
from engine.steps.branch import BranchStep
from engine.templating import CONTEXT_NAMES, TemplateFailure, Templates

log = logging.getLogger("parley.flows")


class _Report:
    """Collects the problems of one flow."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.problems: list[FlowProblem] = []

    def add(
        self, location: Location, message: str, hint: str = "", *, warning: bool = False
    ) -> None:
        step_id = str(location[1]) if len(location) > 1 and location[0] == "steps" else None
        self.problems.append(
            FlowProblem(
                self.flow.source,
                self.flow.line_of(location),
                message,
                hint,
                flow_id=self.flow.id,
                step_id=step_id,
                warning=warning,
            )
        )


def validate_flow(flow: Flow, templates: Templates) -> list[FlowProblem]:
    """Every graph and template problem of one parsed flow.

    Args:
        flow: A flow that parsed.
        templates: The Jinja environment, with the prompts folder.

    Returns:
        The problems, in file order.
    """
    report = _Report(flow)
    step_ids = set(flow.steps)
    known = ", ".join(sorted(step_ids))
    if flow.start not in step_ids:
        report.add(("start",), f"start names unknown step {flow.start!r}", f"one of: {known}")
    for step_id, step in flow.steps.items():
        for location, target in step.targets():
            if target not in step_ids:
                report.add(
                    ("steps", step_id, *location),
                    f"leads to unknown step {target!r}",
                    f"one of: {known}",
                )
        transitions = step.branch if isinstance(step, BranchStep) else step.next
        if isinstance(transitions, list):
            field_name = "branch" if isinstance(step, BranchStep) else "next"
            _check_else(report, ("steps", step_id, field_name), transitions)
    _check_reachable(report, flow)
    forever = _check_loops(report, flow)
    _check_finishing(report, flow, forever)
    _check_templates(report, flow, templates)
    report.problems.sort(key=lambda problem: problem.line)
    return report.problems


def _check_else(report: _Report, location: Location, transitions: list[Transition]) -> None:
    elses = [index for index, item in enumerate(transitions) if item.else_ is not None]
    if not elses:
        report.add(
            location,
            "transitions without `else`: a contact no condition fits would be stranded",
            "add `- else: STEP` as the last entry",
        )
    elif elses != [len(transitions) - 1]:
        report.add((*location, elses[0]), "`else` must be the last and only catch-all entry")


def _check_reachable(report: _Report, flow: Flow) -> None:
    if flow.start not in flow.steps:
        return
    seen = {flow.start}
    todo = [flow.start]
    while todo:
        step = flow.steps[todo.pop()]
        for _, target in step.targets():
            if target in flow.steps and target not in seen:
                seen.add(target)
                todo.append(target)
    for step_id in flow.steps:
        if step_id not in seen:
            report.add(
                ("steps", step_id),
                "unreachable: no path from `start` leads here",
                "link it from another step's `next`, or remove it",
            )


def _check_loops(report: _Report, flow: Flow) -> set[str]:
    """Report loops that never wait; returns the steps of those with no way out."""
    forever: set[str] = set()
    for group, leaves in checks.loops_without_wait(flow):
        cycle = " → ".join([*group, group[0]])
        if leaves:
            report.add(
                ("steps", group[0]),
                f"{cycle} can loop without waiting for the contact; the turn fails after "
                "the step budget if no condition leaves the loop",
                f"make sure a condition leaves it, or put a step that waits "
                f"({checks.WAITING_KINDS}) in the loop",
                warning=True,
            )
        else:
            forever.update(group)
            report.add(
                ("steps", group[0]),
                f"{cycle} loops forever without waiting for the contact",
                f"put a step that waits ({checks.WAITING_KINDS}) in the loop, or a way out",
            )
    return forever


def _check_finishing(report: _Report, flow: Flow, forever: set[str]) -> None:
    """Warn where contacts enter a part of the flow that can never end.

    A warning, not an error: an endless conversation (a chat loop that only
    the reset code or an agent ends) can be what the designer wants.
    """
    for step_id in checks.trapped_entries(flow):
        if step_id in forever:
            continue  # the loop is the mistake, reported already
        if step_id == flow.start:
            report.add(
                ("start",),
                "the flow can never finish: no path from `start` reaches an end",
                "lead some path to an `end` step (or a step without `next`)",
                warning=True,
            )
        else:
            report.add(
                ("steps", step_id),
                "no path from here reaches an end: a contact who gets here never leaves the flow",
                "lead some path from here to an `end` step (or a step without `next`)",
                warning=True,
            )


def _check_templates(report: _Report, flow: Flow, templates: Templates) -> None:
    declared = set(flow.variables)
    for step in flow.steps.values():
        declared |= step.variables_set()
    checker = _NameChecker(report, flow, templates, declared)
    before = checks.variables_on_every_path(flow)
    for step_id, step in flow.steps.items():
        for use in step.template_uses():
            available = before.get(step_id)
            if available is not None and checks.sees_own_variables(step, use):
                available = available | step.variables_set()
            checker.check_string(("steps", step_id, *use.path), use, step, available)
        for location, name in step.prompt_files():
            checker.check_prompt(("steps", step_id, *location), name, before.get(step_id))
    checker.check_string(("fallback",), TemplateUse(("fallback",), flow.fallback))
    if flow.entitlement:
        for use in flow.paywall.uses(("paywall",)):
            checker.check_string(use.path, use)


class _NameChecker:
    def __init__(
        self, report: _Report, flow: Flow, templates: Templates, declared: set[str]
    ) -> None:
        self.report = report
        self.flow = flow
        self.templates = templates
        self.declared = declared
        self.sample = checks.sample_context(flow)

    def check_string(
        self,
        location: Location,
        use: TemplateUse,
        step: StepBase | None = None,
        available: set[str] | None = None,
    ) -> None:
        """Syntax, names, data flow and a sample render of one flow string."""
        try:
            tree = self.templates.parse(use.source, bare=use.bare)
        except TemplateFailure as error:
            self.report.add(location, f"template syntax error: {error.reason}")
            return
        self._check_literals(location, tree)
        if self._check_names(location, tree, use.extra_names, where="", available=available):
            return
        extra: dict[str, Any] = {name: checks.Sample(name) for name in use.extra_names}
        if step is not None:
            extra = checks.extra_samples(step, use.extra_names)
        undefined = checks.undefined_in_render(
            self.templates, {**self.sample, **extra}, source=use.source, bare=use.bare
        )
        if undefined:
            self._undefined(location, undefined, where="")

    def _check_literals(self, location: Location, tree: nodes.Template) -> None:
        """Templates in another language given to a filter (``"…" | liquid``).

        Warnings: the Liquid of an imported Studio flow renders leniently, as
        in Studio, so the flow still loads as it ran there.
        """
        for node in tree.find_all(nodes.Filter):
            check = self.templates.literal_checks.get(node.name)
            if check is None or not isinstance(node.node, nodes.Const):
                continue
            for reason in check(str(node.node.value)):
                self.report.add(
                    location,
                    f"{node.name} template error: {reason}",
                    "it renders leniently, as in Studio: an unknown tag or filter is "
                    "ignored, the text from a syntax error on is sent as written; fix it",
                    warning=True,
                )

    def _undefined(self, location: Location, undefined: str, where: str) -> None:
        self.report.add(
            location,
            f"{where}fails on sample values: {undefined}",
            "check the spelling of keys: contact has name, phone and channel; "
            "vars hold `variables`, `save_as` values and `output` fields",
        )

    def check_prompt(self, location: Location, name: str, available: set[str] | None) -> None:
        """A prompt file: exists, parses, names known, and renders on a sample context."""
        prompts_dir = self.templates.prompts_dir
        if prompts_dir is None or not (prompts_dir / name).is_file():
            self.report.add(
                location,
                f"prompt file {name!r} not found in {prompts_dir or 'prompts/'}",
                "create it, or fix the name",
            )
            return
        try:
            tree = self.templates.parse_prompt(name)
        except TemplateFailure as error:
            self.report.add(location, f"prompt {name!r}: template syntax error: {error.reason}")
            return
        where = f"prompt {name!r} "
        if self._check_names(location, tree, frozenset(), where=where, available=available):
            return
        undefined = checks.undefined_in_render(self.templates, self.sample, prompt=name)
        if undefined:
            self._undefined(location, undefined, where=where)

    def _check_names(
        self,
        location: Location,
        tree: nodes.Template,
        extra: frozenset[str],
        where: str,
        available: set[str] | None = None,
    ) -> bool:
        """Report unknown names, unset ``vars`` and unknown ``steps``; True if any error."""
        before = len(self.report.problems)
        allowed = CONTEXT_NAMES | extra | set(self.templates.env.globals)
        for name in sorted(meta.find_undeclared_variables(tree) - allowed):
            self.report.add(
                location,
                f"{where}uses unknown name {name!r}",
                "templates see " + ", ".join(sorted(CONTEXT_NAMES | extra)),
            )
        guarded = _guarded_attributes(tree)
        used = set(_attributes_of(tree, "vars")) - guarded
        for attribute in sorted(used - self.declared):
            self.report.add(
                location,
                f"{where}uses vars.{attribute}, which no step sets",
                "set it with `save_as`, a `set` step or the flow's `variables`",
            )
        for attribute in sorted(set(_attributes_of(tree, "steps")) - set(self.flow.steps)):
            self.report.add(location, f"{where}uses steps.{attribute}: no such step")
        if "env" in extra:  # `http` steps: secrets only from the operator's allow-list
            for attribute in sorted(set(_attributes_of(tree, "env")) - self.templates.env_names):
                self.report.add(
                    location,
                    f"{where}uses env.{attribute}, which HTTP_ENV_ALLOWLIST does not list",
                    "the operator adds it to HTTP_ENV_ALLOWLIST, or remove it",
                )
        errors = len(self.report.problems) > before
        if available is not None:
            for attribute in sorted((used & self.declared) - available):
                self.report.add(
                    location,
                    f"{where}reads vars.{attribute}, but some path from `start` gets here "
                    "without setting it",
                    f"set it on every path (or in `variables`), or test "
                    f"`vars.{attribute} is defined`",
                    warning=True,
                )
        return errors


def _attributes_of(tree: nodes.Node, name: str) -> Iterator[str]:
    """Attribute names read from a top-level name: ``vars.goal`` → ``goal``."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == name):
            continue
        if isinstance(node, nodes.Getattr):
            yield node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            yield node.arg.value


def _guarded_attributes(tree: nodes.Node) -> set[str]:
    """``vars.x`` names used under ``is defined``/``is undefined`` (optional variables)."""
    guarded: set[str] = set()
    for test in tree.find_all(nodes.Test):
        if test.name in {"defined", "undefined"}:
            guarded.update(_attributes_of(test, "vars"))
    return guarded


def validate_flows(
    flows: Iterable[Flow], templates: Templates, *, warnings: bool = False
) -> list[FlowProblem]:
    """Every problem of each flow, and across flows (ids, default, keywords).

    Args:
        flows: Parsed flows.
        templates: The Jinja environment, with the prompts folder.
        warnings: Include warnings (`FlowProblem.warning`); errors only when False.
    """
    problems: list[FlowProblem] = []
    by_id: dict[str, Flow] = {}
    keywords: dict[str, Flow] = {}
    defaults: list[Flow] = []
    for flow in flows:
        problems.extend(validate_flow(flow, templates))
        if flow.id in by_id:
            problems.append(
                FlowProblem(
                    flow.source,
                    flow.line_of(("id",)),
                    f"flow id {flow.id!r} is already used by {by_id[flow.id].source}",
                    flow_id=flow.id,
                )
            )
        by_id.setdefault(flow.id, flow)
        if flow.trigger.default:
            defaults.append(flow)
        for index, keyword in enumerate(flow.trigger.keywords):
            other = keywords.setdefault(fold(keyword), flow)  # as `FlowSet.match` folds
            if other is not flow and _share_a_number(flow, other):
                problems.append(
                    FlowProblem(
                        flow.source,
                        flow.line_of(("trigger", "keywords", index)),
                        f"keyword {keyword!r} also starts flow {other.id!r}",
                        flow_id=flow.id,
                    )
                )
    for index, flow in enumerate(defaults):
        # One default per number: flows bound to different numbers each have theirs.
        other = next((o for o in defaults[:index] if _same_numbers_overlap(o, flow)), None)
        if other is None:
            continue
        problems.append(
            FlowProblem(
                flow.source,
                flow.line_of(("trigger", "default")),
                f"more than one default flow: {other.id!r} is the default already",
                flow_id=flow.id,
            )
        )
    problems.extend(_check_flows_used(by_id))
    return problems if warnings else [problem for problem in problems if not problem.warning]


def _share_a_number(flow: Flow, other: Flow) -> bool:
    """Whether a message could reach both flows (a flow with no numbers answers on all)."""
    return not flow.numbers or not other.numbers or bool(set(flow.numbers) & set(other.numbers))


def _same_numbers_overlap(flow: Flow, other: Flow) -> bool:
    """Whether two default flows compete: both unbound, or bound to a common number."""
    if not flow.numbers and not other.numbers:
        return True
    return bool(set(flow.numbers) & set(other.numbers))


def _check_flows_used(by_id: dict[str, Flow]) -> Iterator[FlowProblem]:
    """``call`` and ``goto`` steps that name a flow that is not loaded."""
    known = ", ".join(sorted(by_id))
    for flow in by_id.values():
        for step_id, step in flow.steps.items():
            for location, other in step.flows_used():
                if other not in by_id:
                    yield FlowProblem(
                        flow.source,
                        flow.line_of(("steps", step_id, *location)),
                        f"runs unknown flow {other!r}",
                        f"one of: {known}",
                        flow_id=flow.id,
                        step_id=step_id,
                    )


def partial_problems(text: str, source: str, templates: Templates) -> list[FlowProblem]:
    """The graph and template problems of the steps that parsed, in a file with shape errors.

    Args:
        text: The flow file's YAML.
        source: Its name, for problems.
        templates: The Jinja environment, with the prompts folder.

    Returns:
        Errors and warnings of the steps that parsed (none of those that did
        not: their shape problems come from `engine.flow.parse_flow`).
    """
    flow = partial_flow(text, source)
    if flow is None:
        return []
    unparsed = {step_id for step_id, step in flow.steps.items() if isinstance(step, UnparsedStep)}
    problems = validate_flow(flow, templates)
    return [problem for problem in problems if problem.step_id not in unparsed]


def file_problems(path: Path, templates: Templates) -> tuple[Flow | None, list[FlowProblem]]:
    """Parse one flow file; when its shape is wrong, check the steps that parsed too.

    Returns:
        The flow (None when its shape is wrong) and its shape problems, with
        those of `partial_problems` when it did not parse.
    """
    text = path.read_text(encoding="utf-8")
    flow, problems = parse_flow(text, str(path))
    if flow is None:
        problems = problems + partial_problems(text, str(path), templates)
    return flow, problems


def load_flows(flows_dir: Path, templates: Templates) -> FlowSet:
    """Load and validate every flow of a folder.

    Warnings are logged; they do not stop the flows from loading.

    Raises:
        FlowError: with every error of every file, when there is any.
    """
    flows, problems = load_flow_files(flows_dir)
    problems.extend(validate_flows(flows, templates, warnings=True))
    errors = [problem for problem in problems if not problem.warning]
    if errors:
        raise FlowError(errors)
    for problem in problems:
        log.warning("flow.warning %s", problem)
    return FlowSet({flow.id: flow for flow in flows})
