"""``ask``: send a question and wait for the answer.

```yaml
area:
  ask: "Which matters most right now: sleep, movement or connection?"
  choices: [sleep, movement, connection]    # optional; free text without it
  save_as: area                              # the answer goes to vars.area
  retry: {max: 2, say: "Please answer sleep, movement or connection."}
  next: coach
```

With ``choices``, an answer matches a choice by its text (case and accents
ignored, surrounding punctuation too) or by its number in the list (``2`` for
``movement``); the stored value is the choice as written in the flow.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from engine.steps.base import (
    Continue,
    StepBase,
    StepContext,
    StepError,
    StepResult,
    TemplateUse,
    Timeout,
)


class Retry(BaseModel):
    """What to do with an answer that does not fit."""

    model_config = ConfigDict(extra="forbid")

    max: int = Field(default=2, ge=0, le=10)
    """How many times to ask again before giving up."""
    say: str | None = None
    """The re-prompt (a template); the question again when absent."""
    next: str | None = None
    """Where to go when the retries are used up; without it the execution
    ends with the flow's fallback text."""


class AskStep(StepBase):
    """Ask a question, wait for the answer, check it and store it."""

    kind: ClassVar[str] = "ask"
    waits: ClassVar[bool] = True

    ask: str
    """The question, a Jinja template."""
    choices: list[str] | None = Field(default=None, min_length=1)
    """Allowed answers; any non-empty text when absent."""
    save_as: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The variable that keeps the answer (``vars.<save_as>``)."""
    retry: Retry = Retry()
    """Re-prompting on an answer that does not fit."""
    timeout: Timeout | None = None
    """Stop waiting after a while: ``{after: 24h, next: nudge}``."""

    def enter(self, context: StepContext) -> StepResult:
        """Send the question and wait."""
        context.state["retries"] = 0
        context.say(context.render(self.ask))
        return self.wait(context)

    def resume(self, context: StepContext) -> StepResult:
        """Check and store the answer, or ask again."""
        text = context.input.text.strip() if context.input else ""
        answer = match_choice(text, self.choices) if self.choices else (text or None)
        if answer is None:
            return self._retry(context)
        if self.save_as:
            context.execution.variables[self.save_as] = answer
        context.execution.step_results[context.step_id] = {"answer": answer, "text": text}
        return Continue()

    def _retry(self, context: StepContext) -> StepResult:
        retries = int(context.state.get("retries", 0)) + 1
        if retries > self.retry.max:
            if self.retry.next:
                return Continue(self.retry.next)
            raise StepError(context.step_id, f"no valid answer after {self.retry.max} retries")
        context.state["retries"] = retries
        context.say(context.render(self.retry.say or self.ask))
        return self.wait(context)

    def targets(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """``next`` and ``retry.next``."""
        yield from super().targets()
        if self.retry.next:
            yield ("retry", "next"), self.retry.next

    def template_uses(self) -> Iterator[TemplateUse]:
        """The question, the re-prompt and the transitions."""
        yield TemplateUse(("ask",), self.ask)
        if self.retry.say:
            yield TemplateUse(("retry", "say"), self.retry.say)
        yield from super().template_uses()

    def variables_set(self) -> set[str]:
        """``save_as``, if any."""
        return {self.save_as} if self.save_as else set()


def fold(text: str) -> str:
    """Lower-case, accents removed, punctuation and spaces trimmed: ``" Sleep!"`` → ``"sleep"``."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return plain.strip(" \t\n.!?,;:'\"()[]")


def match_choice(text: str, choices: list[str]) -> str | None:
    """The choice `text` names, by label or 1-based number, or None.

    Examples:
        >>> match_choice("2", ["sleep", "movement"])
        'movement'
        >>> match_choice("  SLÉEP! ", ["sleep", "movement"])
        'sleep'
        >>> match_choice("1", ["0", "1", "2"])
        '1'
    """
    folded = fold(text)
    # Labels first: with choices ["0", "1", "2"], "1" is the choice "1", not the first.
    for choice in choices:
        if fold(choice) == folded:
            return choice
    if folded.isdecimal() and 1 <= int(folded) <= len(choices):  # int() takes decimals only
        return choices[int(folded) - 1]
    return None
