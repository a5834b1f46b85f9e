"""Metrics, exports, users, the flow-language reference and data erasure pages of the console."""

from __future__ import annotations

import datetime as dt
import io
import logging

from flask import (
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from curation import erasure, exports, metrics, transcripts
from curation.users import (
    UserError,
    create_user,
    get_user,
    list_users,
    set_password,
    update_user,
)
from models import db
from models.curation import DEFAULT_ROLE, ROLES
from web.admin import bp, reference, requires

log = logging.getLogger("parley.web.admin")

#: The range buttons of the metrics page, in days.
PRESETS = (7, 30, 90, 365)
#: The longest range the metrics page covers, in days.
MAX_DAYS = 366


def _date(name: str) -> dt.date | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        abort(400, description=f"{name}: a date as YYYY-MM-DD, not {value[:40]!r}")


def _range() -> metrics.Range:
    """The range the query string asks for: ``from`` and ``to`` dates, or ``days`` up to today."""
    since, until = _date("from"), _date("to")
    if since or until:
        until = until or metrics.utcnow().date()
        since = since or until - dt.timedelta(days=29)
        if since > until:
            abort(400, description="from: a date on or before to")
        if (until - since).days + 1 > MAX_DAYS:
            abort(400, description=f"from, to: at most {MAX_DAYS} days apart")
        return metrics.Range(since, until)
    days = request.args.get("days", "30")
    if not days.isdigit() or not 1 <= int(days) <= MAX_DAYS:
        abort(400, description=f"days: a number from 1 to {MAX_DAYS}")
    return metrics.Range.last(int(days))


@bp.get("/metrics", endpoint="metrics")
@requires("curator")
def metrics_page() -> str:
    """The dashboard: charts drawn by Chart.js from SQL aggregates, over a range of days."""
    period = _range()
    flows = current_app.extensions["parley"].flows
    flow = request.args.get("flow", "").strip() or None
    if flow is not None and len(flow) > 64:
        abort(400, description="flow: a flow id")
    dashboard = metrics.build(db.session, period, flow)
    db.session.rollback()
    for funnel in dashboard.funnels:
        loaded = flows.get(funnel["flow"])
        funnel["current_version"] = loaded.version if loaded else None
    preset = next(
        (
            days
            for days in PRESETS
            if not request.args.get("from") and metrics.Range.last(days) == period
        ),
        None,
    )
    return render_template(
        "admin/metrics.html",
        dashboard=dashboard.as_dict(),
        period=period,
        presets=PRESETS,
        preset=preset,
        flow=flow or "",
        flow_ids=sorted(flows.flows),
    )


@bp.get("/exports", endpoint="exports")
@requires("curator")
def exports_page() -> str:
    """Download buttons for each export format."""
    return render_template("admin/exports.html", formats=exports.FORMATS)


@bp.get("/exports/<fmt>")
@requires("curator")
def export_download(fmt: str) -> Response:
    """The curated conversations as a file (``?all=1``: unpublished curated ones too)."""
    if fmt not in exports.WRITERS:
        abort(404, description=f"no export format {fmt!r}; use one of {', '.join(exports.FORMATS)}")
    published_only = request.args.get("all") != "1"
    buffer = io.StringIO()
    exports.WRITERS[fmt](exports.curated(db.session, published_only), buffer)
    db.session.rollback()
    return Response(
        buffer.getvalue(),
        mimetype=exports.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="conversations.{fmt}"'},
    )


@bp.route("/users", methods=["GET", "POST"])
@requires("admin")
def users() -> str | tuple[str, int] | Response:
    """List console users; add one (the least powerful role unless another is chosen)."""
    status = 200
    form = {"email": "", "name": "", "role": DEFAULT_ROLE}
    if request.method == "POST":
        form = {key: request.form.get(key, "") for key in ("email", "name", "role")}
        try:
            user = create_user(
                db.session,
                form["email"],
                request.form.get("password", ""),
                form["role"],
                name=form["name"],
            )
            db.session.commit()
            flash(f"User {user.email} ({user.role}) created.", "ok")
            return redirect(url_for("admin.users"))
        except UserError as error:
            db.session.rollback()
            flash(str(error), "error")
            status = 400
    return render_template(
        "admin/users.html", users=list_users(db.session), roles=ROLES, form=form
    ), status


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@requires("admin")
def user_edit(user_id: int) -> str | tuple[str, int] | Response:
    """Edit a user's name, role and access (``action=save``), or set a new password."""
    try:
        user = get_user(db.session, user_id)
    except UserError:
        abort(404, description=f"no user {user_id}")
    if request.method == "GET":
        return render_template("admin/user.html", user=user, roles=ROLES)
    form = request.form
    try:
        if form.get("action") == "password":
            set_password(db.session, user_id, form.get("password", ""))
            message = f"New password set for {user.email}; any lock-out is lifted."
        else:
            update_user(
                db.session,
                user_id,
                name=form.get("name", ""),
                role=form.get("role", ""),
                active=form.get("active") == "yes",
                by=current_user.id,
            )
            message = f"Saved {user.email}."
        db.session.commit()
    except UserError as error:
        db.session.rollback()
        flash(str(error), "error")
        user = get_user(db.session, user_id)
        return render_template("admin/user.html", user=user, roles=ROLES), 400
    flash(message, "ok")
    return redirect(url_for("admin.users"))


@bp.get("/docs/")
@requires("agent")
def guides() -> Response:
    """The guides start with the flow-language reference."""
    return redirect(url_for("admin.guide", name="flow-language"))


@bp.get("/docs/<name>")
@requires("agent")
def guide(name: str) -> str:
    """A guide from docs/ (the flow-language reference first), rendered from its Markdown."""
    if name not in reference.GUIDES:
        abort(404, description=f"no guide {name!r}; guides: {', '.join(reference.GUIDES)}")
    links = {
        file_name: url_for("admin.guide", name=key) for key, file_name in reference.GUIDES.items()
    }
    return render_template(
        "admin/guide.html", guide=reference.guide(name, links), guides=reference.GUIDES
    )


@bp.post("/contacts/<int:contact_id>/erase")
@requires("admin")
def erase_contact(contact_id: int) -> Response:
    """Erase a contact's messages, executions and curation (recorded)."""
    if not transcripts.contact_exists(db.session, contact_id):
        abort(404, description=f"no contact {contact_id}")
    counts = erasure.erase(db.session, contact_id, current_user.email)
    db.session.commit()
    flash(
        f"Erased contact {contact_id}: {counts['messages']} message(s), "
        f"{counts['executions']} execution(s), {counts['conversations']} conversation(s).",
        "ok",
    )
    return redirect(url_for("admin.conversations"))
