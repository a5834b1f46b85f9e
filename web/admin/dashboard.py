"""Metrics, exports, users and data erasure pages of the console."""

from __future__ import annotations

import io
import logging

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from curation import erasure, exports, metrics
from curation.users import UserError, create_user
from models import db
from models.curation import ROLES, User
from models.entities import Contact
from web.admin import bp, requires

log = logging.getLogger("parley.web.admin")


@bp.get("/metrics", endpoint="metrics")
@requires("curator")
def metrics_page() -> str:
    """The dashboard: charts drawn by Chart.js from SQL aggregates."""
    days = request.args.get("days", "30")
    if not days.isdigit() or not 1 <= int(days) <= 366:
        abort(400, description="days: a number from 1 to 366")
    dashboard = metrics.build(db.session, int(days))
    db.session.rollback()
    return render_template("admin/metrics.html", dashboard=dashboard.as_dict(), days=int(days))


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
    """List console users; add one."""
    status = 200
    if request.method == "POST":
        try:
            user = create_user(
                db.session,
                request.form.get("email", ""),
                request.form.get("password", ""),
                request.form.get("role", ""),
            )
            db.session.commit()
            flash(f"User {user.email} ({user.role}) created.", "ok")
            return redirect(url_for("admin.users"))
        except UserError as error:
            db.session.rollback()
            flash(str(error), "error")
            status = 400
    rows = db.session.scalars(select(User).order_by(User.email)).all()
    return render_template("admin/users.html", users=rows, roles=ROLES), status


@bp.post("/contacts/<int:contact_id>/erase")
@requires("admin")
def erase_contact(contact_id: int) -> Response:
    """Erase a contact's messages, executions and curation (recorded)."""
    if db.session.get(Contact, contact_id) is None:
        abort(404, description=f"no contact {contact_id}")
    counts = erasure.erase(db.session, contact_id, current_user.email)
    db.session.commit()
    flash(
        f"Erased contact {contact_id}: {counts['messages']} message(s), "
        f"{counts['executions']} execution(s), {counts['conversations']} conversation(s).",
        "ok",
    )
    return redirect(url_for("admin.conversations"))
