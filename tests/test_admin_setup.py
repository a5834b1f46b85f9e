"""The first admin account, created from the browser on the machine Parley runs on."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa

from models import db
from models.curation import User
from tests.admin_support import add_user

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def setup_form(client, **environ):
    page = client.get("/admin/setup", environ_base=environ)
    return page, TOKEN.search(page.get_data(as_text=True))


def test_first_run_on_this_machine_creates_an_admin_and_logs_in(app, client):
    assert (
        client.get("/admin/login?next=/simulator/").headers["Location"].startswith("/admin/setup")
    )
    page, token = setup_form(client)
    assert page.status_code == 200 and token

    created = client.post(
        "/admin/setup?next=/simulator/",
        data={"email": "me@example.org", "password": "a long password", "csrf_token": token[1]},
    )

    assert created.status_code == 302
    assert created.headers["Location"] == "/simulator/"
    assert client.get("/admin/conversations").status_code == 200
    with app.app_context():
        assert db.session.scalars(sa.select(User.role)).all() == ["admin"]
    assert client.get("/admin/setup").status_code == 404  # only while there is no user


def test_a_short_password_is_refused_with_a_reason(app, client):
    _, token = setup_form(client)

    refused = client.post(
        "/admin/setup",
        data={"email": "me@example.org", "password": "short", "csrf_token": token[1]},
    )

    assert refused.status_code == 400
    assert "at least 10 characters" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_setup_is_not_offered_from_another_machine_or_through_a_proxy(app, client):
    assert (
        client.get("/admin/setup", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 404
    )
    assert client.get("/admin/setup", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 404
    login = client.get("/admin/login", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert login.status_code == 200


def test_setup_is_gone_once_any_user_exists(app, client):
    add_user(app, "curator@example.org", "curator")

    assert client.get("/admin/setup").status_code == 404
    assert client.get("/admin/login").status_code == 200


def test_setup_refuses_every_proxy_header(app, client):
    for header in ("X-Real-IP", "CF-Connecting-IP", "True-Client-IP", "Forwarded", "Via"):
        response = client.get("/admin/setup", headers={header: "203.0.113.9"})
        assert response.status_code == 404, header
    assert client.get("/admin/setup").status_code == 200


def test_six_simultaneous_setups_make_exactly_one_admin(app, live_server):
    """Six browsers on this machine submit the setup form at the same moment (real HTTP)."""
    browsers = [httpx.Client(base_url=live_server, timeout=30) for _ in range(6)]
    tokens = []
    for browser in browsers:
        page = browser.get("/admin/setup")
        assert page.status_code == 200
        tokens.append(TOKEN.search(page.text)[1])
    start = threading.Barrier(len(browsers))

    def submit(index: int) -> int:
        start.wait()
        return (
            browsers[index]
            .post(
                "/admin/setup",
                data={
                    "email": f"admin{index}@example.org",
                    "password": "a long password",
                    "csrf_token": tokens[index],
                },
            )
            .status_code
        )

    try:
        with ThreadPoolExecutor(max_workers=len(browsers)) as pool:
            statuses = list(pool.map(submit, range(len(browsers))))
    finally:
        for browser in browsers:
            browser.close()

    assert sorted(statuses) == [302] + [404] * 5, statuses
    with app.app_context():
        assert len(db.session.scalars(sa.select(User.email)).all()) == 1
