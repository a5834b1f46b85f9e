"""``ask``: send a question and wait for a typed answer.

```yaml
area:
  ask: "Which matters most right now?"
  type: choice                                # text (default), number, yes_no, date,
                                              # email, phone, choice, media, location
  choices:
    - {value: sleep, label: Sleep, synonyms: [rest, bed]}
    - movement                                # a plain string is its own label
  numbered: true                              # adds "1. Sleep\n2. movement" to the question
  save_as: area                               # the answer goes to vars.area
  retry: {max: 2, say: "Please answer 1 or 2."}
  timeout: {after: 30m, next: nudge}          # stop waiting after 30 minutes
  next: coach
```

Each type normalises the answer (see `engine.answers`): a number is an int or
a float (``min``/``max`` checked), yes/no a boolean, a date ISO 8601
(``2025-03-15``), an e-mail address normalised, a phone number E.164 (read in
the contact's own country when it has no ``+``), a choice its ``value``, media
a list of ``{url, content_type, kind}``, a location ``{latitude, longitude,
address, label}``. An answer that does not fit gets the ``retry.say`` text, or a
re-prompt that says what is expected. ``choices`` without a ``type`` means
``type: choice``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from engine.answers import (
    AnswerType,
    Choice,
    ChoiceItem,
    MediaKind,
    as_choices,
    numbered,
    read_answer,
)
from engine.answers import match_choice as _match
from engine.steps.base import (
    Continue,
    StepBase,
    StepContext,
    StepError,
    StepResult,
    TemplateUse,
    Timeout,
    WhatsAppTemplate,
)
from engine.text import fold

__all__ = ["AskStep", "Retry", "fold", "match_choice"]

#: What a contact is told when an answer does not fit and the step has no ``retry.say``.
REPROMPTS: dict[str, str] = {
    "number": "Please answer with a number.",
    "yes_no": "Please answer yes or no.",
    "date": "Please answer with a date, for example 14/03/2025 or 'tomorrow'.",
    "email": "That doesn't look like an email address. Please send one like name@example.com.",
    "phone": "That doesn't look like a phone number. Please send one like +44 7700 900123.",
    "media": "Please send a photo, a voice note or a document.",
    "location": "Please share a location (on WhatsApp: 📎, then Location).",
}


class Retry(BaseModel):
    """What to do with an answer that does not fit."""

    model_config = ConfigDict(extra="forbid")

    max: int = Field(default=2, ge=0, le=10)
    """How many times to ask again before giving up."""
    say: str | None = None
    """The re-prompt (a template); without it, a hint for the answer's type
    (the question again for text and choices)."""
    next: str | None = None
    """Where to go when the retries are used up; without it the execution
    ends with the flow's fallback text."""


class AskStep(StepBase):
    """Ask a question, wait for the answer, check it and store it."""

    kind: ClassVar[str] = "ask"
    waits: ClassVar[bool] = True

    ask: str
    """The question, a Jinja template."""
    type: AnswerType = "text"
    """What answer is expected: ``text``, ``number``, ``yes_no``, ``date``,
    ``email``, ``phone``, ``choice``, ``media`` or ``location``."""
    choices: list[ChoiceItem] | None = Field(default=None, min_length=1)
    """Allowed answers (``type: choice``): strings, or ``{value, label, synonyms}``;
    matched by number, value, label or synonym, case and accents ignored."""
    numbered: bool = False
    """Add the choices to the question as a numbered list (on SMS and on
    WhatsApp alike: WhatsApp buttons need a pre-approved template)."""
    min: float | None = None
    """``type: number``: the smallest number accepted."""
    max: float | None = None
    """``type: number``: the largest number accepted."""
    accept: list[MediaKind] | None = None
    """``type: media``: the kinds accepted (``image``, ``audio``, ``video``,
    ``document``); any when absent."""
    date_order: Literal["DMY", "MDY", "YMD"] | None = None
    """``type: date``: how to read ``03/04/2025``; guessed from the language when absent."""
    save_as: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The variable that keeps the answer (``vars.<save_as>``)."""
    retry: Retry = Retry()
    """Re-prompting on an answer that does not fit."""
    timeout: Timeout | None = None
    """Stop waiting after a while: ``{after: 24h, next: nudge}``."""
    template: WhatsAppTemplate | None = None
    """A WhatsApp template sent instead of the question outside the 24-hour window."""
    transcribe: StrictBool = True
    """Transcribe a voice note answering here (``voice_notes`` in ``_settings.yaml``);
    ``false``: the step gets the audio as media, with no text."""

    @model_validator(mode="after")
    def _fits_type(self) -> AskStep:
        if self.choices is not None and self.type == "text":
            self.type = "choice"
        if self.type == "choice" and not self.choices:
            raise ValueError("`type: choice` needs `choices`")
        if self.choices is not None and self.type != "choice":
            raise ValueError(f"`choices` go with `type: choice`, not `type: {self.type}`")
        if (self.min is not None or self.max is not None) and self.type != "number":
            raise ValueError("`min` and `max` go with `type: number`")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("`min` is larger than `max`")
        if self.accept is not None and self.type != "media":
            raise ValueError("`accept` goes with `type: media`")
        if self.date_order is not None and self.type != "date":
            raise ValueError("`date_order` goes with `type: date`")
        if self.numbered and self.type != "choice":
            raise ValueError("`numbered` lists `choices`: it needs `type: choice`")
        return self

    def choice_list(self) -> list[Choice]:
        """The choices as `Choice` objects (empty without choices)."""
        return as_choices(self.choices or [])

    def question(self, context: StepContext) -> str:
        """The question as sent: rendered, with the numbered choices when asked for."""
        text = context.render(self.ask)
        if self.numbered:
            text = f"{text}\n{numbered(self.choice_list())}"
        return text

    def enter(self, context: StepContext) -> StepResult:
        """Send the question and wait."""
        context.state["retries"] = 0
        context.say(self.question(context), template=self.template)
        return self.wait(context)

    def resume(self, context: StepContext) -> StepResult:
        """Check and store the answer, or ask again."""
        text = context.input.text.strip() if context.input else ""
        answer = read_answer(
            self.type,
            context.input,
            context.contact,
            context.clock.now(),
            choices=self.choice_list(),
            accept=self.accept,
            date_order=self.date_order,
        )
        if answer is None or not self._in_range(answer):
            return self._retry(context)
        if self.save_as:
            context.execution.variables[self.save_as] = answer
        context.execution.step_results[context.step_id] = {"answer": answer, "text": text}
        return Continue()

    def _in_range(self, answer: Any) -> bool:
        if self.type != "number":
            return True
        return (self.min is None or answer >= self.min) and (self.max is None or answer <= self.max)

    def _retry(self, context: StepContext) -> StepResult:
        retries = int(context.state.get("retries", 0)) + 1
        if retries > self.retry.max:
            if self.retry.next:
                return Continue(self.retry.next)
            raise StepError(context.step_id, f"no valid answer after {self.retry.max} retries")
        context.state["retries"] = retries
        context.say(self._reprompt(context))
        return self.wait(context)

    def _reprompt(self, context: StepContext) -> str:
        if self.retry.say:
            return context.render(self.retry.say)
        if self.type == "number" and (self.min is not None or self.max is not None):
            return _range_hint(self.min, self.max)
        if self.type in REPROMPTS:
            return REPROMPTS[self.type]
        return self.question(context)

    def targets(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """``next`` and ``retry.next``."""
        yield from super().targets()
        if self.retry.next:
            yield ("retry", "next"), self.retry.next

    def template_uses(self) -> Iterator[TemplateUse]:
        """The question, the re-prompt and the transitions."""
        yield TemplateUse(("ask",), self.ask)
        if self.template:
            yield from self.template.template_uses(("template",))
        if self.retry.say:
            yield TemplateUse(("retry", "say"), self.retry.say)
        yield from super().template_uses()

    def variables_set(self) -> set[str]:
        """``save_as``, if any."""
        return {self.save_as} if self.save_as else set()


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _range_hint(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"Please answer with a number from {_number_text(low)} to {_number_text(high)}."
    if low is not None:
        return f"Please answer with a number of at least {_number_text(low)}."
    return f"Please answer with a number of at most {_number_text(high)}."  # type: ignore[arg-type]


def match_choice(text: str, choices: list[str]) -> str | None:
    """The choice `text` names, by label or 1-based number, or None (plain string choices).

    Examples:
        >>> match_choice("2", ["sleep", "movement"])
        'movement'
        >>> match_choice("  SLÉEP! ", ["sleep", "movement"])
        'sleep'
    """
    return _match(text, as_choices(list(choices)))
