"""The routing modes of the ``llm`` step: ``classify`` and ``extract``.

Both read the contact's latest message (or the step's ``prompt``), ask the model
for structured output (OpenAI's JSON Schema ``response_format``), send nothing
to the contact and go on at once.

```yaml
route:
  llm:
    mode: classify                 # pick one label; each label is a transition
    labels: {booking: book, question: faq, complaint: human}
  fail: menu                       # the model failed, or named no label

details:
  llm:
    mode: extract                  # fill variables from free text
    fields: {name: str, guests: int, date: str}
  fail: ask_details                # the model failed, or left a field empty
  next: confirm
```

``classify`` stores the label at ``steps.<id>.label`` (and in ``save_as``);
``extract`` stores each field it filled as ``vars.<field>`` and the whole
output at ``steps.<id>.output``, with the fields it could not fill at
``steps.<id>.missing``.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from engine.ports import LLMError, LLMRequest
from engine.steps.base import Continue, StepContext, StepError, StepResult

if TYPE_CHECKING:
    from engine.steps.llm import LLMStep

CLASSIFY_INSTRUCTIONS = (
    "Classify the user's latest message. Answer with the one label that fits best, from: {labels}."
)
EXTRACT_INSTRUCTIONS = (
    "Extract these fields from the user's latest message: {fields}. "
    "Use null for a field the message does not state; never guess."
)


def classify_schema(labels: list[str]) -> dict[str, Any]:
    """``{"label": one of labels}``, every field required (OpenAI strict mode)."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def extract_schema(fields: dict[str, str], json_types: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each field of its type or null (so the model can say "not stated")."""
    properties: dict[str, Any] = {}
    for name, type_name in fields.items():
        schema = copy.deepcopy(json_types[type_name])
        schema["type"] = [schema["type"], "null"]
        properties[name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": list(fields),
        "additionalProperties": False,
    }


def run_mode(
    step: LLMStep, context: StepContext, json_types: dict[str, dict[str, Any]]
) -> StepResult:
    """Run a ``classify`` or ``extract`` step once and pick its transition."""
    spec = step.llm
    if spec.mode == "classify":
        labels = list(spec.labels or {})
        schema = classify_schema(labels)
        instructions = CLASSIFY_INSTRUCTIONS.format(labels=", ".join(labels))
    else:
        schema = extract_schema(spec.fields or {}, json_types)
        instructions = EXTRACT_INSTRUCTIONS.format(
            fields=", ".join(f"{name} ({kind})" for name, kind in (spec.fields or {}).items())
        )
    values = context.template_context()
    messages = step.messages(context, values)
    messages.insert(
        0 if messages[0]["role"] != "system" else 1, {"role": "system", "content": instructions}
    )
    request = LLMRequest(
        model=spec.model or context.flow.llm.model or context.default_model,
        messages=messages,
        temperature=spec.temperature if spec.temperature is not None else 0.0,
        output_schema=schema,
        schema_name=re.sub(r"[^a-zA-Z0-9_-]", "_", f"{context.step_id}_{spec.mode}")[:64],
        timeout=context.time_left(),
    )
    results = context.execution.step_results
    try:
        response = context.llm.complete(request)
    except LLMError as error:
        context.time_left()  # out of time: the turn timed out, not the model
        results[context.step_id] = {"error": str(error)}
        return _fail(step, context, f"LLM call failed: {error}", retryable=True)
    output = response.data if isinstance(response.data, dict) else None
    if spec.mode == "classify":
        label = output.get("label") if output else None
        results[context.step_id] = {"label": label}
        if label not in (spec.labels or {}):
            return _fail(step, context, f"the model named no label of {labels}: {label!r}")
        if step.save_as:
            context.execution.variables[step.save_as] = label
        return Continue((spec.labels or {})[label])
    fields = spec.fields or {}
    output = output or {}
    missing = [name for name in fields if output.get(name) in (None, "", [])]
    for name in fields:
        if name not in missing:
            context.execution.variables[name] = output[name]
    if step.save_as:
        context.execution.variables[step.save_as] = {name: output.get(name) for name in fields}
    results[context.step_id] = {"output": output, "missing": missing}
    if missing or response.data is None:
        return _fail(
            step, context, f"the model could not fill {', '.join(missing) or 'the fields'}"
        )
    return Continue()


def _fail(step: LLMStep, context: StepContext, reason: str, retryable: bool = False) -> StepResult:
    if step.fail is not None:
        return Continue(step.fail)
    raise StepError(context.step_id, reason, retryable=retryable)
