"""``goto``: end this flow and start another one (Rasa's ``link``).

```yaml
to_menu:
  goto: menu                       # the flow id of flows/menu.yaml
  with: {topic: "{{ vars.area }}"}  # optional: its starting vars
```

This execution ends here and a new execution of the other flow starts at its
``start``, in the same turn, with its ``variables:`` defaults overridden by the
``with`` values. Nothing comes back; a ``goto`` inside a subflow ends the
calling flows too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import Field, field_validator

from engine.steps.base import Jump, Next, StepBase, StepContext, StepResult, TemplateUse
from engine.steps.call import evaluate_params, param_uses


class GotoStep(StepBase):
    """End this execution and start another flow."""

    kind: ClassVar[str] = "goto"

    goto: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    """The id of the flow to start."""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    """Its starting ``vars``: name → value or template."""

    @field_validator("next")
    @classmethod
    def _no_next(cls, value: Next) -> Next:
        if value is not None:
            raise ValueError("a `goto` step leaves this flow; it has no `next`")
        return value

    def enter(self, context: StepContext) -> StepResult:
        """Hand over to the other flow."""
        return Jump(self.goto, evaluate_params(self.with_, context), returns=False)

    def template_uses(self) -> Iterator[TemplateUse]:
        """The starting values."""
        yield from param_uses(self.with_)

    def flows_used(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """The flow it starts."""
        yield ("goto",), self.goto
