"""``paywall``: let only entitled contacts past this point.

```yaml
premium:
  paywall: subscription            # the entitlement to check
  message: "Coaching sessions are for subscribers: {{ payment_url }}"   # optional
  next: deep_dive
```

A whole flow can be paywalled with the flow-level ``entitlement:`` instead.
With the paywall switched off (``PAYWALL_ENABLED``, ``flask paywall off``) every
contact is entitled and this step just goes on. An unentitled contact gets a
payment link and the execution waits here; when the payment's webhook arrives
Parley says ``welcome`` and carries on from here. The link is sent at most once
a day; messages in between get the ``waiting`` text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from engine.effects import AwaitPayment
from engine.ports import EntitlementCheck, EntitlementError, ExecutionState
from engine.steps.base import (
    Continue,
    StepBase,
    StepContext,
    StepError,
    StepResult,
    TemplateUse,
    Wait,
)

if TYPE_CHECKING:
    from engine.flow import Flow

PAYMENT_NAMES = frozenset({"payment_url"})


class PaywallTexts(BaseModel):
    """What an unentitled contact is told (templates; ``payment_url`` is the link)."""

    model_config = ConfigDict(extra="forbid")

    message: str = "To carry on, please subscribe here: {{ payment_url }}"
    """Sent with the payment link (at most once a day)."""
    waiting: str = (
        "Your payment link is in my earlier message. Once you've paid, we'll carry on right here."
    )
    """Sent when the contact writes again before paying, within a day of the link."""
    welcome: str = "Thanks, your subscription is active! Let's carry on."
    """Sent when the payment arrives and the flow carries on."""

    def uses(self, prefix: tuple[str | int, ...]) -> Iterator[TemplateUse]:
        """The three texts, for validation."""
        for name in ("message", "waiting", "welcome"):
            yield TemplateUse((*prefix, name), getattr(self, name), extra_names=PAYMENT_NAMES)


def check_entitlement(context: StepContext, entitlement: str) -> EntitlementCheck:
    """Ask the entitlement store about the contact.

    Raises:
        StepError: the payment provider could not be reached (retryable).
    """
    try:
        return context.entitlements.check(context.contact, entitlement)
    except EntitlementError as error:
        raise StepError(
            context.step_id, f"entitlement check failed: {error}", retryable=True
        ) from error


def ask_to_pay(
    context: StepContext, texts: PaywallTexts, check: EntitlementCheck, entitlement: str
) -> None:
    """Send the payment link, or the waiting text when it was sent within a day.

    The turn then carries an `AwaitPayment` effect: the execution waits for a payment.
    """
    template = texts.message if check.remind and check.payment_url else texts.waiting
    context.say(context.render(template, payment_url=check.payment_url or ""))
    context.emit(AwaitPayment(entitlement))


#: Where an execution held by a flow's ``entitlement`` (not a step) keeps that
#: fact, so that the payment resumes it at the step it stopped at.
GATE_KEY = "paywall"


def flow_gate(flow: Flow, context: StepContext) -> bool | None:
    """A flow's own ``entitlement:``, checked every turn while the paywall is on.

    Returns:
        None when the contact must pay (the link or a reminder is queued and
        the execution waits); False when the contact just got past a paywall
        that held them (the current step is entered afresh, which is where the
        execution stopped); True otherwise (carry on as usual).

    Raises:
        StepError: the entitlement store could not be asked (retryable).
    """
    execution = context.execution
    assert flow.entitlement is not None
    check = check_entitlement(context, flow.entitlement)
    if check.entitled:
        if execution.step_state.pop(GATE_KEY, None) is None:
            return True
        context.say(context.render(flow.paywall.welcome, payment_url=""))
        return False
    execution.step_state[GATE_KEY] = flow.entitlement
    execution.status = "waiting"
    ask_to_pay(context, flow.paywall, check, flow.entitlement)
    return None


def awaits_payment(flow: Flow, execution: ExecutionState) -> bool:
    """Whether `execution` waits for a payment: held by the flow's gate or at a paywall step."""
    if execution.status != "waiting":
        return False
    step = flow.steps.get(execution.current_step)
    return GATE_KEY in execution.step_state or bool(step is not None and step.awaits_payment)


class PaywallStep(StepBase):
    """Go on only when the contact is entitled; otherwise send a payment link and wait."""

    kind: ClassVar[str] = "paywall"
    waits: ClassVar[bool] = True
    awaits_payment: ClassVar[bool] = True

    paywall: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """The entitlement to check, e.g. ``subscription``."""
    message: str | None = None
    """Sent with the link; the default names ``{{ payment_url }}``."""
    waiting: str | None = None
    """Sent when the contact writes again before paying."""
    welcome: str | None = None
    """Sent when the payment arrives."""

    def texts(self) -> PaywallTexts:
        """This step's texts, defaults filled in."""
        overrides = {
            name: getattr(self, name)
            for name in ("message", "waiting", "welcome")
            if getattr(self, name) is not None
        }
        return PaywallTexts(**overrides)

    def enter(self, context: StepContext) -> StepResult:
        """Go on if entitled, else send the link and wait."""
        check = check_entitlement(context, self.paywall)
        if check.entitled:
            return Continue()
        ask_to_pay(context, self.texts(), check, self.paywall)
        return Wait()

    def resume(self, context: StepContext) -> StepResult:
        """After a message or a payment: go on if now entitled, else remind."""
        check = check_entitlement(context, self.paywall)
        if check.entitled:
            context.say(context.render(self.texts().welcome, payment_url=""))
            return Continue()
        ask_to_pay(context, self.texts(), check, self.paywall)
        return Wait()

    def template_uses(self) -> Iterator[TemplateUse]:
        """The texts and the transitions."""
        yield from self.texts().uses(())
        yield from super().template_uses()
