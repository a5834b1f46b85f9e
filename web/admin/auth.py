"""Logging in and out of the console."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from curation.login_limits import LoginLimits, client_address
from curation.users import SetupClosed, UserError, authenticate, create_first_admin, has_users
from models import db
from web.admin import ConsoleUser, bp

log = logging.getLogger("parley.web.admin")


#: Headers a proxy or CDN adds with the client's address; any of them means "not local".
PROXY_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Real-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "CF-Connecting-IP",
    "True-Client-IP",
    "Fastly-Client-IP",
    "Via",
)


def _login_limits() -> LoginLimits:
    """The app's login limits, built on first use from its settings."""
    limits = current_app.extensions.get("parley.login_limits")
    if limits is None:  # setdefault: two first requests at once still share one
        limits = current_app.extensions.setdefault(
            "parley.login_limits",
            LoginLimits.from_settings(current_app.extensions["parley"].settings),
        )
    return limits


def _client(limits: LoginLimits) -> str:
    """The address to count this client's login attempts by."""
    forwarded = request.headers.get("X-Forwarded-For")
    if (
        forwarded
        and not limits.proxy_hops
        and not current_app.extensions.get("parley.proxy_warned")
    ):
        current_app.extensions["parley.proxy_warned"] = True
        log.warning(
            "admin.login.behind_proxy: X-Forwarded-For is set but TRUSTED_PROXY_HOPS=0, so "
            "every client counts as the proxy; set TRUSTED_PROXY_HOPS (Heroku: 1)"
        )
    return client_address(request.remote_addr, forwarded, limits.proxy_hops)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no open redirect to another host)."""
    if target and target.startswith("/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.netloc and not parts.scheme:
            return target
    return url_for("admin.conversations")


def first_run() -> bool:
    """No console user exists yet, and the request comes from this machine.

    Only then may ``/admin/setup`` create the first admin: on a laptop after
    ``make run`` that is the person at the keyboard. Behind a proxy (a
    forwarded request) or once any user exists, accounts are made with
    ``flask users create`` only.
    """
    local = request.remote_addr in {"127.0.0.1", "::1"}
    forwarded = any(name in request.headers for name in PROXY_HEADERS) or any(
        name.lower().startswith("x-forwarded-") for name, _ in request.headers.items()
    )
    if not local or forwarded:
        return False
    return not has_users(db.session)


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Response | tuple[str, int] | str:
    """Create the first admin account, on this machine only, while there is none."""
    if not first_run():
        abort(404)
    email = request.form.get("email", "")
    if request.method == "GET":
        return render_template("admin/setup.html", error=None, email="")
    try:
        user = create_first_admin(db.session, email, request.form.get("password", ""))
    except SetupClosed:  # another request made the first admin a moment ago
        db.session.rollback()
        abort(404)
    except UserError as error:
        db.session.rollback()
        return render_template("admin/setup.html", error=str(error), email=email), 400
    db.session.commit()
    login_user(ConsoleUser(user.id, user.email, user.role))
    log.info("admin.setup first admin created user=%s", user.id)
    return redirect(_safe_next(request.args.get("next")))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | tuple[str, int, dict[str, str]] | str:
    """The login form; on success, back to the page asked for.

    Failed attempts are limited per client, per account and per both
    (`curation.login_limits`): past a limit the form answers 429 with
    ``Retry-After``, whatever the password.
    """
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("admin.conversations"))
    if request.method == "GET" and first_run():
        return redirect(url_for("admin.setup", next=request.args.get("next")))
    if request.method == "GET":
        return render_template("admin/login.html", error=None, email="")
    email = request.form.get("email", "")
    password = request.form.get("password", "")
    if not email or not password:
        return render_template(
            "admin/login.html", error="Enter your e-mail and password.", email=email
        ), 400
    limits = _login_limits()
    client = _client(limits)
    refusal = limits.check(client, email)
    if refusal is not None:
        log.warning(
            "admin.login.throttled scope=%s retry_after=%s", refusal.scope, refusal.retry_after
        )
        error = f"Too many failed attempts: try again in {refusal.retry_after} seconds."
        page = render_template("admin/login.html", error=error, email=email)
        return page, 429, {"Retry-After": str(refusal.retry_after)}
    result = authenticate(db.session, email, password)
    db.session.commit()
    if result.user is None:
        limits.failed(client, email)
        return render_template("admin/login.html", error=result.error, email=email), 401
    limits.succeeded(client, email)
    user = result.user
    login_user(ConsoleUser(user.id, user.email, user.role))
    log.info("admin.login user=%s role=%s", user.id, user.role)
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> Response:
    """Log out and go back to the login page."""
    logout_user()
    return redirect(url_for("admin.login"))
