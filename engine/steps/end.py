"""``end``: finish the execution.

```yaml
done:
  end: true
```
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import field_validator

from engine.steps.base import End, Next, StepBase, StepContext, StepResult


class EndStep(StepBase):
    """End the execution; the contact's next message starts a flow afresh."""

    kind: ClassVar[str] = "end"

    end: Literal[True] = True
    """Always ``true``."""

    @field_validator("next")
    @classmethod
    def _no_next(cls, value: Next) -> Next:
        if value is not None:
            raise ValueError("an `end` step has no `next`")
        return value

    def enter(self, context: StepContext) -> StepResult:
        """End the execution."""
        return End()
