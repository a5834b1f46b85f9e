"""The dashboard's figures, each one SQL aggregate (GROUP BY in the database).

No query loads message rows into Python: each returns at most one row per day,
flow, step or model. Days are UTC dates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models.entities import Conversation, Execution, Message, utcnow

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


@dataclass
class Dashboard:
    """Everything the dashboard draws; plain data, JSON-ready."""

    since: dt.date
    messages_per_day: list[dict[str, Any]]
    active_contacts: int
    active_contacts_per_day: list[dict[str, Any]]
    funnels: dict[str, list[dict[str, Any]]]
    stops: dict[str, list[dict[str, Any]]]
    tokens_per_day: list[dict[str, Any]]
    tokens_per_flow: list[dict[str, Any]]
    delivery_failures_per_day: list[dict[str, Any]]
    median_latency_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        """The dashboard as JSON-ready data."""
        data = dict(self.__dict__)
        data["since"] = self.since.isoformat()
        return data


def _day(column: sa.ColumnElement) -> sa.ColumnElement:
    """The UTC date of a timestamp, as text ``YYYY-MM-DD`` on every backend."""
    return sa.func.substr(sa.cast(column, sa.String), 1, 10)


def _day_expression(session: Session, column: sa.ColumnElement) -> sa.ColumnElement:
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return _day(column)


def build(session: Session, days: int = 30) -> Dashboard:
    """The dashboard over the last `days` days (funnels and stops: all time)."""
    start = utcnow() - dt.timedelta(days=days)
    day = _day_expression(session, Message.created_at)
    recent = Message.created_at >= start

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

    executions = sa.func.count(sa.distinct(Message.execution_id))
    reached = session.execute(
        sa.select(Message.flow_id, Message.step_id, executions)
        .where(Message.step_id.is_not(None), Message.execution_id.is_not(None))
        .group_by(Message.flow_id, Message.step_id)
        .order_by(Message.flow_id, executions.desc(), sa.func.min(Message.id))
    ).all()
    funnels: dict[str, list[dict[str, Any]]] = {}
    for flow_id, step_id, executions in reached:
        funnels.setdefault(flow_id or "?", []).append({"step": step_id, "executions": executions})
    stopped = session.execute(
        sa.select(Execution.flow_id, Execution.current_step, Execution.status, sa.func.count())
        .group_by(Execution.flow_id, Execution.current_step, Execution.status)
        .order_by(Execution.flow_id, sa.func.count().desc())
    ).all()
    stops: dict[str, list[dict[str, Any]]] = {}
    for flow_id, step, status, count in stopped:
        stops.setdefault(flow_id, []).append({"step": step, "status": status, "executions": count})

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
    failures = session.execute(
        sa.select(day, sa.func.count())
        .where(recent, Message.direction == "outbound", Message.status.in_(FAILED_STATUSES))
        .group_by(day)
        .order_by(day)
    ).all()

    return Dashboard(
        since=start.date(),
        messages_per_day=[
            {"day": d, "direction": direction, "channel": channel, "messages": n}
            for d, direction, channel, n in per_day
        ],
        active_contacts=active or 0,
        active_contacts_per_day=[{"day": d, "contacts": n} for d, n in active_per_day],
        funnels=funnels,
        stops=stops,
        tokens_per_day=_with_cost(({"day": d}, m, p, c) for d, m, p, c in tokens_day),
        tokens_per_flow=_with_cost(({"flow": f or "?"}, m, p, c) for f, m, p, c in tokens_flow),
        delivery_failures_per_day=[{"day": d, "failures": n} for d, n in failures],
        median_latency_ms=median_latency(session, start),
    )


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


def median_latency(session: Session, since: dt.datetime) -> int | None:
    """The median LLM reply latency in ms since `since` (the middle row, found by SQL)."""
    condition = (Message.latency_ms.is_not(None), Message.created_at >= since)
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
