"""The agents' inbox through the test client: lists, polling, control buttons, the window."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from curation.users import create_user
from handover.control import control
from models import Conversation, Message, User, db
from tests.admin_support import PASSWORD, add_user, login, post
from tests.test_handover import FLOW

SENDER = "whatsapp:+15551230001"


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path) -> dict:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "helpdesk.yaml").write_text(FLOW, encoding="utf-8")
    return {**app_config, "FLOWS_DIR": str(folder)}


def ids(app) -> tuple[int, int, int]:
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
        sam = db.session.scalars(sa.select(User.id).where(User.email == "sam@example.org")).one()
        eve = db.session.scalars(sa.select(User.id).where(User.email == "eve@example.org")).one()
        return cid, sam, eve


def test_the_inbox_needs_a_login(app, client):
    response = client.get("/admin/inbox")
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]


def test_take_over_transfer_and_the_lists(app, client, twilio, fake_twilio):
    add_user(app, "sam@example.org", "agent")
    add_user(app, "eve@example.org", "agent")
    twilio.say("hi", sender=SENDER)
    twilio.say("agent", sender=SENDER)
    cid, sam, eve = ids(app)
    login(client, "sam@example.org")

    assert f"Conversation {cid}" in client.get("/admin/inbox").get_data(as_text=True)
    assert f"Conversation {cid}" not in client.get("/admin/inbox?view=mine").get_data(as_text=True)
    assert client.get("/admin/inbox?view=everything").status_code == 400

    post(client, f"/admin/inbox/{cid}/takeover", page=f"/admin/inbox/{cid}")
    assert f"Conversation {cid}" in client.get("/admin/inbox?view=mine").get_data(as_text=True)
    polled = client.get(f"/admin/inbox/{cid}/entries").get_json()
    assert polled["controlled_by"] == f"agent:{sam}"
    assert polled["holder"] == "sam@example.org"  # no name: the e-mail
    assert [line["text"] for line in polled["lines"] if line["side"] == "event"] == [
        "Bot handed over to the support queue",
        "sam@example.org took over",
    ]

    post(client, f"/admin/inbox/{cid}/transfer", {"to": f"agent:{eve}"}, page=f"/admin/inbox/{cid}")
    with app.app_context():
        state = control(db.session, cid)
        assert (state.controlled_by, state.pending) == (f"agent:{eve}", True)
    # Sam no longer has it: his reply is refused, nothing is sent.
    answer = post(client, f"/admin/inbox/{cid}/reply", {"body": "hello"}, page="/admin/inbox")
    assert answer.status_code == 302
    page = client.get(f"/admin/inbox/{cid}").get_data(as_text=True)
    assert "take the conversation over first" in page
    assert fake_twilio.requests == []


def test_outside_the_whatsapp_window_only_a_template_goes_out(app, client, twilio, fake_twilio):
    add_user(app, "sam@example.org", "agent")
    add_user(app, "eve@example.org", "agent")
    twilio.say("hi", sender=SENDER)
    cid = ids(app)[0]
    with app.app_context():
        old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)
        db.session.execute(sa.update(Message).values(created_at=old))
        db.session.commit()
    login(client, "sam@example.org")
    post(client, f"/admin/inbox/{cid}/takeover", page=f"/admin/inbox/{cid}")
    page = client.get(f"/admin/inbox/{cid}").get_data(as_text=True)
    assert 'id="window-closed"' in page and 'id="content_sid"' in page

    post(client, f"/admin/inbox/{cid}/reply", {"body": "Still there?"}, page="/admin/inbox")
    assert "WhatsApp only accepts a template" in client.get(f"/admin/inbox/{cid}").get_data(
        as_text=True
    )
    assert fake_twilio.requests == []

    template = "HX" + "b" * 32
    form = {"body": "Still there?", "content_sid": template}
    post(client, f"/admin/inbox/{cid}/reply", form, page="/admin/inbox")
    assert [request["form"].get("ContentSid") for request in fake_twilio.requests] == [template]


def test_agents_show_by_name_and_a_failed_send_says_so(app, client, twilio, fake_twilio):
    with app.app_context():
        create_user(db.session, "sam@example.org", PASSWORD, "agent", name="Sam Lee")
        db.session.commit()
    twilio.say("hi", sender=SENDER)
    twilio.say("agent", sender=SENDER)
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
    login(client, "sam@example.org")
    post(client, f"/admin/inbox/{cid}/takeover", page=f"/admin/inbox/{cid}")

    post(client, f"/admin/inbox/{cid}/reply", {"body": "Hi, Sam here."}, page="/admin/inbox")
    page = client.get(f"/admin/inbox/{cid}").get_data(as_text=True)
    assert '<div class="flash ok" role="status">Sent.</div>' in page
    assert '<span class="author">Sam Lee</span>' in page
    assert "Sam Lee took over" in page

    # Twilio refuses a body over 1,600 characters (error 21617): the page says so.
    too_long = "x" * 1700
    post(client, f"/admin/inbox/{cid}/reply", {"body": too_long}, page="/admin/inbox")
    page = client.get(f"/admin/inbox/{cid}").get_data(as_text=True)
    assert "Sent." not in page
    assert "Not sent: Twilio error 21617: the message is longer than 1,600 characters." in page
    polled = client.get(f"/admin/inbox/{cid}/entries").get_json()
    last = polled["lines"][-1]
    assert (last["author"], last["status_label"], last["status_class"]) == (
        "Sam Lee",
        "failed",
        "failed",
    )
    assert last["error"].startswith("Twilio error 21617")
    assert fake_twilio.bodies == ["Hi, Sam here.", too_long]  # the fake refused the second
