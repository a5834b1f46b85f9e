"""Users page: least-privilege default, edit, disable, new password, last login, guards."""

from __future__ import annotations

import sqlalchemy as sa

from models import User, db
from tests.admin_support import PASSWORD, add_user, login, post


def user(app, email: str) -> User:
    with app.app_context():
        row = db.session.scalars(sa.select(User).where(User.email == email)).one()
        db.session.expunge(row)
        return row


def test_users_are_added_as_agents_edited_disabled_and_given_a_new_password(app, client):
    add_user(app, "root@example.com", "admin")
    login(client, "root@example.com")
    page = client.get("/admin/users").get_data(as_text=True)
    assert "<option selected>agent</option>" in page  # the least powerful role by default
    assert "never" not in page.split("root@example.com")[1][:400]  # root has logged in

    form = {"email": "sam@example.com", "name": "Sam Lee", "password": PASSWORD, "role": "agent"}
    assert post(client, "/admin/users", form, page="/admin/users").status_code == 302
    sam = user(app, "sam@example.com")
    assert (sam.name, sam.role, sam.active, sam.last_login_at) == ("Sam Lee", "agent", True, None)

    edit = {"name": "Sam L.", "role": "curator", "active": "yes", "action": "save"}
    assert post(client, f"/admin/users/{sam.id}", edit, page="/admin/users").status_code == 302
    assert (user(app, "sam@example.com").name, user(app, "sam@example.com").role) == (
        "Sam L.",
        "curator",
    )

    other = app.test_client()
    assert login(other, "sam@example.com").status_code == 302
    assert other.get("/admin/conversations").status_code == 200
    assert user(app, "sam@example.com").last_login_at is not None
    post(client, f"/admin/users/{sam.id}", {**edit, "active": ""}, page="/admin/users")
    assert user(app, "sam@example.com").active is False
    assert other.get("/admin/conversations").status_code == 302  # the session ended

    new_password = "another long password"
    with app.app_context():
        db.session.execute(sa.update(User).values(failed_logins=4))
        db.session.commit()
    form = {"password": new_password, "action": "password"}
    assert post(client, f"/admin/users/{sam.id}", form, page="/admin/users").status_code == 302
    post(client, f"/admin/users/{sam.id}", {**edit, "active": "yes"}, page="/admin/users")
    assert user(app, "sam@example.com").failed_logins == 0
    assert login(app.test_client(), "sam@example.com", new_password).status_code == 302
    assert login(app.test_client(), "sam@example.com").status_code == 401


def test_an_admin_cannot_lock_themselves_or_everyone_out(app, client):
    add_user(app, "root@example.com", "admin")
    login(client, "root@example.com")
    root = user(app, "root@example.com")
    for change in ({"role": "admin", "active": ""}, {"role": "curator", "active": "yes"}):
        response = post(
            client, f"/admin/users/{root.id}", {**change, "action": "save"}, page="/admin/users"
        )
        assert response.status_code == 400
        assert "cannot disable your own account" in response.get_data(as_text=True)
    assert (user(app, "root@example.com").role, user(app, "root@example.com").active) == (
        "admin",
        True,
    )
    assert client.get("/admin/users/999").status_code == 404
    short = {"password": "short", "action": "password"}
    assert post(client, f"/admin/users/{root.id}", short, page="/admin/users").status_code == 400
