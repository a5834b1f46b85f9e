"""The dashboard's figures, each one SQL aggregate (GROUP BY in the database).

No query loads message rows into Python: each returns at most one row per day,
flow, version, step, model or error code. Days are UTC dates; a dashboard covers
a `Range` of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from integrations.twilio_errors import MEANINGS
from models.entities import Conversation, Execution, Message, as_utc, utcnow

#: Estimated USD per million tokens (input, output), by model name prefix
#: (OpenAI's pricing page, standard tier, November 2026); unknown models
#: use `DEFAULT_PRICE`.
PRICES: Mapping[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1": (2.00, 8.00),
}
DEFAULT_PRICE = (0.15, 0.60)
FAILED_STATUSES = ("failed", "undelivered")


def price(model: str | None) -> tuple[float, float]:
    """USD per million (prompt, completion) tokens for `model`."""
    for prefix in sorted(PRICES, key=len, reverse=True):
        if model and model.startswith(prefix):
            return PRICES[prefix]
    return DEFAULT_PRICE


def cost(model: str | None, prompt_tokens: int, completion_tokens: int) -> float:
    """Estimated USD for that many tokens of `model`."""
    prompt_price, completion_price = price(model)
    return (prompt_tokens * prompt_price + completion_tokens * completion_price) / 1_000_000


@dataclass(frozen=True)
class Range:
    """The days a dashboard covers, UTC, both ends included.

    Attributes:
        since: The first day.
        until: The last day.
    """

    since: dt.date
    until: dt.date

    @classmethod
    def last(cls, days: int, today: dt.date | None = None) -> Range:
        """The last `days` days, today included."""
        today = today or utcnow().date()
        return cls(today - dt.timedelta(days=days - 1), today)

    @property
    def start(self) -> dt.datetime:
        """The first moment of the range."""
        return dt.datetime.combine(self.since, dt.time(), dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """The first moment after the range."""
        return dt.datetime.combine(self.until + dt.timedelta(days=1), dt.time(), dt.UTC)

    @property
    def days(self) -> int:
        """How many days it covers."""
        return (self.until - self.since).days + 1

    def within(self, column: sa.ColumnElement) -> sa.ColumnElement[bool]:
        """A condition: `column` is a time inside the range."""
        return sa.and_(column >= self.start, column < self.end)


@dataclass
class Dashboard:
    """Everything the dashboard draws; plain data, JSON-ready.

    Attributes:
        since: The range's first day.
        until: The range's last day.
        totals: Headline figures over the range: ``contacts``, ``messages_in``,
            ``messages_out``, ``llm_calls``, ``tokens``, ``cost_usd``, ``failures``,
            ``moderation`` (moderation decisions: flagged, or a check failed) and
            ``moderation_blocked`` (those that kept the model or its reply from the
            contact: a safe message or the fallback).
        messages_per_day: ``{day, direction, channel, messages}`` rows.
        active_contacts: Contacts who wrote in the range.
        active_contacts_per_day: ``{day, contacts}`` rows.
        funnels: Per flow, executions started in the range: ``{flow, steps:
            [{step, executions, per_version: {version: n}, avg_seconds}],
            versions: [{version, started}]}``; steps by how many reached them.
        stops: Per flow, where the range's executions are now: ``{step, status, executions}``.
        tokens_per_day: ``{day, tokens, cost_usd, models}`` rows.
        tokens_per_flow: ``{flow, tokens, cost_usd, models}`` rows.
        tokens_per_step: ``{flow, step, calls, prompt_tokens, completion_tokens,
            tokens, cost_usd, models, avg_latency_ms}`` rows, costliest first.
        delivery_failures_per_day: ``{day, failures}`` rows.
        failures_by_code: ``{code, meaning, failures, last_at}`` rows, most first
            (``code`` None: failed without a Twilio code, e.g. Twilio not configured).
        median_latency_ms: The median LLM reply latency, or None without LLM replies.
    """

    since: dt.date
    until: dt.date
    totals: dict[str, Any]
    messages_per_day: list[dict[str, Any]]
    active_contacts: int
    active_contacts_per_day: list[dict[str, Any]]
    funnels: list[dict[str, Any]]
    stops: dict[str, list[dict[str, Any]]]
    tokens_per_day: list[dict[str, Any]]
    tokens_per_flow: list[dict[str, Any]]
    tokens_per_step: list[dict[str, Any]]
    delivery_failures_per_day: list[dict[str, Any]]
    failures_by_code: list[dict[str, Any]]
    median_latency_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        """The dashboard as JSON-ready data."""
        data = dict(self.__dict__)
        data["since"] = self.since.isoformat()
        data["until"] = self.until.isoformat()
        return data

    def funnel(self, flow_id: str) -> dict[str, Any] | None:
        """The funnel of one flow, or None when none of its executions is in range."""
        return next((funnel for funnel in self.funnels if funnel["flow"] == flow_id), None)


def _day(column: sa.ColumnElement) -> sa.ColumnElement:
    """The UTC date of a timestamp, as text ``YYYY-MM-DD`` on every backend."""
    return sa.func.substr(sa.cast(column, sa.String), 1, 10)


def _day_expression(session: Session, column: sa.ColumnElement) -> sa.ColumnElement:
    if _postgresql(session):
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return _day(column)


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _seconds_between(session: Session, later: Any, earlier: Any) -> sa.ColumnElement:
    """Seconds from `earlier` to `later` (two timestamps), on either backend."""
    if _postgresql(session):
        return sa.func.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def build(session: Session, days: int | Range = 30, flow: str | None = None) -> Dashboard:
    """The dashboard over a range of days.

    Args:
        session: The SQLAlchemy session.
        days: The `Range`, or a number of days up to today.
        flow: Only this flow's funnel (every flow's when None).
    """
    period = days if isinstance(days, Range) else Range.last(days)
    day = _day_expression(session, Message.created_at)
    recent = period.within(Message.created_at)

    per_day = session.execute(
        sa.select(day, Message.direction, Conversation.channel, sa.func.count())
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(recent)
        .group_by(day, Message.direction, Conversation.channel)
        .order_by(day)
    ).all()
    active_per_day = session.execute(
        sa.select(day, sa.func.count(sa.distinct(Message.contact_id)))
        .where(recent, Message.direction == "inbound")
        .group_by(day)
        .order_by(day)
    ).all()
    active = session.scalar(
        sa.select(sa.func.count(sa.distinct(Message.contact_id))).where(
            recent, Message.direction == "inbound"
        )
    )

    prompt = sa.func.coalesce(sa.func.sum(Message.prompt_tokens), 0)
    completion = sa.func.coalesce(sa.func.sum(Message.completion_tokens), 0)
    llm = Message.model.is_not(None)
    tokens_day = session.execute(
        sa.select(day, Message.model, prompt, completion)
        .where(recent, llm)
        .group_by(day, Message.model)
        .order_by(day)
    ).all()
    tokens_flow = session.execute(
        sa.select(Message.flow_id, Message.model, prompt, completion)
        .where(recent, llm)
        .group_by(Message.flow_id, Message.model)
    ).all()
    failed = sa.and_(recent, Message.direction == "outbound", Message.status.in_(FAILED_STATUSES))
    failures = session.execute(
        sa.select(day, sa.func.count()).where(failed).group_by(day).order_by(day)
    ).all()

    decisions = [
        decision
        for recorded in session.scalars(
            sa.select(Message.moderation).where(recent, Message.moderation.is_not(None))
        )
        for decision in recorded or []
    ]
    messages = [
        {"day": d, "direction": direction, "channel": channel, "messages": n}
        for d, direction, channel, n in per_day
    ]
    per_step = tokens_per_step(session, period)
    by_code = failures_by_code(session, period)
    tokens = _with_cost(({"day": d}, m, p, c) for d, m, p, c in tokens_day)
    return Dashboard(
        since=period.since,
        until=period.until,
        totals={
            "contacts": active or 0,
            "messages_in": sum(r["messages"] for r in messages if r["direction"] == "inbound"),
            "messages_out": sum(r["messages"] for r in messages if r["direction"] == "outbound"),
            "llm_calls": sum(r["calls"] for r in per_step),
            "tokens": sum(r["tokens"] for r in tokens),
            "cost_usd": round(sum(r["cost_usd"] for r in tokens), 6),
            "failures": sum(r["failures"] for r in by_code),
            "moderation": len(decisions),
            "moderation_blocked": sum(d.get("action") != "allow" for d in decisions),
        },
        messages_per_day=messages,
        active_contacts=active or 0,
        active_contacts_per_day=[{"day": d, "contacts": n} for d, n in active_per_day],
        funnels=funnels(session, period, flow),
        stops=stops(session, period, flow),
        tokens_per_day=tokens,
        tokens_per_flow=_with_cost(({"flow": f or "?"}, m, p, c) for f, m, p, c in tokens_flow),
        tokens_per_step=per_step,
        delivery_failures_per_day=[{"day": d, "failures": n} for d, n in failures],
        failures_by_code=by_code,
        median_latency_ms=median_latency(session, period),
    )


def funnels(session: Session, period: Range, flow: str | None = None) -> list[dict[str, Any]]:
    """Per flow: how many executions started in `period` reached each step, per version.

    A step counts as reached when it sent a message in the execution. Each
    step also has the average time its executions took to reach it from the
    step they reached before (the contact's time to answer included).
    """
    in_range = [period.within(Execution.started_at)]
    if flow:
        in_range.append(Execution.flow_id == flow)
    executions = sa.func.count(sa.distinct(Message.execution_id))
    reached = session.execute(
        sa.select(
            Execution.flow_id,
            Execution.flow_version,
            Message.step_id,
            executions,
            sa.func.min(Message.id),
        )
        .join(Execution, Execution.id == Message.execution_id)
        .where(Message.step_id.is_not(None), *in_range)
        .group_by(Execution.flow_id, Execution.flow_version, Message.step_id)
    ).all()
    started = session.execute(
        sa.select(
            Execution.flow_id,
            Execution.flow_version,
            sa.func.count(),
            sa.func.min(Execution.started_at),
        )
        .where(*in_range)
        .group_by(Execution.flow_id, Execution.flow_version)
        .order_by(Execution.flow_id, sa.func.min(Execution.started_at))
    ).all()
    timing = _step_timing(session, in_range)

    result: dict[str, dict[str, Any]] = {}
    for flow_id, version, count, _ in started:
        entry = result.setdefault(flow_id, {"flow": flow_id, "versions": [], "steps": {}})
        entry["versions"].append({"version": version, "started": count})
    for flow_id, version, step_id, count, first_id in reached:
        entry = result.setdefault(flow_id, {"flow": flow_id, "versions": [], "steps": {}})
        step = entry["steps"].setdefault(
            step_id,
            {"step": step_id, "executions": 0, "per_version": {}, "first": first_id},
        )
        step["executions"] += count
        step["per_version"][version] = count
        step["first"] = min(step["first"], first_id)
        step["avg_seconds"] = timing.get((flow_id, step_id))
    for entry in result.values():
        steps = sorted(entry["steps"].values(), key=lambda s: (-s["executions"], s["first"]))
        for step in steps:
            del step["first"]
        entry["steps"] = steps
    return [result[flow_id] for flow_id in sorted(result)]


def _step_timing(session: Session, in_range: list) -> dict[tuple[str, str], float]:
    """Average seconds from the step reached before, per (flow, step), by window functions."""
    first = (
        sa.select(
            Execution.flow_id.label("flow_id"),
            Message.execution_id.label("execution_id"),
            Message.step_id.label("step_id"),
            sa.func.min(Message.created_at).label("at"),
        )
        .join(Execution, Execution.id == Message.execution_id)
        .where(Message.step_id.is_not(None), *in_range)
        .group_by(Execution.flow_id, Message.execution_id, Message.step_id)
        .subquery()
    )
    previous = sa.func.lag(first.c.at).over(partition_by=first.c.execution_id, order_by=first.c.at)
    ordered = sa.select(
        first.c.flow_id, first.c.step_id, first.c.at, previous.label("previous")
    ).subquery()
    seconds = _seconds_between(session, ordered.c.at, ordered.c.previous)
    rows = session.execute(
        sa.select(ordered.c.flow_id, ordered.c.step_id, sa.func.avg(seconds))
        .where(ordered.c.previous.is_not(None))
        .group_by(ordered.c.flow_id, ordered.c.step_id)
    ).all()
    return {(flow_id, step_id): round(float(avg), 1) for flow_id, step_id, avg in rows}


def stops(session: Session, period: Range, flow: str | None = None) -> dict[str, list[dict]]:
    """Per flow, where the executions started in `period` are now (step and status)."""
    where = [period.within(Execution.started_at)]
    if flow:
        where.append(Execution.flow_id == flow)
    stopped = session.execute(
        sa.select(Execution.flow_id, Execution.current_step, Execution.status, sa.func.count())
        .where(*where)
        .group_by(Execution.flow_id, Execution.current_step, Execution.status)
        .order_by(Execution.flow_id, sa.func.count().desc())
    ).all()
    found: dict[str, list[dict[str, Any]]] = {}
    for flow_id, step, status, count in stopped:
        found.setdefault(flow_id, []).append({"step": step, "status": status, "executions": count})
    return found


def tokens_per_step(session: Session, period: Range) -> list[dict[str, Any]]:
    """LLM calls, tokens and estimated cost per flow and step in `period`, costliest first."""
    rows = session.execute(
        sa.select(
            Message.flow_id,
            Message.step_id,
            Message.model,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(Message.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(Message.completion_tokens), 0),
            sa.func.avg(Message.latency_ms),
        )
        .where(period.within(Message.created_at), Message.model.is_not(None))
        .group_by(Message.flow_id, Message.step_id, Message.model)
    ).all()
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for flow_id, step_id, model, calls, prompt, completion, latency in rows:
        key = (flow_id or "?", step_id or "?")
        entry = merged.setdefault(
            key,
            {
                "flow": key[0],
                "step": key[1],
                "calls": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "tokens": 0,
                "cost_usd": 0.0,
                "models": [],
                "latency_total": 0.0,
                "latency_calls": 0,
            },
        )
        entry["calls"] += calls
        entry["prompt_tokens"] += int(prompt)
        entry["completion_tokens"] += int(completion)
        entry["tokens"] += int(prompt) + int(completion)
        entry["cost_usd"] = round(entry["cost_usd"] + cost(model, int(prompt), int(completion)), 6)
        entry["models"].append(model)
        if latency is not None:
            entry["latency_total"] += float(latency) * calls
            entry["latency_calls"] += calls
    result = []
    for entry in merged.values():
        total, counted = entry.pop("latency_total"), entry.pop("latency_calls")
        entry["avg_latency_ms"] = round(total / counted) if counted else None
        result.append(entry)
    return sorted(result, key=lambda e: (-e["cost_usd"], -e["tokens"], e["flow"], e["step"]))


def failures_by_code(session: Session, period: Range) -> list[dict[str, Any]]:
    """Failed or undelivered outbound messages in `period`, per Twilio error code."""
    rows = session.execute(
        sa.select(Message.error_code, sa.func.count(), sa.func.max(Message.created_at))
        .where(
            period.within(Message.created_at),
            Message.direction == "outbound",
            Message.status.in_(FAILED_STATUSES),
        )
        .group_by(Message.error_code)
        .order_by(sa.func.count().desc())
    ).all()
    return [
        {
            "code": code,
            "meaning": MEANINGS.get(code, "") if code is not None else "failed without a code",
            "failures": count,
            "last_at": as_utc(last).isoformat() if last else None,
        }
        for code, count, last in rows
    ]


def _with_cost(rows: Any) -> list[dict[str, Any]]:
    """Sum rows of (key, model, prompt, completion) per key, with estimated cost."""
    merged: dict[tuple, dict[str, Any]] = {}
    for key, model, prompt, completion in rows:
        entry = merged.setdefault(
            tuple(key.items()), {**key, "tokens": 0, "cost_usd": 0.0, "models": []}
        )
        entry["tokens"] += int(prompt) + int(completion)
        entry["cost_usd"] = round(entry["cost_usd"] + cost(model, int(prompt), int(completion)), 6)
        entry["models"].append(model)
    return list(merged.values())


def median_latency(session: Session, since: dt.datetime | Range) -> int | None:
    """The median LLM reply latency in ms over a range (the middle row, found by SQL)."""
    window = (
        since.within(Message.created_at)
        if isinstance(since, Range)
        else (Message.created_at >= since)
    )
    condition = (Message.latency_ms.is_not(None), window)
    count = session.scalar(sa.select(sa.func.count()).where(*condition)) or 0
    if not count:
        return None
    return session.scalar(
        sa.select(Message.latency_ms)
        .where(*condition)
        .order_by(Message.latency_ms)
        .limit(1)
        .offset((count - 1) // 2)
    )
