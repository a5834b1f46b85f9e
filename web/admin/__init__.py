"""The admin console at ``/admin``: login, transcripts, curation, metrics, exports.

Every page needs a login (Flask-Login); a logged-out request is redirected to
the login page, and a user whose role may not use a page gets 403. Every POST
carries a CSRF token (Flask-WTF's `CSRFProtect`, checked for this blueprint
only: Twilio's and Stripe's webhooks are authenticated by their signatures).

Roles: ``agent`` reads transcripts; ``curator`` also curates, exports and sees
the metrics; ``admin`` also manages users and erases contacts' data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, abort, request
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_wtf.csrf import CSRFError, CSRFProtect

from models import db
from models.curation import User

bp = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
login_manager = LoginManager()
csrf = CSRFProtect()

#: Who may do what: each role and the roles it includes.
ROLE_INCLUDES = {
    "admin": {"admin", "curator", "agent"},
    "curator": {"curator", "agent"},
    "agent": {"agent"},
}


@dataclass
class ConsoleUser(UserMixin):
    """The logged-in user as Flask-Login sees it (not the ORM row)."""

    id: int
    email: str
    role: str
    name: str | None = None

    @property
    def display_name(self) -> str:
        """The user's name, or their e-mail."""
        return self.name or self.email

    def get_id(self) -> str:
        """The session's user key."""
        return str(self.id)

    def can(self, role: str) -> bool:
        """Whether this user has `role` or a role that includes it."""
        return role in ROLE_INCLUDES.get(self.role, set())


@login_manager.user_loader
def _load_user(user_id: str) -> ConsoleUser | None:
    if not user_id.isdigit():
        return None
    row = db.session.get(User, int(user_id))
    if row is None or not row.active:
        return None
    return ConsoleUser(row.id, row.email, row.role, row.name)


def requires(role: str) -> Callable:
    """Decorate a view: logged-out users go to the login page, others need `role`."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.can(role):
                abort(403, description=f"this page needs the {role} role")
            return view(*args, **kwargs)

        return wrapped

    return decorate


#: The longest form or query value the console takes (a summary, an edited message).
MAX_VALUE_CHARS = 20_000


@bp.before_request
def _check_csrf() -> None:
    if request.method == "POST":
        csrf.protect()
    # Every value a page reads is text for the database: PostgreSQL refuses NUL in it.
    for source in (request.args, request.form):
        for name, value in source.items(multi=True):
            if "\x00" in value or len(value) > MAX_VALUE_CHARS:
                abort(400, description=f"{name}: no NUL character, at most {MAX_VALUE_CHARS}")


@bp.errorhandler(CSRFError)
def _csrf_error(error: CSRFError) -> tuple[str, int]:
    return f"Bad request: {error.description} Reload the page and try again.", 400


@bp.app_context_processor
def _roles() -> dict[str, Any]:
    return {"console_user": current_user}


@bp.app_template_global()
def delivery_status(status: str) -> tuple[str, str]:
    """A message's delivery status in words, and its badge class (``ok``, ``failed``...)."""
    from handover.inbox import STATUS_LABELS

    return STATUS_LABELS.get(status, (status, "muted"))


@bp.app_template_global()
def twilio_error(code: int | None) -> str:
    """Twilio's error code in words (``Twilio error 30007: the carrier filtered...``)."""
    from integrations.twilio_errors import describe

    return describe(code)


def init_app(app: Flask) -> None:
    """Register the console: blueprint, login manager and CSRF protection."""
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # cookies: web/security.py
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "admin.login"
    login_manager.login_message = "Please log in to see this page."
    from web.admin import auth, dashboard, flow_tests, inbox, views  # noqa: F401  (routes)

    app.register_blueprint(bp)
