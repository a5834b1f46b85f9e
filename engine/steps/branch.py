"""``branch``: route on conditions, like Studio's Split Based On.

```yaml
route:
  branch:
    - if: "{{ vars.area == 'sleep' }}"
      then: sleep_tips
    - if: "vars.visits > 3"          # braces are optional in conditions
      then: regular
    - else: menu                      # required, and last
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from pydantic import field_validator

from engine.steps.base import (
    Continue,
    Next,
    StepBase,
    StepContext,
    StepResult,
    TemplateUse,
    Transition,
    resolve_next,
)


class BranchStep(StepBase):
    """Go to the first transition whose condition holds; sends nothing."""

    kind: ClassVar[str] = "branch"

    branch: list[Transition]
    """Conditions tried in order, ending with an ``else``."""

    @field_validator("next")
    @classmethod
    def _no_next(cls, value: Next) -> Next:
        if value is not None:
            raise ValueError("a `branch` step routes with its own list; it takes no `next`")
        return value

    def enter(self, context: StepContext) -> StepResult:
        """Pick the transition."""
        target = resolve_next(self.branch, context)
        return Continue(target)

    def targets(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """The steps of every transition."""
        for index, transition in enumerate(self.branch):
            yield ("branch", index), transition.target

    def template_uses(self) -> Iterator[TemplateUse]:
        """Every condition."""
        for index, transition in enumerate(self.branch):
            if transition.if_ is not None:
                yield TemplateUse(("branch", index, "if"), transition.if_, bare=True)
