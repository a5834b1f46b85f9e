"""Security headers, session cookies, request size, and the settings production requires."""

from __future__ import annotations

import re

import pytest

from app import create_app
from config import ConfigError
from models import db
from tests.admin_support import PASSWORD, add_user

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def log_in(client, email: str = "admin@example.com", **kwargs):
    page = client.get("/admin/login", **kwargs)
    token = TOKEN.search(page.get_data(as_text=True))[1]
    return client.post(
        "/admin/login",
        data={"email": email, "password": PASSWORD, "csrf_token": token},
        **kwargs,
    )


@pytest.mark.parametrize("path", ["/", "/admin/login", "/api/openapi.json", "/healthz"])
def test_every_page_carries_the_security_headers(client, path):
    response = client.get(path)

    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_the_session_cookie_is_lax_and_http_only_and_secure_over_https(app):
    add_user(app, "admin@example.com", "admin")
    plain = app.test_client()
    cookie = log_in(plain).headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie and "HttpOnly" in cookie
    assert "Secure" not in cookie  # development over http: a laptop's browser must keep it

    over_https = app.test_client()
    # The login form stores its CSRF token in the session.
    cookie = over_https.get("/admin/login", base_url="https://localhost").headers["Set-Cookie"]
    assert "Secure" in cookie and "SameSite=Lax" in cookie


def production(app_config: dict, **settings) -> dict:
    return {**app_config, "PARLEY_ENV": "production", **settings}


def close(app) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_production_behind_an_https_proxy_always_sets_secure(app_config, app):
    add_user(app, "admin@example.com", "admin")
    prod = create_app(production(app_config))
    # TLS ends at the proxy: the app itself is reached over http.
    cookie = log_in(prod.test_client()).headers["Set-Cookie"]
    close(prod)
    assert "Secure" in cookie and "SameSite=Lax" in cookie and "HttpOnly" in cookie


@pytest.mark.parametrize("missing", ["SECRET_KEY", "PUBLIC_BASE_URL"])
def test_production_refuses_to_start_without_a_required_setting(app_config, missing):
    with pytest.raises(ConfigError) as raised:
        create_app(production(app_config, **{missing: None}))

    assert raised.value.variables == [missing]
    assert missing in str(raised.value)


def test_development_starts_without_them(app_config):
    app = create_app({**app_config, "SECRET_KEY": None, "PUBLIC_BASE_URL": None})

    close(app)
    assert app.config["DEVELOPMENT"] and len(app.config["SECRET_KEY"]) >= 32


def test_an_unknown_environment_name_is_refused(app_config):
    with pytest.raises(ConfigError) as raised:
        create_app({**app_config, "PARLEY_ENV": "staging"})
    assert raised.value.variables == ["PARLEY_ENV"]


def test_a_request_body_past_the_limit_gets_413(client, twilio):
    form = twilio.form("x" * 300_000)

    response = twilio.post(form)

    assert response.status_code == 413
