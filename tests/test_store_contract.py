"""The storage contract the turn service relies on (conversation/ports.py), on each backend.

Every test runs on SQLite and on PostgreSQL (the `app` fixture), against the SQL
implementations: `models.store.SqlStore` (executions, transcript, outbox) and
`models.turn_store.SqlTurnStore` (leases, the turn's first reads).
"""

from __future__ import annotations

import datetime as dt

import pytest

from conversation.ports import Executions, Transcript, TurnLeases
from engine.ports import ExecutionState, LLMUsage
from models import Message, db
from models.store import OutboundPart, SqlStore
from models.turn_store import SqlTurnStore

WHATSAPP = "whatsapp:+14155238886"


@pytest.fixture
def stores(app):
    """``(SqlStore, SqlTurnStore)`` on the app's session, in an app context."""
    with app.app_context():
        yield SqlStore(db.session), SqlTurnStore(db.session)
        db.session.rollback()


def inbound(store: SqlStore, sid: str, body: str = "hi", phone: str = "+15551230001", **extra):
    stored = store.store_inbound(
        phone=phone,
        name=extra.pop("name", None),
        channel="whatsapp",
        address=extra.pop("address", WHATSAPP),
        body=body,
        message_sid=sid,
        **extra,
    )
    db.session.commit()
    return stored


def test_the_sql_stores_implement_the_protocols(stores):
    store, turn_store = stores
    assert isinstance(store, Executions)
    assert isinstance(store, Transcript)
    assert isinstance(turn_store, TurnLeases)


def test_an_inbound_message_is_stored_once_per_message_sid(stores):
    store, _ = stores
    first = inbound(store, "SM1", name="Ana")
    assert first is not None
    assert inbound(store, "SM1") is None  # Twilio delivered it twice
    second = inbound(store, "SM2")
    assert (second.contact_id, second.conversation_id) == (first.contact_id, first.conversation_id)
    other_number = inbound(store, "SM3", address="whatsapp:+14155230000")
    assert other_number.contact_id == first.contact_id
    assert other_number.conversation_id != first.conversation_id


def test_history_is_in_turn_order_without_the_current_or_pending_messages(stores):
    store, _ = stores
    first = inbound(store, "SM1", body="one")
    store.store_outbound(first, [OutboundPart(body="reply one")], execution_id=None, flow_id=None)
    store.finish_inbound(first.message_id, "done", None, None)
    current = inbound(store, "SM2", body="two")
    later = inbound(store, "SM3", body="three")  # not run yet: not history
    db.session.commit()

    history = store.history(first.contact_id, 10, current.message_id)
    assert [(item.role, item.content) for item in history] == [
        ("user", "one"),
        ("assistant", "reply one"),
    ]
    assert [item.content for item in store.history(first.contact_id, 1, current.message_id)] == [
        "reply one"
    ]
    # A timer's turn has no current message; messages not run yet are not history.
    assert [item.content for item in store.history(first.contact_id, 10)] == ["one", "reply one"]
    store.finish_inbound(current.message_id, "done", None, None)
    store.finish_inbound(later.message_id, "merged", None, None)  # its text went into a turn
    db.session.commit()
    everything = store.history(first.contact_id, 10)
    assert [item.content for item in everything] == ["one", "reply one", "two"]
    assert store.history(first.contact_id, 0) == []


def test_an_execution_round_trips_and_ends(stores):
    store, _ = stores
    contact_id = inbound(store, "SM1").contact_id
    state = ExecutionState(
        flow_id="goal_setting",
        flow_version="v1",
        current_step="area",
        status="waiting",
        variables={"area": "sleep", "nested": {"n": 1}},
        step_state={"retries": 1},
        wait_deadline=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )
    execution_id = store.save_execution(contact_id, state)
    db.session.commit()
    assert state.id == execution_id

    loaded = store.active_execution(contact_id)
    assert (loaded.id, loaded.current_step, loaded.status) == (execution_id, "area", "waiting")
    assert loaded.variables == {"area": "sleep", "nested": {"n": 1}}
    assert loaded.step_state == {"retries": 1}

    loaded.current_step, loaded.status = "coach", "active"
    assert store.save_execution(contact_id, loaded) == execution_id  # an update, not a new row
    db.session.commit()
    assert store.active_execution(contact_id).current_step == "coach"

    store.end_execution(execution_id)
    db.session.commit()
    assert store.active_execution(contact_id) is None


def test_outbound_parts_keep_usage_template_media_and_delay(stores):
    store, _ = stores
    stored = inbound(store, "SM1")
    usage = LLMUsage(model="gpt-4o-mini", prompt_tokens=12, completion_tokens=3, latency_ms=80)
    template = {"content_sid": "HX" + "0" * 32, "content_variables": {"1": "Ana"}}
    ids = store.store_outbound(
        stored,
        [
            OutboundPart(body="first", step_id="coach", usage=usage, template=template),
            OutboundPart(body="", media_url="https://example.com/a.png", delay_seconds=2.5),
        ],
        execution_id=None,
        flow_id="goal_setting",
        status="pending",
    )
    store.finish_inbound(stored.message_id, "done", None, "goal_setting")
    db.session.commit()

    first, second = (db.session.get(Message, message_id) for message_id in ids)
    assert ids == sorted(ids)
    assert (first.body, first.step_id, first.model, first.prompt_tokens) == (
        "first",
        "coach",
        "gpt-4o-mini",
        12,
    )
    assert first.media == {"template": template}
    assert second.media == {"urls": ["https://example.com/a.png"], "delay_seconds": 2.5}
    assert {first.status, second.status} == {"pending"}
    assert db.session.get(Message, stored.message_id).turn_status == "done"


def test_a_lease_is_claimed_fenced_and_released_with_a_growing_token(stores):
    store, leases = stores
    contact_id = inbound(store, "SM1").contact_id
    now = dt.datetime.now(dt.UTC)

    first = leases.claim(contact_id, now, 30)
    db.session.commit()
    assert first is not None
    assert leases.lease_expiry(contact_id) is not None
    assert leases.claim(contact_id, now + dt.timedelta(seconds=29), 30) is None
    taken = leases.claim(contact_id, now + dt.timedelta(seconds=31), 30)
    db.session.commit()
    assert taken > first  # a holder that outlived its lease is fenced off
    assert leases.fence(contact_id, first) is False
    assert leases.fence(contact_id, taken) is True
    db.session.commit()
    assert leases.lease_expiry(contact_id) is None
    again = leases.claim(contact_id, now, 30)
    leases.release(contact_id, again)
    db.session.commit()
    assert leases.claim(contact_id, now, 30) > again


def test_the_view_reads_the_conversation_and_who_controls_it(stores):
    store, leases = stores
    first = inbound(store, "SM1", name="Ana")
    view = leases.view(first.contact_id, first.conversation_id)
    assert (view.phone, view.name, view.channel, view.address, view.controlled_by) == (
        "+15551230001",
        "Ana",
        "whatsapp",
        WHATSAPP,
        "bot",
    )
    assert leases.view(first.contact_id, None).conversation_id == first.conversation_id
    assert leases.view(first.contact_id + 1000, None) is None
    assert leases.controller(first.conversation_id) == "bot"
