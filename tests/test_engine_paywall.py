"""Paywalls in the engine: the flow-level `entitlement` and the `paywall` step."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.flow import FlowSet, parse_flow
from engine.ports import Contact, EntitlementCheck, EntitlementError, InboundMessage
from engine.runner import Runner
from engine.templating import Templates
from engine.validate import validate_flows

CONTACT = Contact(id=7, phone="+15551230007", name="Ana", channel="whatsapp")

PAYWALLED_FLOW = """\
id: premium
entitlement: subscription
trigger: {default: true}
start: hello
steps:
  hello:
    say: "Welcome to premium, {{ contact.name }}."
    next: question
  question:
    ask: "Ready?"
    choices: ["yes", "no"]
    next: done
  done:
    end: true
"""

STEP_FLOW = """\
id: freemium
trigger: {default: true}
start: free
steps:
  free:
    ask: "Free question: your name?"
    save_as: name
    next: gate
  gate:
    paywall: subscription
    message: "Pay here to go on, {{ vars.name }}: {{ payment_url }}"
    next: paid
  paid:
    say: "Premium content for {{ vars.name }}."
    next: done
  done:
    end: true
"""


class Store:
    """An Entitlements port with a switch, recording what it was asked."""

    def __init__(self) -> None:
        self.entitled = False
        self.remind = True
        self.fail = False
        self.asked: list[tuple[int, str]] = []

    def check(self, contact: Contact, entitlement: str) -> EntitlementCheck:
        self.asked.append((contact.id, entitlement))
        if self.fail:
            raise EntitlementError("Stripe is unreachable")
        if self.entitled:
            return EntitlementCheck(entitled=True, status="active")
        return EntitlementCheck(
            entitled=False, payment_url="https://pay.example/cs_1", remind=self.remind
        )


class NoLLM:
    def complete(self, request):  # pragma: no cover - never called by these flows
        raise AssertionError("no LLM in these flows")


class FixedClock:
    def now(self) -> dt.datetime:
        return dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def runner_for(text: str) -> Runner:
    flow, problems = parse_flow(text, "flow.yaml")
    assert flow is not None and not problems, problems
    templates = Templates(Path("prompts"))
    assert validate_flows([flow], templates) == []
    return Runner(FlowSet({flow.id: flow}), templates, NoLLM(), FixedClock())


def turn(runner, execution, text, store):
    inbound = InboundMessage(text) if text is not None else None
    result = runner.run_turn(execution, inbound, CONTACT, lambda n: [], entitlements=store)
    return result.execution, [reply.text for reply in result.replies], result


def test_unentitled_contact_gets_the_link_and_waits_at_the_start():
    runner, store = runner_for(PAYWALLED_FLOW), Store()

    execution, replies, _ = turn(runner, None, "hi", store)

    assert replies == ["To carry on, please subscribe here: https://pay.example/cs_1"]
    assert (execution.status, execution.current_step) == ("waiting", "hello")
    assert store.asked == [(7, "subscription")]


def test_a_reminder_within_a_day_sends_the_waiting_text_not_the_link():
    runner, store = runner_for(PAYWALLED_FLOW), Store()
    execution, _, _ = turn(runner, None, "hi", store)
    store.remind = False

    execution, replies, _ = turn(runner, execution, "hello?", store)

    assert replies == [
        "Your payment link is in my earlier message. Once you've paid, we'll carry on right here."
    ]
    assert execution.status == "waiting"


def test_payment_resumes_exactly_where_the_flow_stopped():
    runner, store = runner_for(PAYWALLED_FLOW), Store()
    execution, _, _ = turn(runner, None, "hi", store)
    store.entitled = True

    execution, replies, _ = turn(runner, execution, None, store)  # the payment's webhook

    assert replies == [
        "Thanks, your subscription is active! Let's carry on.",
        "Welcome to premium, Ana.",
        "Ready?",
    ]
    assert (execution.status, execution.current_step) == ("waiting", "question")
    assert "paywall" not in execution.step_state


def test_cancellation_locks_the_flow_again_mid_way_and_payment_reasks_the_question():
    runner, store = runner_for(PAYWALLED_FLOW), Store()
    store.entitled = True
    execution, replies, _ = turn(runner, None, "hi", store)
    assert replies == ["Welcome to premium, Ana.", "Ready?"]

    store.entitled = False
    execution, replies, _ = turn(runner, execution, "yes", store)
    assert replies == ["To carry on, please subscribe here: https://pay.example/cs_1"]
    assert execution.current_step == "question"

    store.entitled = True
    execution, replies, _ = turn(runner, execution, None, store)
    assert replies == ["Thanks, your subscription is active! Let's carry on.", "Ready?"]
    execution, replies, _ = turn(runner, execution, "yes", store)
    assert execution.status == "ended"


def test_entitled_contacts_never_see_the_paywall():
    runner, store = runner_for(STEP_FLOW), Store()
    store.entitled = True

    execution, _, _ = turn(runner, None, "hi", store)
    execution, replies, _ = turn(runner, execution, "Ana", store)

    assert replies == ["Premium content for Ana."]
    assert execution.status == "ended"


def test_paywall_step_waits_mid_flow_and_carries_on_after_payment():
    runner, store = runner_for(STEP_FLOW), Store()
    execution, _, _ = turn(runner, None, "hi", store)
    execution, replies, _ = turn(runner, execution, "Ana", store)
    assert replies == ["Pay here to go on, Ana: https://pay.example/cs_1"]
    assert (execution.status, execution.current_step) == ("waiting", "gate")

    store.entitled = True
    execution, replies, _ = turn(runner, execution, None, store)

    assert replies == [
        "Thanks, your subscription is active! Let's carry on.",
        "Premium content for Ana.",
    ]
    assert execution.status == "ended"


def test_paywall_off_means_no_payment_is_asked():
    runner = runner_for(PAYWALLED_FLOW)

    result = runner.run_turn(None, InboundMessage("hi"), CONTACT, lambda n: [])

    assert [reply.text for reply in result.replies] == ["Welcome to premium, Ana.", "Ready?"]


@pytest.mark.parametrize("flow", [PAYWALLED_FLOW, STEP_FLOW])
def test_payment_provider_down_answers_the_fallback_and_keeps_waiting(flow):
    runner, store = runner_for(flow), Store()
    execution, _, _ = turn(runner, None, "hi", store)
    store.fail = True

    execution, replies, result = turn(runner, execution, "Ana", store)

    assert replies[-1] == "Sorry, I'm having trouble right now. Please try again in a minute."
    assert "Stripe is unreachable" in result.error.reason
    assert execution.status == "waiting"


def test_paywall_texts_are_validated_and_may_use_payment_url():
    text = PAYWALLED_FLOW.replace(
        "entitlement: subscription\n",
        "entitlement: subscription\npaywall:\n  message: 'Pay {{ payment_url }} {{ vars.nope }}'\n",
    )
    flow, problems = parse_flow(text, "flow.yaml")
    assert flow is not None and not problems

    found = validate_flows([flow], Templates(Path("prompts")))

    assert [(problem.line, "vars.nope" in problem.message) for problem in found] == [(4, True)]
