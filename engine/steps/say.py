"""``say``: send a message and go on.

```yaml
welcome:
  say: "Hi {{ contact.name or 'there' }}! Let's pick one small goal for this week."
  next: area
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from engine.steps.base import Continue, StepBase, StepContext, StepResult, TemplateUse


class SayStep(StepBase):
    """Send one message (a Jinja template) to the contact, then follow ``next``."""

    kind: ClassVar[str] = "say"

    say: str
    """The message text, a Jinja template."""

    def enter(self, context: StepContext) -> StepResult:
        """Render and queue the message."""
        context.say(context.render(self.say))
        return Continue()

    def template_uses(self) -> Iterator[TemplateUse]:
        """The message and the transitions."""
        yield TemplateUse(("say",), self.say)
        yield from super().template_uses()
