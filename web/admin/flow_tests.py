"""The designer's view: save a transcript as a conversation test, see each flow's tests.

- ``POST /admin/conversations/<id>/test`` (curator): "Save as test" — the
  conversation becomes ``FLOWS_DIR/tests/<flow>_conversation_<id>.yaml``
  (`curation.conversation_tests`), redacted, and is run at once; a turn may be
  marked wrong with what it should (not) say.
- ``GET /admin/flow-tests`` (curator): each flow's tests with their last
  scripted and live results (`conversation.test_results`, written by ``flask
  flows test`` and by the run button here).
- ``POST /admin/flow-tests/run`` (curator): run every scripted test now.
- Transcripts get ``saved_tests(conversation_id)`` in their template: the tests
  that came from them, for the "this conversation is a test" link.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from conversation import test_results
from conversation.flow_tests import FlowTestError, read_plan, run_conversation
from curation import conversation_tests
from models import db
from models.flow_tests import FlowTestRun
from web.admin import bp, requires

log = logging.getLogger("parley.web.admin")


def _tests_dir() -> Path:
    return Path(current_app.extensions["parley"].settings.flows_dir) / "tests"


def anchor(path: str, name: str) -> str:
    """The flow-tests page's anchor of one test."""
    return "test-" + re.sub(r"[^a-z0-9]+", "-", f"{path} {name}".lower()).strip("-")


@bp.app_context_processor
def _saved_tests() -> dict[str, Any]:
    def saved_tests(conversation_id: int) -> list[dict[str, str]]:
        tests_dir = _tests_dir()
        found = conversation_tests.tests_of_conversation(tests_dir, conversation_id)
        return [
            {
                "path": test_results.relative(path, tests_dir),
                "name": name,
                "url": url_for("admin.flow_tests")
                + "#"
                + anchor(test_results.relative(path, tests_dir), name),
            }
            for path, name in found
        ]

    return {"saved_tests": saved_tests}


def _int(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else None


@bp.post("/conversations/<int:conversation_id>/test")
@requires("curator")
def save_test(conversation_id: int) -> Response:
    """Save the conversation as a conversation test, redacted, and run it."""
    form = request.form
    marks = []
    turn = _int(form.get("wrong_turn"))
    not_contains = (form.get("not_contains") or "").strip()[:500]
    reply = (form.get("reply") or "").strip()[:2000]
    if turn is not None and (not_contains or reply):
        marks.append(
            conversation_tests.Mark(turn, not_contains=not_contains or None, reply=reply or None)
        )
    runner = current_app.extensions["parley"].runner
    region = current_app.extensions["parley"].settings.redaction_region
    try:
        test = conversation_tests.build(
            db.session, conversation_id, marks, region, flows=runner.flows
        )
    except conversation_tests.ConversionError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("admin.conversation", conversation_id=conversation_id))
    db.session.rollback()
    tests_dir = _tests_dir()
    path = conversation_tests.default_path(tests_dir, test)
    result = conversation_tests.save(test, path, runner)
    name = test.document["tests"][0]["name"]
    relative = test_results.relative(path, tests_dir)
    test_results.record(
        db.session,
        tests_dir,
        "scripted",
        [
            test_results.Outcome(
                path,
                name,
                test.flow_id,
                result.passed,
                1.0 if result.passed else 0.0,
                1,
                result.flow_version,
                result.report,
            )
        ],
    )
    log.info(
        "flow_tests.saved conversation=%s file=%s by=%s passed=%s",
        conversation_id,
        relative,
        current_user.email,
        result.passed,
    )
    if result.passed:
        flash(f"Saved as test {relative}: it passes.", "ok")
    else:
        flash(f"Saved as test {relative}: it does not pass yet (see its result).", "error")
    return redirect(url_for("admin.flow_tests") + "#" + anchor(relative, name))


@dataclass
class TestRow:
    """One test on the flow-tests page."""

    path: str
    name: str
    flow_id: str
    flow_version: str | None
    conversation_id: int | None
    scripted: FlowTestRun | None
    live: FlowTestRun | None

    @property
    def anchor(self) -> str:
        """Its anchor on the page."""
        return anchor(self.path, self.name)


@bp.get("/flow-tests")
@requires("curator")
def flow_tests() -> str:
    """Each flow's conversation tests, with their last scripted and live results."""
    tests_dir = _tests_dir()
    problem = None
    plan = []
    if tests_dir.is_dir():
        try:
            plan = read_plan(tests_dir)
        except FlowTestError as error:
            problem = str(error)
    last = test_results.latest(db.session)
    by_flow: dict[str, list[TestRow]] = {}
    for path, spec in plan:
        relative = test_results.relative(path, tests_dir)
        source = spec.source or {}
        by_flow.setdefault(spec.flow or "?", []).append(
            TestRow(
                relative,
                spec.name,
                spec.flow or "?",
                spec.flow_version,
                source.get("conversation") if isinstance(source.get("conversation"), int) else None,
                last.get((relative, spec.name, "scripted")),
                last.get((relative, spec.name, "live")),
            )
        )
    runner = current_app.extensions["parley"].runner
    versions = {flow_id: flow.version for flow_id, flow in runner.flows.flows.items()}
    return render_template(
        "admin/flow_tests.html",
        by_flow=dict(sorted(by_flow.items())),
        versions=versions,
        problem=problem,
    )


@bp.post("/flow-tests/run")
@requires("curator")
def run_flow_tests() -> Response:
    """Run every scripted conversation test now and keep the results."""
    tests_dir = _tests_dir()
    try:
        plan = read_plan(tests_dir) if tests_dir.is_dir() else []
    except FlowTestError as error:
        flash(str(error), "error")
        return redirect(url_for("admin.flow_tests"))
    runner = current_app.extensions["parley"].runner
    outcomes = []
    for path, spec in plan:
        result = run_conversation(spec, runner, f"{path}: {spec.name}")
        outcomes.append(test_results.Outcome.scripted(path, spec, result))
    test_results.record(db.session, tests_dir, "scripted", outcomes)
    failed = sum(not outcome.passed for outcome in outcomes)
    flash(
        f"Ran {len(outcomes)} test(s): {len(outcomes) - failed} passed, {failed} failed.",
        "error" if failed else "ok",
    )
    return redirect(url_for("admin.flow_tests"))
