"""``say``: send a message and go on.

```yaml
welcome:
  say: "Hi {{ contact.name or 'there' }}! Let's pick one small goal for this week."
  next: area
chart:
  say: "Here is your week:"                  # may be "" with media
  media: "https://example.org/charts/{{ flow.id }}.png"   # an image or document URL
  delay: 2s                                   # wait 2 seconds before sending (at most 60s)
  next: area
```

``delay`` is honoured when replies go out through the Twilio REST API; an
answer inline in the webhook's TwiML cannot wait, so there it is recorded on
the message and the text goes at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import ClassVar

from pydantic import field_validator

from engine.steps.base import (
    Continue,
    Duration,
    StepBase,
    StepContext,
    StepResult,
    TemplateUse,
    WhatsAppTemplate,
)

#: The longest ``delay`` a ``say`` step may have.
MAX_DELAY = dt.timedelta(seconds=60)


class SayStep(StepBase):
    """Send one message (a Jinja template) to the contact, then follow ``next``."""

    kind: ClassVar[str] = "say"

    say: str
    """The message text, a Jinja template (may be blank when ``media`` is set)."""
    media: str | None = None
    """An image or document to send with it: an https URL, a Jinja template."""
    delay: Duration | None = None
    """Wait this long before sending (``2s``, ``1m``; at most ``MAX_DELAY``),
    like a typing pause."""
    template: WhatsAppTemplate | None = None
    """A WhatsApp template sent instead outside the 24-hour window."""

    def enter(self, context: StepContext) -> StepResult:
        """Render and queue the message."""
        media_url = context.render(self.media).strip() if self.media else None
        context.say(
            context.render(self.say),
            template=self.template,
            media_url=media_url or None,
            delay_seconds=self.delay.total_seconds() if self.delay else 0.0,
        )
        return Continue()

    @field_validator("delay")
    @classmethod
    def _capped(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value > MAX_DELAY:
            raise ValueError(f"a delay is at most {int(MAX_DELAY.total_seconds())}s")
        return value

    def template_uses(self) -> Iterator[TemplateUse]:
        """The message and the transitions."""
        yield TemplateUse(("say",), self.say)
        if self.media:
            yield TemplateUse(("media",), self.media)
        if self.template:
            yield from self.template.template_uses(("template",))
        yield from super().template_uses()
