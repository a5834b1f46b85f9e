"""The built-in scripted model: Parley's demo runs offline, without any LLM account.

With ``OPENAI_BASE_URL=scripted`` (the default of a development run that has
neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL``: ``make run``, ``flask chat``)
every ``llm`` step is answered by `ScriptedDemoLLM`, a few rules in this file,
instead of a model. It holds the shipped goal-setting conversation to its end
(it asks what the contact enjoys, proposes a goal for the area they chose, and
agrees when they say yes), and answers any other structured step with the
smallest valid object. Its replies are canned, not intelligent: the simulator,
the landing page and ``flask chat`` say so, and its messages are stored with
the model name ``scripted-demo``.

Production never uses it unless ``OPENAI_BASE_URL=scripted`` is set on purpose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.ports import LLM, LLMRequest, LLMResponse, LLMUsage, ModerationResult

#: The ``OPENAI_BASE_URL`` value that selects the scripted model.
SCRIPTED_URL = "scripted"
#: The model name its replies are stored with.
MODEL_NAME = "scripted-demo"

#: A goal to propose per area the contact chose (goal_setting's ``area``).
GOALS = {
    "sleep": "lights out by 23:00 on weeknights",
    "movement": "a 10-minute walk after lunch on weekdays",
    "connection": "calling one friend or relative this week",
}
DEFAULT_GOAL = "ten quiet minutes for yourself each evening"
_AGREE = re.compile(
    r"^\s*(yes|yeah|yep|yup|sure|ok(ay)?|deal|sounds good|let'?s do it|great|perfect|fine|"
    r"why not|good idea|i'?ll do it|agreed|y)\b",
    re.IGNORECASE,
)
_PROPOSAL = "Reply yes to make it your goal"


def _words(messages: list[dict[str, str]]) -> int:
    return sum(len(str(message.get("content", "")).split()) for message in messages)


def _last(messages: list[dict[str, str]], role: str) -> str:
    for message in reversed(messages):
        if message.get("role") == role:
            return str(message.get("content", ""))
    return ""


def _area(messages: list[dict[str, str]]) -> str:
    system = _last(messages, "system")
    match = re.search(r"work on: (\w+)", system)
    return match.group(1).lower() if match else ""


@dataclass
class ScriptedDemoLLM:
    """An `engine.ports.LLM` that answers from a few rules, for offline demos and tests.

    Attributes:
        model: The model name its answers report (`MODEL_NAME`).
    """

    model: str = MODEL_NAME

    def moderate(self, text: str, model: str, timeout: float | None) -> ModerationResult:
        """Flag nothing (the demo has no moderation model)."""
        return ModerationResult(categories={}, scores={})

    def transcribe(self, audio: bytes, *_: Any) -> str:
        """Refuse (the demo has no speech model): the contact gets the voice notes' reply.

        Raises:
            TranscriptionError: Always.
        """
        from integrations.openai import TranscriptionError

        raise TranscriptionError("the scripted demo model cannot listen to voice notes")

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Answer `request` from the script; never fails, never calls the network."""
        schema = request.output_schema or {}
        properties = schema.get("properties", {})
        if {"reply", "goal", "agreed"} <= set(properties):
            data: dict[str, Any] | None = self._coach(request.messages)
        elif properties:
            data = _filler(properties)
        else:
            data = None
        text = json.dumps(data) if data is not None else self._text(request.messages)
        usage = LLMUsage(
            model=self.model,
            prompt_tokens=_words(request.messages),
            completion_tokens=len(text.split()),
            latency_ms=0,
        )
        return LLMResponse(text=text, usage=usage, data=data)

    def _coach(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Goal setting in three turns: ask, propose, agree (or propose another)."""
        said = _last(messages, "user").strip()
        before = [m for m in messages[:-1] if m.get("role") == "assistant"]
        previous = str(before[-1]["content"]) if before else ""
        area = _area(messages)
        goal = GOALS.get(area, DEFAULT_GOAL)
        if _PROPOSAL in previous:
            proposed = re.search(r"How about (.+?)\?", previous)
            proposed_goal = proposed.group(1) if proposed else goal
            if _AGREE.match(said):
                return {
                    "reply": "Wonderful, it's a deal! Small steps add up.",
                    "goal": proposed_goal,
                    "agreed": True,
                }
            alternative = DEFAULT_GOAL if proposed_goal != DEFAULT_GOAL else goal
            return {
                "reply": f"No problem. How about {alternative}? {_PROPOSAL}.",
                "goal": alternative,
                "agreed": False,
            }
        if not previous or "?" not in previous or "What do you enjoy" not in previous:
            topic = area or "your well-being"
            return {
                "reply": f"Let's work on {topic}. What do you enjoy, and what gets in the way?",
                "goal": "",
                "agreed": False,
            }
        return {
            "reply": f"Thanks for telling me. How about {goal}? {_PROPOSAL}.",
            "goal": goal,
            "agreed": False,
        }

    @staticmethod
    def _text(messages: list[dict[str, str]]) -> str:
        return (
            "(Scripted demo model: set OPENAI_API_KEY for real answers.) "
            f"You said: {_last(messages, 'user')[:200]}"
        )


def _filler(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest object of that shape: empty-ish values, labelled as scripted."""
    values: dict[str, Any] = {}
    for name, spec in properties.items():
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        if "enum" in (spec or {}):
            values[name] = spec["enum"][0]
        elif kind == "boolean":
            values[name] = False
        elif kind in ("integer", "number"):
            values[name] = 0
        elif kind == "array":
            values[name] = []
        elif kind == "object":
            values[name] = _filler(spec.get("properties", {}))
        else:
            values[name] = f"(scripted demo: {name})"
    return values


@dataclass(frozen=True)
class ModelInfo:
    """Which kind of model answers the ``llm`` steps, for the pages that say so.

    Attributes:
        kind: ``openai`` (a real model), ``scripted`` (the built-in demo) or ``none``.
        label: A short phrase for a person.
    """

    kind: str
    label: str


def describe_llm(llm: LLM) -> ModelInfo:
    """What answers `llm` calls: a real model, the scripted demo, or nothing."""
    inner = getattr(llm, "inner", llm)  # the simulator's recorder wraps the app's LLM
    if isinstance(inner, ScriptedDemoLLM):
        return ModelInfo("scripted", "the built-in scripted demo model (canned replies, offline)")
    if type(inner).__name__ == "UnconfiguredLLM":
        return ModelInfo("none", "no model: llm steps answer with the flow's fallback")
    return ModelInfo("openai", "an OpenAI-compatible model")
