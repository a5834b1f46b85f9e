"""``set``: store values in the flow's variables.

```yaml
count_visit:
  set:
    visits: "{{ vars.visits + 1 }}"
    last_area: "{{ vars.area | upper }}"
    tier: basic            # a plain string (or number, list) is stored as it is
  next: menu
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from engine.steps.base import Continue, StepBase, StepContext, StepResult, TemplateUse


class SetStep(StepBase):
    """Evaluate each expression, in order, and store it under ``vars``.

    ``"{{ expression }}"`` keeps its type (a number stays a number); a string
    with text around ``{{ }}`` renders to text; anything else is stored as written.
    Later entries see the values of earlier ones.
    """

    kind: ClassVar[str] = "set"

    set: dict[str, Any]
    """Variable name → value or ``"{{ expression }}"``."""

    def enter(self, context: StepContext) -> StepResult:
        """Evaluate and store every entry."""
        for name, source in self.set.items():
            value = context.templates.evaluate(source, context.template_context())
            context.execution.variables[name] = value
        context.execution.step_results[context.step_id] = {
            name: context.execution.variables[name] for name in self.set
        }
        return Continue()

    def template_uses(self) -> Iterator[TemplateUse]:
        """Each string value and the transitions."""
        for name, source in self.set.items():
            if isinstance(source, str):
                yield TemplateUse(("set", name), source)
        yield from super().template_uses()

    def variables_set(self) -> set[str]:
        """The names this step sets."""
        return set(self.set)
