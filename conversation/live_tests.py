"""Live runs of conversation tests: the contact's messages go to the real model.

``flask flows test --live`` plays each test's ``say`` texts through the real
turn path (`conversation.flow_tests.play`) with the configured model answering
instead of the scripted ``llm`` answers. A conversation with a real model can
go another way than the recorded one, so exact replies are not checked; the
criteria are (`conversation.flow_tests.Expect`):

- each turn's ``live`` criteria, for every reply the model wrote that turn;
- a turn's ``expect`` when it is one mapping of criteria (``{not_contains: …}``),
  for all of the turn's replies together;
- ``judge: "rubric"``: a second model call, with structured output
  ``{passed, reason}``, says whether the reply meets the rubric, and why.

A model call that fails (a timeout, an HTTP error, no structured output) is an
*error*, reported as such and never counted as a pass. Each test runs
``repeat`` times; a run passes when every check of it passed. The report
gives a pass rate per test and per step, the tokens used and their cost, and
can be written as JUnit XML for CI.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from conversation.flow_tests import ConversationSpec, Expect, PlayedTurn, play
from engine.ports import LLM, LLMError, LLMRequest
from engine.runner import Runner

#: US dollars per million tokens (input, output), from openai.com/api/pricing.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}

JUDGE_SYSTEM = (
    "You check one reply of a chatbot against a rubric written by the bot's designer. "
    "Answer passed=true only if the reply meets every part of the rubric; give the "
    "reason in one sentence."
)
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"passed": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["passed", "reason"],
    "additionalProperties": False,
}
#: The structured output's name: how a judge call is told from the flow's calls.
JUDGE_SCHEMA_NAME = "judgement"


@dataclass
class Usage:
    """Tokens used, by model."""

    tokens: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def add(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one call."""
        self.tokens[model][0] += prompt_tokens
        self.tokens[model][1] += completion_tokens

    def merge(self, other: Usage) -> None:
        """Add another count to this one."""
        for model, (prompt, completion) in other.tokens.items():
            self.add(model, prompt, completion)

    @property
    def total(self) -> tuple[int, int]:
        """Prompt and completion tokens, every model together."""
        return (
            sum(p for p, _ in self.tokens.values()),
            sum(c for _, c in self.tokens.values()),
        )

    def cost(self) -> float | None:
        """The cost in US dollars (`PRICES`), or None when a model's price is unknown."""
        total = 0.0
        for model, (prompt, completion) in self.tokens.items():
            price = PRICES.get(model) or next(
                (p for name, p in PRICES.items() if model.startswith(name + "-")), None
            )
            if price is None:
                return None
            total += (prompt * price[0] + completion * price[1]) / 1_000_000
        return total


@dataclass
class Check:
    """One criterion checked on one turn of one run.

    Attributes:
        turn: The turn's number.
        step_id: The step whose reply was checked (None: the turn's replies together).
        criterion: What was checked.
        outcome: ``pass``, ``fail`` or ``error`` (the model could not be asked).
        reason: Why it failed (the judge's reason for a judged criterion).
    """

    turn: int
    step_id: str | None
    criterion: str
    outcome: str
    reason: str = ""


@dataclass
class LiveRun:
    """One run of one test against the real model.

    Attributes:
        number: 1 for the first run.
        checks: Every check, in order.
        flow_usage: Tokens of the flow's model calls.
        judge_usage: Tokens of the judge's calls.
    """

    number: int
    checks: list[Check] = field(default_factory=list)
    flow_usage: Usage = field(default_factory=Usage)
    judge_usage: Usage = field(default_factory=Usage)

    @property
    def passed(self) -> bool:
        """Every check passed (an error is not a pass)."""
        return all(check.outcome == "pass" for check in self.checks)

    @property
    def errors(self) -> list[Check]:
        """The checks the model could not be asked for."""
        return [check for check in self.checks if check.outcome == "error"]


@dataclass
class LiveResult:
    """How one test did over its runs.

    Attributes:
        name: ``file: conversation name``.
        spec: The conversation.
        runs: Each run.
        flow_version: The version of the flow it ran on.
    """

    name: str
    spec: ConversationSpec
    runs: list[LiveRun] = field(default_factory=list)
    flow_version: str | None = None

    @property
    def pass_rate(self) -> float:
        """The share of runs that passed, 0 to 1."""
        return sum(run.passed for run in self.runs) / len(self.runs) if self.runs else 0.0


def _classify(error: str) -> str:
    return "timeout" if "timed out" in error or "timeout" in error.lower() else "model error"


class LiveRunner:
    """Plays tests against a model and checks the replies.

    Args:
        runner: The runner (the flows the tests run on).
        llm: The model the flow's calls go to.
        judge_model: The model that judges replies against rubrics.
    """

    def __init__(self, runner: Runner, llm: LLM, judge_model: str) -> None:
        self.runner = runner
        self.llm = llm
        self.judge_model = judge_model

    def run(self, name: str, spec: ConversationSpec, repeat: int) -> LiveResult:
        """Run one test `repeat` times."""
        flow = self.runner.flows.get(spec.flow or "")
        result = LiveResult(name, spec, flow_version=flow.version if flow else None)
        for number in range(1, repeat + 1):
            result.runs.append(self._once(number, spec))
        return result

    def _once(self, number: int, spec: ConversationSpec) -> LiveRun:
        run = LiveRun(number)
        played = play(spec, self.runner, self.llm)
        if played.flow is None:
            run.checks.append(Check(0, None, "the flow", "error", f"no flow {spec.flow!r}"))
            return run
        for turn in played.turns:
            for call in turn.llm_calls:
                if call.usage is not None:
                    run.flow_usage.add(
                        call.usage.model, call.usage.prompt_tokens, call.usage.completion_tokens
                    )
                if call.error is not None:
                    run.checks.append(
                        Check(
                            turn.number,
                            call.step_id,
                            "the model answers",
                            "error",
                            f"{_classify(call.error)}: {call.error}",
                        )
                    )
            if turn.error and not any(call.error for call in turn.llm_calls):
                run.checks.append(
                    Check(
                        turn.number,
                        None,
                        "the turn runs",
                        "error",
                        f"the turn failed: {turn.error}",
                    )
                )
            self._check_turn(run, turn)
        return run

    def _check_turn(self, run: LiveRun, turn: PlayedTurn) -> None:
        criteria = turn.spec.live_criteria()
        written = [reply for reply in turn.replies if reply.by_model]
        if criteria and not written and not any(call.error for call in turn.llm_calls):
            steps = " → ".join(turn.steps) or "none"
            run.checks.append(
                Check(
                    turn.number,
                    None,
                    str(criteria[0]),
                    "fail",
                    f"the model wrote no reply at this turn (steps: {steps})",
                )
            )
        for criterion in criteria:
            for reply in written:
                self._check(run, turn, reply.step_id, criterion, reply.text)
        if isinstance(turn.spec.expect, Expect):
            together = "\n".join(reply.text for reply in turn.replies)
            self._check(run, turn, None, turn.spec.expect, together)

    def _check(
        self, run: LiveRun, turn: PlayedTurn, step_id: str | None, criterion: Expect, reply: str
    ) -> None:
        missed = criterion.failures(reply)
        plain = criterion.model_copy(update={"judge": None})
        if plain != Expect():
            outcome = "fail" if missed else "pass"
            reason = "; ".join(missed) + (f": {reply!r}" if missed else "")
            run.checks.append(Check(turn.number, step_id, str(plain), outcome, reason))
        if criterion.judge is not None:
            outcome, reason = self._judge(run, criterion.judge, turn.spec.say, reply)
            run.checks.append(
                Check(turn.number, step_id, f"judge: {criterion.judge}", outcome, reason)
            )

    def _judge(self, run: LiveRun, rubric: str, said: str, reply: str) -> tuple[str, str]:
        """Ask the judge model; ``(outcome, reason)``."""
        request = LLMRequest(
            model=self.judge_model,
            messages=[
                {"role": "system", "content": JUDGE_SYSTEM},
                {
                    "role": "user",
                    "content": json.dumps(
                        {"rubric": rubric, "contact_said": said, "bot_replied": reply},
                        ensure_ascii=False,
                    ),
                },
            ],
            temperature=0,
            output_schema=JUDGE_SCHEMA,
            schema_name=JUDGE_SCHEMA_NAME,
        )
        try:
            response = self.llm.complete(request)
        except LLMError as error:
            return "error", f"the judge could not answer ({_classify(str(error))}): {error}"
        usage = response.usage
        run.judge_usage.add(usage.model, usage.prompt_tokens, usage.completion_tokens)
        data = response.data or {}
        if not isinstance(data.get("passed"), bool):
            return "error", f"the judge gave no verdict: {response.text[:200]!r}"
        reason = str(data.get("reason", "")).strip()
        return ("pass" if data["passed"] else "fail"), reason


def step_rates(results: list[LiveResult]) -> dict[str, tuple[int, int]]:
    """Per step (``flow/step``): checks passed and checks made, over every run."""
    rates: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for result in results:
        for run in result.runs:
            for check in run.checks:
                if check.step_id is None:
                    continue
                key = f"{result.spec.flow}/{check.step_id}"
                rates[key][0] += check.outcome == "pass"
                rates[key][1] += 1
    return {key: (passed, total) for key, (passed, total) in sorted(rates.items())}


def usage_of(results: list[LiveResult]) -> tuple[Usage, Usage]:
    """The flow's and the judge's tokens over every run."""
    flow, judge = Usage(), Usage()
    for result in results:
        for run in result.runs:
            flow.merge(run.flow_usage)
            judge.merge(run.judge_usage)
    return flow, judge


def write_junit(results: list[LiveResult], path: Path) -> None:
    """Write the runs as JUnit XML: one test case per run, failures and errors apart."""
    suite = ElementTree.Element("testsuite", name="parley.live")
    properties = ElementTree.SubElement(suite, "properties")
    failures = errors = 0
    for result in results:
        ElementTree.SubElement(
            properties, "property", name=f"pass_rate:{result.name}", value=f"{result.pass_rate:.3f}"
        )
        for run in result.runs:
            case = ElementTree.SubElement(
                suite,
                "testcase",
                classname=result.name.split(": ", 1)[0],
                name=f"{result.spec.name} [run {run.number}]",
            )
            if run.errors:
                errors += 1
                element = ElementTree.SubElement(
                    case, "error", message=run.errors[0].reason[:300], type="ModelError"
                )
                element.text = "\n".join(describe(check) for check in run.errors)
            elif not run.passed:
                failures += 1
                failed = [check for check in run.checks if check.outcome == "fail"]
                element = ElementTree.SubElement(
                    case, "failure", message=failed[0].reason[:300], type="CriterionFailed"
                )
                element.text = "\n".join(describe(check) for check in failed)
    suite.set("tests", str(sum(len(result.runs) for result in results)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    path.parent.mkdir(parents=True, exist_ok=True)
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def describe(check: Check) -> str:
    """One line for a check: turn, step, criterion, outcome and reason."""
    step = f" [{check.step_id}]" if check.step_id else ""
    reason = f": {check.reason}" if check.reason else ""
    return f"turn {check.turn}{step} {check.criterion} → {check.outcome.upper()}{reason}"
