"""Logging in and out of the console."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from models import db
from services.users import authenticate
from web.admin import ConsoleUser, bp

log = logging.getLogger("parley.web.admin")


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no open redirect to another host)."""
    if target and target.startswith("/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.netloc and not parts.scheme:
            return target
    return url_for("admin.conversations")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    """The login form; on success, back to the page asked for."""
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("admin.conversations"))
    if request.method == "GET":
        return render_template("admin/login.html", error=None, email="")
    email = request.form.get("email", "")
    password = request.form.get("password", "")
    if not email or not password:
        return render_template(
            "admin/login.html", error="Enter your e-mail and password.", email=email
        ), 400
    result = authenticate(db.session, email, password)
    db.session.commit()
    if result.user is None:
        return render_template("admin/login.html", error=result.error, email=email), 401
    user = result.user
    login_user(ConsoleUser(user.id, user.email, user.role))
    log.info("admin.login user=%s role=%s", user.id, user.role)
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> Response:
    """Log out and go back to the login page."""
    logout_user()
    return redirect(url_for("admin.login"))
