"""``call``: run another flow as a subflow, then come back with its result.

```yaml
check_in:
  call: mood_check                 # the flow id of flows/mood_check.yaml
  with:                            # its parameters: templates evaluated here, types kept
    name: "{{ contact.name or 'there' }}"
    area: "{{ vars.area }}"
  save_as: mood                    # vars.mood = the subflow's result (optional)
  next: coach
```

The subflow starts at its ``start`` with its own ``vars``: its ``variables:``
defaults, overridden by the ``with`` values (declare each parameter in the
subflow's ``variables:`` so that validation knows it). When the subflow ends
(an ``end`` step, or a step without ``next``), its ``vars`` come back as the
result, at ``steps.<id>.result`` (and ``vars.<save_as>``), and this flow goes
on at ``next``. While the subflow runs, this flow's variables are kept aside
and untouched. Subflows may call subflows, up to `MAX_DEPTH` deep.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import Field

from engine.steps.base import Continue, Jump, StepBase, StepContext, StepResult, TemplateUse

#: How many subflows may run inside one another.
MAX_DEPTH = 5


def evaluate_params(params: dict[str, Any], context: StepContext) -> dict[str, Any]:
    """Each ``with`` value evaluated in the caller's context (native types kept)."""
    values = context.template_context()
    return {name: context.templates.evaluate(source, values) for name, source in params.items()}


def param_uses(params: dict[str, Any]) -> Iterator[TemplateUse]:
    """The ``with`` values that are templates."""
    for name, source in params.items():
        if isinstance(source, str):
            yield TemplateUse(("with", name), source)


class CallStep(StepBase):
    """Run a subflow with parameters; carry on at ``next`` with its result."""

    kind: ClassVar[str] = "call"

    call: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    """The id of the flow to run."""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    """Its parameters: name → value or template; its ``vars`` start with them."""
    save_as: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The variable that keeps the subflow's result (its ``vars`` at its end)."""

    def enter(self, context: StepContext) -> StepResult:
        """Start the subflow (the runner keeps this flow's state aside)."""
        return Jump(self.call, evaluate_params(self.with_, context), returns=True)

    def returned(self, context: StepContext, result: dict[str, Any]) -> StepResult:
        """Store the subflow's result, then follow ``next``."""
        context.execution.step_results[context.step_id] = {"result": result, "flow": self.call}
        if self.save_as:
            context.execution.variables[self.save_as] = result
        return Continue()

    def template_uses(self) -> Iterator[TemplateUse]:
        """The parameters and the transitions."""
        yield from param_uses(self.with_)
        yield from super().template_uses()

    def variables_set(self) -> set[str]:
        """``save_as``, if any."""
        return {self.save_as} if self.save_as else set()

    def flows_used(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """The subflow."""
        yield ("call",), self.call
