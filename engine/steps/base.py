"""What every step kind shares: transitions, the step context and step results."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from engine.effects import Effect
from engine.moderation import Decision, Moderator
from engine.ports import (
    HTTP,
    LLM,
    AlwaysEntitled,
    Clock,
    Contact,
    Entitlements,
    ExecutionState,
    HistoryMessage,
    InboundMessage,
    LLMUsage,
    NoHTTP,
    Reply,
)
from engine.templating import Templates

if TYPE_CHECKING:
    from engine.flow import Flow


class Transition(BaseModel):
    """One entry of a transition list: ``{if: COND, then: STEP}`` or ``{else: STEP}``.

    Conditions are tried in order; the first that holds wins; ``else`` must come
    last and catches everything else.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    if_: str | None = Field(default=None, alias="if")
    """A Jinja condition, e.g. ``"{{ vars.goal.agreed }}"`` or ``"vars.age >= 18"``."""
    then: str | None = None
    """The step to go to when the condition holds."""
    else_: str | None = Field(default=None, alias="else")
    """The step to go to when no condition above held."""

    @model_validator(mode="after")
    def _one_form(self) -> Transition:
        if self.else_ is not None:
            if self.if_ is not None or self.then is not None:
                raise ValueError("an `else` entry takes no `if` or `then`")
        elif self.if_ is None or self.then is None:
            raise ValueError("a transition needs `if` and `then`, or `else` alone")
        return self

    @property
    def target(self) -> str:
        """The step this entry leads to."""
        return self.then if self.else_ is None else self.else_  # type: ignore[return-value]


Next = str | list[Transition] | None

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_duration(value: object) -> dt.timedelta:
    """``"30m"``, ``"24h"``, ``"2d"``, ``"1h30m"``, ``"45s"`` or seconds → a timedelta.

    Raises:
        ValueError: anything else, or a duration of zero.
    """
    if isinstance(value, dt.timedelta):
        duration = value
    elif isinstance(value, int) and not isinstance(value, bool):
        duration = dt.timedelta(seconds=value)
    else:
        match = _DURATION.match(str(value).strip().lower())
        if not match or not any(match.groupdict().values()):
            raise ValueError(f"{value!r} is not a duration like 30m, 24h, 2d or 1h30m")
        parts = {key: int(number or 0) for key, number in match.groupdict().items()}
        duration = dt.timedelta(
            days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"]
        )
    if duration <= dt.timedelta(0):
        raise ValueError("a duration must be longer than zero")
    return duration


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]


class Timeout(BaseModel):
    """Stop waiting for the contact after a while (Studio's "stop gathering after").

    ``timeout: {after: 24h, next: nudge}``: when the contact has not answered
    within ``after``, the execution moves on to ``next``. Timers fire from the
    database (``flask engine tick``), so a restart loses none.
    """

    model_config = ConfigDict(extra="forbid")

    after: Duration
    """How long to wait: ``30s``, ``30m``, ``24h``, ``2d``, ``1h30m``."""
    next: str
    """The step to go to when the time is up."""


class StepError(Exception):
    """A step could not run; the turn answers with the flow's fallback.

    Attributes:
        step_id: The step that failed.
        reason: What went wrong, for logs and the designer.
        retryable: Whether the contact's next message may run the step again
            (an LLM outage) rather than end the execution as failed.
    """

    def __init__(self, step_id: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(f"step {step_id!r}: {reason}")
        self.step_id = step_id
        self.reason = reason
        self.retryable = retryable


class TurnTimedOut(StepError):
    """The turn's deadline passed (an inline turn must answer within Twilio's 15 s).

    Retryable: the execution stays at the step, which the contact's next
    message runs again.
    """

    def __init__(self, step_id: str, seconds: float) -> None:
        super().__init__(step_id, f"the turn's deadline of {seconds:g} s passed", retryable=True)
        self.seconds = seconds


@dataclass(frozen=True)
class Continue:
    """Go on to `target`, or, when None, to where the step's ``next`` leads."""

    target: str | None = None


@dataclass(frozen=True)
class Wait:
    """Stop here until the contact writes again; `deadline` is when it times out."""

    deadline: dt.datetime | None = None


@dataclass(frozen=True)
class End:
    """The execution is over."""


@dataclass(frozen=True)
class Jump:
    """Run another flow from its start (``call`` and ``goto`` steps).

    Attributes:
        flow_id: The flow to run.
        variables: Its ``vars`` to start with, over its own ``variables``.
        returns: True for a subflow that comes back to the step after it ran
            (``call``); False to end this execution and start the other flow
            (``goto``).
    """

    flow_id: str
    variables: dict[str, Any]
    returns: bool


StepResult = Continue | Wait | End | Jump


@dataclass
class StepContext:
    """Everything a step may read or change while it runs.

    Attributes:
        flow: The flow being run.
        step_id: The id of the running step.
        execution: The execution; steps change its variables and step results.
        contact: Who the turn is for.
        input: The inbound message of this turn (None when a turn starts
            without one, e.g. from a timer).
        templates: The sandboxed Jinja environment.
        llm: The chat model.
        clock: The time source.
        history: ``history(n)`` gives the last n messages: those before this
            turn, then what the bot said so far in this turn.
        default_model: The model to use when neither step nor flow names one.
        replies: What the turn sends, in order; steps append with `say`.
        effects: What the turn asks of the world outside the engine, in
            order; steps append with `emit`.
        entitlements: Who may pass paywalls.
        http: Makes ``http`` steps' requests.
        env: The environment variables ``http`` steps may read as
            ``{{ env.NAME }}`` (only those the operator allowed).
        deadline: When the turn must be done (`time.monotonic` seconds), or
            None; `time_left` gives each model and HTTP call what is left.
        deadline_seconds: The deadline's length, for messages.
        moderator: Checks the contact's text and the model's replies
            (`engine.moderation`), or None when moderation is off.
        moderation: The turn's moderation decisions, in order.
    """

    flow: Flow
    step_id: str
    execution: ExecutionState
    contact: Contact
    input: InboundMessage | None
    templates: Templates
    llm: LLM
    clock: Clock
    history: Callable[[int], list[HistoryMessage]]
    default_model: str
    replies: list[Reply] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    entitlements: Entitlements = field(default_factory=AlwaysEntitled)
    http: HTTP = field(default_factory=NoHTTP)
    env: Mapping[str, str] = field(default_factory=dict)
    deadline: float | None = None
    deadline_seconds: float = 0.0
    moderator: Moderator | None = None
    moderation: list[Decision] = field(default_factory=list)
    input_moderated: bool = False

    def moderate_input(self) -> Decision | None:
        """Check the contact's text of this turn, once per turn (before a model call).

        Returns:
            The decision, or None when moderation is off, the text was already
            checked this turn, or nothing was flagged.
        """
        if self.moderator is None or self.input is None or self.input_moderated:
            return None
        self.input_moderated = True
        decision = self.moderator.decide(self.input.text, "inbound", self.step_id, self.time_left())
        if decision is not None:
            self.moderation.append(decision)
        return decision

    def moderate_reply(self, text: str) -> Decision | None:
        """Check a model's reply before it is sent; None when off or nothing was flagged."""
        if self.moderator is None or not self.moderator.settings.check_replies:
            return None
        decision = self.moderator.decide(text, "outbound", self.step_id, self.time_left())
        if decision is not None:
            self.moderation.append(decision)
        return decision

    def safe_message(self, decision: Decision) -> None:
        """Send the moderation's safe message, and hand over as its settings say.

        Args:
            decision: The inbound decision whose action is ``safe_message``.
        """
        assert self.moderator is not None
        settings = self.moderator.settings
        self.replies.append(
            Reply(text=settings.safe_message.strip(), step_id=self.step_id, author="system")
        )
        handover = settings.handover_for(decision)
        if handover is not None:
            self.emit(handover)

    def time_left(self) -> float | None:
        """Seconds left before the turn's deadline (None: no deadline).

        Raises:
            TurnTimedOut: the deadline has passed.
        """
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0.05:
            raise TurnTimedOut(self.step_id, self.deadline_seconds)
        return left

    @property
    def state(self) -> dict[str, Any]:
        """The running step's own book-keeping (retries, turns), kept between turns."""
        return self.execution.step_state

    def template_context(self, **extra: Any) -> dict[str, Any]:
        """The names templates see: contact, vars, input, steps, flow, now (+ extra)."""
        context: dict[str, Any] = {
            "contact": {
                "name": self.contact.name,
                "phone": self.contact.phone,
                "channel": self.contact.channel,
            },
            "vars": self.execution.variables,
            "input": self.input.as_context() if self.input else dict(NO_INPUT),
            "steps": self.execution.step_results,
            "flow": {"id": self.flow.id, "description": self.flow.description},
            "now": self.clock.now(),
        }
        context.update(extra)
        return context

    def render(self, source: str, **extra: Any) -> str:
        """Render a flow string for this step (see `Templates.render`)."""
        return self.templates.render(source, self.template_context(**extra))

    def emit(self, effect: Effect) -> None:
        """Ask the turn service for something outside the engine (`engine.effects`)."""
        self.effects.append(effect)

    def say(
        self,
        text: str,
        usage: LLMUsage | None = None,
        template: WhatsAppTemplate | None = None,
        media_url: str | None = None,
        delay_seconds: float = 0.0,
    ) -> None:
        """Queue a message to the contact; blank text sends nothing.

        Args:
            text: The message.
            usage: The LLM call that wrote it, if any.
            template: The WhatsApp template to send instead outside the
                24-hour window; its variables are rendered here.
            media_url: An image or document sent with the text (then blank
                text is sent too).
            delay_seconds: How long to wait before sending it.
        """
        if text.strip() or media_url:
            rendered = template.render(self) if template else None
            self.replies.append(
                Reply(
                    text=text.strip(),
                    step_id=self.step_id,
                    usage=usage,
                    template=rendered,
                    media_url=media_url,
                    delay_seconds=delay_seconds,
                )
            )


#: ``input`` in templates when a turn has no inbound message (a timer, a resume).
NO_INPUT: dict[str, Any] = {
    "text": "",
    "media": [],
    "media_types": [],
    "button": None,
    "location": None,
    "transcribed": False,
}


class WhatsAppTemplate(BaseModel):
    """A pre-approved WhatsApp template (Twilio Content API) for a message.

    WhatsApp refuses a free-form message more than 24 hours after the
    contact's last message (Twilio error 63016); outside that window Parley
    sends this template instead (https://www.twilio.com/docs/content).

    ```yaml
    nudge:
      say: "Still there? Reply any time to carry on."
      template:
        content_sid: HXb5b62575e6e4ff6129ad7c8efe1f983e
        variables: {"1": "{{ contact.name }}"}
    ```
    """

    model_config = ConfigDict(extra="forbid")

    content_sid: str = Field(pattern=r"^HX[0-9a-fA-F]{32}$")
    """The template's Content SID (``HX`` and 32 hex digits)."""
    variables: dict[str, str] = Field(default_factory=dict)
    """Its placeholders (``{{1}}`` is ``"1"``), each a Jinja template."""

    def render(self, context: StepContext) -> dict[str, Any]:
        """``{"content_sid": ..., "content_variables": {name: rendered text}}``."""
        return {
            "content_sid": self.content_sid,
            "content_variables": {
                name: context.render(source) for name, source in self.variables.items()
            },
        }

    def template_uses(self, path: tuple[str | int, ...]) -> Iterator[TemplateUse]:
        """Each variable's template, under `path`."""
        for name, source in self.variables.items():
            yield TemplateUse((*path, "variables", name), source)


@dataclass(frozen=True)
class TemplateUse:
    """A template a step holds, for validation.

    Attributes:
        path: Where it is in the step, e.g. ``("next", 0, "if")``.
        source: The template text.
        bare: Whether a string without braces is an expression (conditions).
        extra_names: Names available besides the usual context (``output``).
    """

    path: tuple[str | int, ...]
    source: str
    bare: bool = False
    extra_names: frozenset[str] = frozenset()


class StepBase(BaseModel):
    """Fields every step kind has."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: ClassVar[str]
    waits: ClassVar[bool] = False
    #: Whether messages a contact sends in a quick burst while the execution
    #: waits here are answered as one (``TURN_DEBOUNCE_MS``): true for steps
    #: that converse, where three short lines are one thought.
    merges_bursts: ClassVar[bool] = False
    #: Whether an execution waiting here waits for a payment, not a message
    #: (a payment's webhook then resumes it).
    awaits_payment: ClassVar[bool] = False

    next: Next = None
    """The step that follows: a step id, or a list of ``if``/``then`` and a final
    ``else``. Without one, the flow ends after this step."""
    description: str | None = None
    """A note for designers; never sent."""

    def enter(self, context: StepContext) -> StepResult:
        """Run the step when the execution arrives at it."""
        raise NotImplementedError

    def wait(self, context: StepContext) -> Wait:
        """Wait for the contact, until the step's ``timeout`` (if it has one) is up."""
        timeout: Timeout | None = getattr(self, "timeout", None)
        if timeout is None:
            return Wait()
        return Wait(deadline=context.clock.now() + timeout.after)

    def resume(self, context: StepContext) -> StepResult:
        """Run the step with the contact's answer, after it waited."""
        raise StepError(context.step_id, f"a {self.kind} step does not wait for the contact")

    def transcribes(self) -> bool:
        """Whether a voice note sent while the execution waits here is transcribed.

        The step's ``transcribe`` (``ask`` and ``llm`` steps); True for kinds without it.
        """
        return bool(getattr(self, "transcribe", True))

    def targets(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Every step id this step can lead to, with where it is named."""
        if isinstance(self.next, str):
            yield ("next",), self.next
        elif isinstance(self.next, list):
            for index, transition in enumerate(self.next):
                yield ("next", index), transition.target
        timeout: Timeout | None = getattr(self, "timeout", None)
        if timeout is not None:
            yield ("timeout", "next"), timeout.next

    def template_uses(self) -> Iterator[TemplateUse]:
        """Every template the step holds (for validation)."""
        if isinstance(self.next, list):
            for index, transition in enumerate(self.next):
                if transition.if_ is not None:
                    yield TemplateUse(("next", index, "if"), transition.if_, bare=True)

    def variables_set(self) -> set[str]:
        """The names this step stores under ``vars``."""
        return set()

    def prompt_files(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Prompt files (relative to ``prompts/``) the step reads."""
        return iter(())

    def flows_used(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Other flows the step runs (``call``, ``goto``), with where they are named."""
        return iter(())


def resolve_next(next_: Next, context: StepContext) -> str | None:
    """Where a ``next`` leads now: a step id, or None when the flow ends.

    Raises:
        StepError: no condition held and there is no ``else`` (validation
            reports this before a flow runs), or a condition failed to render.
    """
    if next_ is None or isinstance(next_, str):
        return next_
    values = context.template_context()
    for transition in next_:
        if transition.else_ is not None:
            return transition.else_
        if context.templates.condition(transition.if_ or "", values):
            return transition.then
    raise StepError(context.step_id, "no transition condition held and there is no `else`")
