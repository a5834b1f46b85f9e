"""``llm``: let the model write the reply, once or as a conversation.

```yaml
coach:
  llm:
    system: coach_system.j2          # prompts/coach_system.j2
    prompt: coach_turn.j2            # the user turn; the contact's text without it
    history: 12                      # last 12 messages of the conversation as context
    output: {reply: str, goal: str, agreed: bool}    # structured output
    until: "{{ output.agreed }}"     # keep conversing until this holds
    max_turns: 8                     # ... or until this many turns
  save_as: goal                      # vars.goal = the output (or the text)
  next: confirm
```

Without ``until`` the step answers once and goes on. With ``output``, the
model must answer a JSON object of those fields (OpenAI structured output) and
the message sent is its ``reply`` field (or the ``reply:`` template of the step).
What the contact typed reaches the prompt as data (``input.text``), never as a
template.

``mode: classify`` (pick one of named labels, each a transition) and ``mode:
extract`` (fill variables from free text) route rather than reply: see
`engine.steps.llm_modes`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from engine.ports import LLMError, LLMRequest
from engine.steps.base import (
    Continue,
    StepBase,
    StepContext,
    StepError,
    StepResult,
    TemplateUse,
    Timeout,
    Wait,
)
from engine.steps.llm_modes import run_mode

OutputType = Literal["str", "int", "float", "bool", "list[str]"]
_JSON_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "list[str]": {"type": "array", "items": {"type": "string"}},
}


class LLMSpec(BaseModel):
    """The settings of an ``llm`` step."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["reply", "classify", "extract"] = "reply"
    """``reply`` (the model answers the contact), ``classify`` (it picks one of
    ``labels``) or ``extract`` (it fills ``fields``); the last two send nothing."""
    labels: dict[str, str] | None = Field(default=None, min_length=1)
    """``mode: classify``: label → the step to go to when the model picks it."""
    fields: dict[str, OutputType] | None = Field(default=None, min_length=1)
    """``mode: extract``: variable name → ``str``, ``int``, ``float``, ``bool``
    or ``list[str]``; each filled field is stored as ``vars.<name>``."""
    system: str | None = None
    """The system prompt: a file in ``prompts/`` (``*.j2``)."""
    prompt: str | None = None
    """The user turn: a file in ``prompts/``; the contact's text when absent."""
    history: int = Field(default=10, ge=0, le=100)
    """How many earlier messages of the conversation to send as context."""
    output: dict[str, OutputType] | None = None
    """Structured output: field name → ``str``, ``int``, ``float``, ``bool`` or ``list[str]``."""
    reply: str | None = None
    """What to send, a template over ``output``; default ``output.reply`` or the text."""
    until: str | None = None
    """Keep conversing, a turn per contact message, until this condition holds."""
    max_turns: int = Field(default=10, ge=1, le=100)
    """Go on after this many turns even if ``until`` does not hold."""
    model: str | None = None
    """The model; the flow's ``llm.model`` or ``OPENAI_MODEL`` when absent."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature; the flow's ``llm.temperature`` when absent (0 for
    ``classify`` and ``extract``)."""

    @model_validator(mode="after")
    def _fits_mode(self) -> LLMSpec:
        if self.mode == "reply":
            if self.labels is not None or self.fields is not None:
                raise ValueError("`labels` need `mode: classify`, `fields` need `mode: extract`")
            return self
        needed = "labels" if self.mode == "classify" else "fields"
        if getattr(self, needed) is None:
            raise ValueError(f"`mode: {self.mode}` needs `{needed}`")
        other = "fields" if self.mode == "classify" else "labels"
        if getattr(self, other) is not None:
            raise ValueError(f"`{other}` do not go with `mode: {self.mode}`")
        for name in ("output", "reply", "until"):
            if getattr(self, name) is not None:
                raise ValueError(f"`{name}` is for `mode: reply`, not `mode: {self.mode}`")
        for name in self.fields or {}:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"field {name!r} is not a variable name")
        return self


class LLMStep(StepBase):
    """Call the chat model and send its reply."""

    kind: ClassVar[str] = "llm"
    waits: ClassVar[bool] = True
    merges_bursts: ClassVar[bool] = True

    llm: LLMSpec
    """The model call."""
    save_as: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The variable that keeps the output (or the text, without ``output``)."""
    timeout: Timeout | None = None
    """While conversing, stop waiting after a while: ``{after: 24h, next: park}``."""
    fail: str | None = None
    """``classify``/``extract``: the step to go to when the model fails or
    cannot answer (no label, a field left empty); the flow's fallback without it."""
    transcribe: StrictBool = True
    """Transcribe a voice note sent while the step waits (``voice_notes`` in
    ``_settings.yaml``); ``false``: the step gets the audio as media, with no text."""

    @model_validator(mode="after")
    def _routes(self) -> LLMStep:
        if self.llm.mode == "classify" and self.next is not None:
            raise ValueError("`mode: classify` routes by its `labels`; it takes no `next`")
        if self.llm.mode != "reply" and self.timeout is not None:
            raise ValueError(f"`mode: {self.llm.mode}` does not wait, so it has no `timeout`")
        if self.llm.mode == "reply" and self.fail is not None:
            raise ValueError("`fail` is for `mode: classify` and `mode: extract`")
        return self

    def enter(self, context: StepContext) -> StepResult:
        """The first turn of the step (the only one, for ``classify`` and ``extract``)."""
        context.state["turns"] = 0
        return self.resume(context)

    def resume(self, context: StepContext) -> StepResult:
        """A further turn, with the contact's new message."""
        stop = self._moderate_input(context)
        if stop is not None:
            return stop
        if self.llm.mode != "reply":
            context.state.pop("turns", None)
            return run_mode(self, context, _JSON_TYPES)
        return self._turn(context)

    def _moderate_input(self, context: StepContext) -> StepResult | None:
        """The contact's text flagged (`engine.moderation`): what happens instead of the model.

        Returns:
            None to call the model; `Wait` after the safe message (the step
            runs again on the contact's next message, or after a handback).

        Raises:
            StepError: the action is ``fallback`` (retryable: the step stays).
        """
        decision = context.moderate_input()
        if decision is None or decision.action == "allow":
            return None
        if decision.action == "fallback":
            raise StepError(
                context.step_id,
                f"moderation flagged the contact's message ({decision.category or decision.error})",
                retryable=True,
            )
        context.safe_message(decision)
        return Wait()

    def output_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of ``output`` (all fields required, no others), or None."""
        if not self.llm.output:
            return None
        # Written out rather than built with pydantic's create_model, which drops
        # fields named `_x` and warns on (or rejects) names like `json` or `schema`.
        return {
            "type": "object",
            "properties": {
                name: copy.deepcopy(_JSON_TYPES[type_name])
                for name, type_name in self.llm.output.items()
            },
            "required": list(self.llm.output),
            "additionalProperties": False,
        }

    def _turn(self, context: StepContext) -> StepResult:
        turns = int(context.state.get("turns", 0)) + 1
        values = context.template_context()
        request = LLMRequest(
            model=self.llm.model or context.flow.llm.model or context.default_model,
            messages=self.messages(context, values),
            temperature=(
                self.llm.temperature
                if self.llm.temperature is not None
                else context.flow.llm.temperature
            ),
            output_schema=self.output_schema(),
            schema_name=re.sub(r"[^a-zA-Z0-9_-]", "_", f"{context.step_id}_output")[:64],
            timeout=context.time_left(),
        )
        try:
            response = context.llm.complete(request)
        except LLMError as error:
            context.time_left()  # out of time: the turn timed out, not the model
            raise StepError(context.step_id, f"LLM call failed: {error}", retryable=True) from error
        output = response.data
        if self.llm.output and output is None:
            raise StepError(context.step_id, "the model gave no structured output", retryable=True)

        if self.llm.reply:
            text = context.render(self.llm.reply, output=output)
        elif output is not None:
            text = str(output.get("reply", ""))
        else:
            text = response.text
        decision = context.moderate_reply(text)
        if decision is not None and decision.action != "allow":
            # Never sent: the flow's fallback instead (retryable: the step stays).
            raise StepError(
                context.step_id,
                f"moderation flagged the model's reply ({decision.category or decision.error})",
                retryable=True,
            )
        context.say(text, usage=response.usage)

        value = output if output is not None else response.text
        if self.save_as:
            context.execution.variables[self.save_as] = value
        context.execution.step_results[context.step_id] = {
            "output": output,
            "text": response.text,
            "turns": turns,
        }
        if self.llm.until is None or turns >= self.llm.max_turns:
            return Continue()
        if context.templates.condition(self.llm.until, context.template_context(output=output)):
            return Continue()
        context.state["turns"] = turns
        return self.wait(context)

    def messages(self, context: StepContext, values: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages: the system prompt, the history, then the user turn."""
        messages: list[dict[str, str]] = []
        if self.llm.system:
            system = context.templates.render_prompt(self.llm.system, values)
            messages.append({"role": "system", "content": system})
        if self.llm.history:
            messages.extend(
                {"role": item.role, "content": item.content}
                for item in context.history(self.llm.history)
            )
        if self.llm.prompt:
            user = context.templates.render_prompt(self.llm.prompt, values)
        else:
            user = values["input"]["text"]
        messages.append({"role": "user", "content": user})
        return messages

    def template_uses(self) -> Iterator[TemplateUse]:
        """``reply`` and ``until`` (which also see ``output``), and the transitions."""
        output = frozenset({"output"})
        if self.llm.reply:
            yield TemplateUse(("llm", "reply"), self.llm.reply, extra_names=output)
        if self.llm.until:
            yield TemplateUse(("llm", "until"), self.llm.until, bare=True, extra_names=output)
        yield from super().template_uses()

    def targets(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """``next``, ``timeout.next``, each label's step and ``fail``."""
        yield from super().targets()
        for label, target in (self.llm.labels or {}).items():
            yield ("llm", "labels", label), target
        if self.fail:
            yield ("fail",), self.fail

    def prompt_files(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """``system`` and ``prompt``."""
        if self.llm.system:
            yield ("llm", "system"), self.llm.system
        if self.llm.prompt:
            yield ("llm", "prompt"), self.llm.prompt

    def variables_set(self) -> set[str]:
        """``save_as``, and the ``fields`` of ``mode: extract``."""
        names = set(self.llm.fields or {})
        return names | {self.save_as} if self.save_as else names
