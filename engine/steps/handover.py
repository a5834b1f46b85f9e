"""``handover``: pass the conversation to a person; the bot waits silently.

```yaml
help:
  handover: queue:support          # or agent:sam@example.org, or available
  message: "Connecting you with a person. Someone will answer here shortly."
  next: menu                       # where the bot goes on after the handback
```

``handover`` names who gets the conversation: a queue (``queue:<name>``, any
agent of the console may accept it), one agent by the email they log in
with (``agent:<email>``), or ``available``: the agent marked available who
has waited longest since their last conversation. It is a Jinja template.

The step sends its ``message`` and waits; the services turn that into a
``handover`` control event (handover/control.py), which marks the execution
``handed_over`` and keeps the bot silent until an agent hands the
conversation back. After a handback without a chosen step, the contact's
next message carries the flow on to ``next`` (the flow ends without one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from pydantic import field_validator

from engine.effects import HandOver
from engine.steps.base import (
    Continue,
    StepBase,
    StepContext,
    StepError,
    StepResult,
    TemplateUse,
    Wait,
)


def check_target(target: str) -> str:
    """`target` if it is ``queue:<name>``, ``agent:<email>`` or ``available``.

    Raises:
        ValueError: anything else.
    """
    kind, _, name = target.partition(":")
    if target == "available" or (kind in ("queue", "agent") and name.strip()):
        return target
    raise ValueError(f"handover goes to queue:<name>, agent:<email> or available, not {target!r}")


class HandoverStep(StepBase):
    """Hand the conversation over to a person, then wait for the handback."""

    kind: ClassVar[str] = "handover"
    waits: ClassVar[bool] = True

    handover: str
    """Who gets it: ``queue:<name>``, ``agent:<email>`` or ``available`` (a template)."""
    message: str | None = None
    """Told to the contact when the step hands over (a template)."""

    @field_validator("handover")
    @classmethod
    def _target(cls, value: str) -> str:
        return value if "{" in value else check_target(value)

    def enter(self, context: StepContext) -> StepResult:
        """Say the message and ask the turn service to hand over (`HandOver`)."""
        try:
            target = check_target(context.render(self.handover).strip())
        except ValueError as error:
            raise StepError(context.step_id, str(error)) from error
        if self.message:
            context.say(context.render(self.message))
        context.emit(HandOver(target))
        return Wait()

    def resume(self, context: StepContext) -> StepResult:
        """The agent handed back: go on to ``next``."""
        return Continue()

    def template_uses(self) -> Iterator[TemplateUse]:
        """The target, the message and the transitions."""
        yield TemplateUse(("handover",), self.handover)
        if self.message:
            yield TemplateUse(("message",), self.message)
        yield from super().template_uses()
