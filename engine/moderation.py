"""Safety before and after the model: moderation of inbound text and of model replies.

Configured in ``FLOWS_DIR/_settings.yaml`` under ``moderation`` (off without
it). Before an ``llm`` step calls the model, the contact's text of the turn is
checked once; before the model's reply is sent, the reply is checked. Each
flagged category has an action the designer chooses:

- ``safe_message``: the model is not called; the contact gets the configured
  ``safe_message`` (the operator's helpline text) and the conversation goes to
  a person (the ``handover`` effect): by default to the available agent (else
  the handover queue) wherever agents are configured, or where ``handover``
  says, or nowhere with ``handover: none``. Inbound only: a flagged reply is
  never sent, so for a reply it means ``fallback``.
- ``fallback``: the step fails with its flow's ``fallback`` (retryable: the
  execution stays at the step).
- ``allow``: the decision is recorded and the turn goes on.

The check itself goes through the `engine.ports.Moderation` port (OpenAI's
moderation endpoint in production, integrations/openai.py); when it fails,
``on_error`` says what applies. Every decision other than "nothing flagged"
is recorded on the turn (`TurnResult.moderation`), then on the inbound
message (``Message.moderation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.effects import HandOver
from engine.ports import Moderation, ModerationError

Action = Literal["safe_message", "fallback", "allow"]

#: OpenAI's moderation categories (``omni-moderation-latest``).
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class ModerationErrorSettings(BaseModel):
    """What applies when the moderation call fails (timeout, outage)."""

    model_config = ConfigDict(extra="forbid")

    inbound: Action = "safe_message"
    """For the contact's text: ``safe_message`` (fail closed, the default),
    ``fallback`` or ``allow`` (fail open: the model is called unchecked)."""
    outbound: Literal["fallback", "allow"] = "fallback"
    """For the model's reply: ``fallback`` (fail closed, the default) or
    ``allow`` (fail open: the reply is sent unchecked)."""


class ModerationSettings(BaseModel):
    """The ``moderation`` section of ``_settings.yaml``: what each flagged category does."""

    model_config = ConfigDict(extra="forbid")

    model: str = "omni-moderation-latest"
    """The moderation model."""
    categories: dict[str, Action] = Field(default_factory=dict)
    """Category → action, e.g. ``self-harm: safe_message``. A category written
    without its subcategories covers them (``self-harm`` covers
    ``self-harm/intent``) unless they are listed too."""
    default: Action = "allow"
    """The action for a flagged category not listed in ``categories``."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Category → score from which it counts as flagged even when the endpoint
    does not flag it (e.g. ``self-harm: 0.3`` for a coaching flow)."""
    safe_message: str = Field(default="", max_length=1600)
    """What the contact gets for ``safe_message``: say you are a bot, give the
    operator's helpline text. Required when any action is ``safe_message``."""
    handover: str = "auto"
    """Where ``safe_message`` hands the conversation over: ``auto`` (the default:
    a flagged message goes to the available agent, else ``HANDOVER_QUEUE``, when
    agents are configured, and stays with the bot when none are),
    ``queue:<name>``, ``agent:<email>`` or ``available`` (always, a failed check
    too), or ``none`` (never; ``false`` too)."""
    check_replies: bool = True
    """Check the model's replies before they are sent."""
    on_error: ModerationErrorSettings = ModerationErrorSettings()
    """What applies when the moderation call fails."""

    @field_validator("categories", "thresholds")
    @classmethod
    def _known(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if name not in CATEGORIES:
                raise ValueError(f"unknown category {name!r}; use one of {', '.join(CATEGORIES)}")
        return value

    @field_validator("handover", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        if value is None or value is False:  # `handover:` left empty, or `false`
            return "none"
        if not isinstance(value, str):
            raise ValueError(f"handover: {_TARGETS}, not {value!r}")
        kind, _, name = value.partition(":")
        if value in ("auto", "none", "available") or (kind in ("queue", "agent") and name.strip()):
            return value
        raise ValueError(f"handover: {_TARGETS}, not {value!r}")

    @model_validator(mode="after")
    def _message_given(self) -> ModerationSettings:
        actions = {*self.categories.values(), self.default, self.on_error.inbound}
        if "safe_message" in actions and not self.safe_message.strip():
            raise ValueError("`safe_message` actions need a `safe_message` text")
        return self

    def handover_for(self, decision: Decision) -> HandOver | None:
        """The handover that comes with the safe message sent for `decision`, or None.

        ``auto`` hands over a flagged message only (not a failed check: an
        outage would send every conversation to the inbox), and only where
        agents are configured (`HandOver.only_if_agents`).
        """
        if self.handover == "none":
            return None
        if self.handover == "auto":
            flagged = decision.category is not None
            return HandOver("available", only_if_agents=True) if flagged else None
        return HandOver(self.handover)

    def action_for(self, category: str) -> Action:
        """The action of a flagged `category` (its own, its parent's, or the default)."""
        if category in self.categories:
            return self.categories[category]
        parent = category.split("/", 1)[0]
        return self.categories.get(parent, self.default)


#: What `ModerationSettings.handover` accepts, for error messages.
_TARGETS = "auto, none, available, queue:<name> or agent:<email>"

#: How severe each action is: the strictest action of the flagged categories wins.
_SEVERITY = {"allow": 0, "fallback": 1, "safe_message": 2}


@dataclass(frozen=True)
class Decision:
    """One moderation decision of a turn.

    Attributes:
        direction: ``inbound`` (the contact's text) or ``outbound`` (a model reply).
        step_id: The ``llm`` step it was made at.
        action: ``safe_message``, ``fallback`` or ``allow``.
        category: The deciding category (the highest-scoring one with that
            action), or None when the call failed.
        score: Its score, 0 to 1 (None when the call failed).
        categories: Every flagged category with its score.
        error: Why the moderation call failed, or None.
    """

    direction: Literal["inbound", "outbound"]
    step_id: str
    action: Action
    category: str | None = None
    score: float | None = None
    categories: dict[str, float] | None = None
    error: str | None = None

    def recorded(self) -> dict[str, Any]:
        """As stored on the message (JSON)."""
        record: dict[str, Any] = {
            "direction": self.direction,
            "step": self.step_id,
            "action": self.action,
            "category": self.category,
            "score": round(self.score, 4) if self.score is not None else None,
        }
        if self.categories:
            record["categories"] = {name: round(s, 4) for name, s in self.categories.items()}
        if self.error:
            record["error"] = self.error
        return record


@dataclass
class Moderator:
    """Applies `settings` to what the `port` says about a text."""

    port: Moderation
    settings: ModerationSettings

    def decide(
        self,
        text: str,
        direction: Literal["inbound", "outbound"],
        step_id: str,
        timeout: float | None,
    ) -> Decision | None:
        """Check `text`; None when nothing is flagged (or there is nothing to check)."""
        if not text.strip():
            return None
        settings = self.settings
        try:
            result = self.port.moderate(text, settings.model, timeout)
        except ModerationError as error:
            if direction == "inbound":
                action: Action = settings.on_error.inbound
            else:
                action = settings.on_error.outbound
            return Decision(direction, step_id, action, error=str(error) or repr(error))
        flagged = {
            name: result.scores.get(name, 0.0)
            for name in set(result.categories) | set(settings.thresholds)
            if result.categories.get(name)
            or result.scores.get(name, 0.0) >= settings.thresholds.get(name, 2.0)
        }
        if not flagged:
            return None
        ranked = sorted(
            flagged.items(),
            key=lambda item: (_SEVERITY[settings.action_for(item[0])], item[1]),
            reverse=True,
        )
        category, score = ranked[0]
        action = settings.action_for(category)
        if direction == "outbound" and action == "safe_message":
            action = "fallback"
        return Decision(direction, step_id, action, category, score, dict(ranked))
