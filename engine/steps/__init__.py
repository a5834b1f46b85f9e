"""The step kinds of the flow language: one module each, one union listing them.

Adding a kind is one module with a `StepBase` subclass and one entry in
`STEP_KINDS`; parsing, validation and the JSON Schema follow from the union.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from engine.steps.ask import AskStep
from engine.steps.base import StepBase
from engine.steps.branch import BranchStep
from engine.steps.call import CallStep
from engine.steps.end import EndStep
from engine.steps.goto import GotoStep
from engine.steps.handover import HandoverStep
from engine.steps.http import HTTPStep
from engine.steps.llm import LLMStep
from engine.steps.paywall import PaywallStep
from engine.steps.say import SayStep
from engine.steps.set import SetStep

STEP_KINDS: tuple[type[StepBase], ...] = (
    SayStep,
    AskStep,
    LLMStep,
    BranchStep,
    SetStep,
    PaywallStep,
    HTTPStep,
    CallStep,
    GotoStep,
    EndStep,
    HandoverStep,
)
KIND_NAMES: tuple[str, ...] = tuple(kind.kind for kind in STEP_KINDS)


def step_kind(value: Any) -> str | None:
    """The kind a raw step names: the one key of `KIND_NAMES` it has, else None."""
    if isinstance(value, StepBase):
        return value.kind
    if not isinstance(value, dict):
        return None
    named = [name for name in KIND_NAMES if name in value]
    return named[0] if len(named) == 1 else None


Step = Annotated[
    Union[tuple(Annotated[kind, Tag(kind.kind)] for kind in STEP_KINDS)],  # noqa: UP007
    Discriminator(
        step_kind,
        custom_error_type="step_kind",
        custom_error_message=("a step names exactly one kind: one of " + ", ".join(KIND_NAMES)),
    ),
]
"""Any step, parsed by the one kind key it has."""

__all__ = ["KIND_NAMES", "STEP_KINDS", "Step", "StepBase", "step_kind"]
