"""Exports, metrics, "delete my data", redaction and ``flask users create``."""

from __future__ import annotations

import csv
import io
import json

import sqlalchemy as sa
import yaml

from curation import metrics, redaction
from curation.curator import Curator
from curation.erasure import CONFIRMATION
from engine.ports import LLMUsage
from models import AuditEvent, Contact, Conversation, Curation, Execution, Message, User, db
from tests.admin_support import PASSWORD, add_user, login, post, seed_conversation
from tests.twiml import messages_of

PHONE = "+15551230001"


def curated(app, published: bool = True) -> int:
    conversation = seed_conversation(
        app,
        PHONE,
        [("I sleep badly, call +1 555 123 0001", ["Try a routine.", "Good luck!"]), ("ok", [])],
        steps=["coach", "done"],
    )
    with app.app_context():
        curator = Curator(db.session, "cur@example.com")
        curator.set_summary(conversation, "How to sleep?", "A routine.", "Sleep")
        curator.set_tags(conversation, ["sleep"])
        if published:
            curator.publish(conversation)
        db.session.commit()
    return conversation


def test_jsonl_export_is_openai_fine_tuning_format_and_redacted(app, tmp_path):
    curated(app)
    curated_only = seed_conversation(app, "+15551230002", [("hi", ["hello"])])
    with app.app_context():
        Curator(db.session, "cur").set_rating(curated_only, 2)
        db.session.commit()
    out = tmp_path / "out.jsonl"
    result = app.test_cli_runner().invoke(
        args=["transcripts", "export", "--format", "jsonl", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "messages": [
                {"role": "user", "content": "I sleep badly, call [PHONE]"},
                {"role": "assistant", "content": "Try a routine."},
                {"role": "assistant", "content": "Good luck!"},
                {"role": "user", "content": "ok"},
            ]
        }
    ]
    everything = app.test_cli_runner().invoke(args=["transcripts", "export", "--all"])
    assert len([line for line in everything.stdout.splitlines() if line.startswith("{")]) == 2


def test_csv_and_yaml_exports_from_the_console(app, client):
    conversation = curated(app)
    add_user(app, "cur@example.com", "curator")
    login(client, "cur@example.com")
    response = client.get("/admin/exports/csv")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["position"], r["role"], r["step_id"], r["text"]) for r in rows] == [
        ("1", "user", "", "I sleep badly, call [PHONE]"),
        ("2", "assistant", "coach", "Try a routine."),
        ("3", "assistant", "done", "Good luck!"),
        ("4", "user", "", "ok"),
    ]
    assert rows[0]["question"] == "How to sleep?" and rows[0]["tags"] == "sleep"

    test = yaml.safe_load(client.get("/admin/exports/yaml").get_data(as_text=True))
    assert test == {  # what `flask transcripts to-test` writes (curation/conversation_tests.py)
        "flow": "goal_setting",
        "source": {"conversation": conversation},
        "contact": {"phone": "+15550100100", "channel": "whatsapp"},
        "tests": [
            {
                "name": f"conversation {conversation}",
                "turns": [
                    {
                        "say": "I sleep badly, call [PHONE]",
                        "expect": ["Try a routine.", "Good luck!"],
                    },
                    {"say": "ok", "expect": []},
                ],
            }
        ],
    }
    assert client.get("/admin/exports/pdf").status_code == 404


def _execution(contact_id: int, version: str, step: str) -> int:
    execution = Execution(
        contact_id=contact_id,
        flow_id="goal_setting",
        flow_version=version,
        current_step=step,
        status="ended",
    )
    db.session.add(execution)
    db.session.flush()
    return execution.id


def test_dashboard_figures_come_from_sql_aggregates(app, client):
    usage = LLMUsage(model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500, latency_ms=0)
    seed_conversation(app, PHONE, [("a", ["b"]), ("c", ["d"])], steps=["x", "y"], usage=usage)
    seed_conversation(app, "+15551230002", [("e", ["f"])], channel="sms", steps=["x"])
    with app.app_context():
        for latency, message_id in zip((100, 300), (2, 4), strict=True):
            db.session.execute(
                sa.update(Message).where(Message.id == message_id).values(latency_ms=latency)
            )
        db.session.execute(
            sa.update(Message).where(Message.id == 6).values(status="undelivered", error_code=30007)
        )
        first = _execution(1, "v1", "y")
        second = _execution(2, "v2", "x")
        db.session.execute(
            sa.update(Message)
            .where(Message.step_id.is_not(None), Message.contact_id == 1)
            .values(execution_id=first)
        )
        db.session.execute(
            sa.update(Message)
            .where(Message.step_id.is_not(None), Message.contact_id == 2)
            .values(execution_id=second)
        )
        # The contact of the first execution answered a minute after step x spoke.
        x_at = db.session.scalar(sa.select(Message.created_at).where(Message.id == 2))
        db.session.execute(
            sa.update(Message)
            .where(Message.id == 4)
            .values(created_at=x_at + metrics.dt.timedelta(seconds=60))
        )
        db.session.commit()
        dashboard = metrics.build(db.session)
    per_day = {(r["direction"], r["channel"]): r["messages"] for r in dashboard.messages_per_day}
    assert per_day == {
        ("inbound", "whatsapp"): 2,
        ("outbound", "whatsapp"): 2,
        ("inbound", "sms"): 1,
        ("outbound", "sms"): 1,
    }
    assert dashboard.active_contacts == 2
    funnel = dashboard.funnel("goal_setting")
    assert funnel is not None
    assert funnel["versions"] == [{"version": "v1", "started": 1}, {"version": "v2", "started": 1}]
    assert [(s["step"], s["executions"], s["per_version"]) for s in funnel["steps"]] == [
        ("x", 2, {"v1": 1, "v2": 1}),
        ("y", 1, {"v1": 1}),
    ]
    assert [s["avg_seconds"] for s in funnel["steps"]] == [None, 60.0]
    assert sorted(dashboard.stops["goal_setting"], key=lambda stop: stop["step"]) == [
        {"step": "x", "status": "ended", "executions": 1},
        {"step": "y", "status": "ended", "executions": 1},
    ]
    (tokens,) = dashboard.tokens_per_day
    assert tokens["tokens"] == 3000
    assert tokens["cost_usd"] == round(2 * (1000 * 0.15 + 500 * 0.60) / 1e6, 6)
    assert [(r["flow"], r["step"], r["calls"], r["tokens"]) for r in dashboard.tokens_per_step] == [
        ("goal_setting", "x", 1, 1500),
        ("goal_setting", "y", 1, 1500),
    ]
    assert [r["failures"] for r in dashboard.delivery_failures_per_day] == [1]
    assert [(r["code"], r["failures"]) for r in dashboard.failures_by_code] == [(30007, 1)]
    assert "spam" in dashboard.failures_by_code[0]["meaning"]
    assert dashboard.totals["failures"] == 1 and dashboard.totals["llm_calls"] == 2
    assert dashboard.median_latency_ms == 100

    add_user(app, "cur@example.com", "curator")
    login(client, "cur@example.com")
    page = client.get("/admin/metrics").get_data(as_text=True)
    assert 'id="dashboard-data"' in page and "chart.umd.min.js" in page
    assert "30007" in page and "filtered the message as spam" in page
    with client.get("/admin/static/vendor/chartjs/chart.umd.min.js") as script:
        assert script.status_code == 200
    today = metrics.utcnow().date()
    assert client.get(f"/admin/metrics?from={today}&to={today}").status_code == 200
    assert client.get(f"/admin/metrics?from={today}&to=2000-01-01").status_code == 400
    assert client.get("/admin/metrics?from=2000-01-01&to=2026-01-01").status_code == 400
    assert client.get("/admin/metrics?from=yesterday").status_code == 400
    empty = client.get("/admin/metrics?from=2001-01-01&to=2001-01-31").get_data(as_text=True)
    assert "No executions in this range." in empty and "No messages yet." in empty
    assert "<canvas" not in empty


def test_delete_my_data_keyword_erases_and_is_recorded(app, twilio):
    curated(app)
    with app.app_context():
        contact_id = db.session.scalar(sa.select(Contact.id).where(Contact.phone == PHONE))
    response = twilio.say("Delete my data!", sender=f"whatsapp:{PHONE}")
    assert messages_of(response.data) == [CONFIRMATION]
    with app.app_context():
        bodies = db.session.scalars(
            sa.select(Message.body).where(Message.contact_id == contact_id).order_by(Message.id)
        ).all()
        assert bodies == ["Delete my data!", CONFIRMATION]
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Curation)) == 0
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 0
        event = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "contact.erase")
        ).one()
        assert (event.actor, event.contact_id) == (f"contact:{contact_id}", contact_id)
        assert event.detail["messages"] == 4
        assert PHONE not in json.dumps(event.detail)


def test_an_admin_erases_a_contact_from_the_console(app, client):
    conversation = curated(app)
    add_user(app, "root@example.com", "admin")
    login(client, "root@example.com")
    with app.app_context():
        contact_id = db.session.scalar(sa.select(Contact.id))
    response = post(
        client, f"/admin/contacts/{contact_id}/erase", page=f"/admin/conversations/{conversation}"
    )
    assert response.status_code == 302
    with app.app_context():
        for model in (Contact, Conversation, Message, Curation):
            assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0, model
        events = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "contact.erase")
        ).all()
        assert [(e.actor, e.contact_id) for e in events] == [("root@example.com", contact_id)]
    assert post(client, f"/admin/contacts/{contact_id}/erase").status_code == 404


def test_users_create_command(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "Ana@Example.com", "--role", "admin"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "Created admin ana@example.com." in result.output
    with app.app_context():
        user = db.session.scalars(sa.select(User)).one()
        assert (user.email, user.role) == ("ana@example.com", "admin")
        assert PASSWORD not in user.password_hash

    again = runner.invoke(
        args=["users", "create", "ana@example.com", "--role", "curator", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )
    assert again.exit_code != 0 and "already exists" in again.output
    short = runner.invoke(
        args=["users", "create", "b@example.com", "--role", "agent", "--password-stdin"],
        input="short\n",
    )
    assert short.exit_code != 0 and "at least 10 characters" in short.output
    role = runner.invoke(args=["users", "create", "c@example.com", "--role", "boss"])
    assert role.exit_code != 0 and "boss" in role.output


def test_redaction_detectors():
    context = redaction.Context(names=["Ana Lopez"])
    text = (
        "I'm Ana Lopez, +44 7700 900123 or (555) 123-4567, ana@x.org, see https://x.io/a, "
        "I live at 225 E. John Carpenter Freeway, Irving, Texas 75062."
    )
    assert redaction.redact(text, context) == (
        "I'm [NAME], [PHONE] or [PHONE], [EMAIL], see [URL], I live at [ADDRESS]."
    )
    assert redaction.redact("I slept 7 hours and walked 3 km on day 2") == (
        "I slept 7 hours and walked 3 km on day 2"
    )


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_neutralised(app, client):
    formulas = ['=HYPERLINK("[URL]","x")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3"]
    conversation = seed_conversation(app, "+15551230002", [(text, []) for text in formulas])
    with app.app_context():
        curator = Curator(db.session, "cur@example.com")
        curator.set_summary(conversation, "=1+1", "A routine.", "@Sleep")
        curator.publish(conversation)
        db.session.commit()
    add_user(app, "cur@example.com", "curator")
    login(client, "cur@example.com")

    exported = client.get("/admin/exports/csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(exported)))

    assert [row["text"] for row in rows] == ["'" + text for text in formulas]
    assert rows[0]["question"] == "'=1+1" and rows[0]["teaser"] == "'@Sleep"
