"""The landing page and the health check."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template_string, url_for

from models import db
from models.health import database_answers

bp = Blueprint("home", __name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parley</title>
<style nonce="{{ csp_nonce() }}">
body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;
line-height:1.5}code{background:#f3f3f3;padding:0 .2rem}li{margin:.3rem 0}</style></head>
<body><h1>Parley is running</h1>
<p><b><a href="{{ url_for('simulator.page') }}">Chat with a flow in the simulator</a></b>
(no Twilio account needed; for console admins: create one with
<code>.venv/bin/flask --app app users create you@example.org --role admin</code>).</p>
<p>Flows loaded:</p><ul>
{% for flow in flows %}<li><b>{{ flow.id }}</b>{% if flow.trigger.default %} (default){% endif %}
 — {{ flow.description }}{% if flow.trigger.keywords %}<br><small>keywords:
 {{ flow.trigger.keywords | join(', ') }}</small>{% endif %}</li>{% endfor %}</ul>
<p>Twilio webhook ("A message comes in", HTTP POST): <code>{{ webhook }}</code></p>
{% if not token %}<p><b>TWILIO_AUTH_TOKEN is not set</b>: the webhook refuses every request
until it is (signatures are always checked).</p>{% endif %}
{% if not llm %}<p><b>No LLM is configured</b>: set <code>OPENAI_API_KEY</code> (and
<code>OPENAI_BASE_URL</code> for another OpenAI-compatible server); LLM steps answer with the
flow's fallback until then.</p>{% endif %}
<p>Talk to a flow from a terminal: <code>.venv/bin/flask --app app chat goal_setting</code></p>
</body></html>"""


@bp.get("/")
def index() -> str:
    """What is running, and how to connect Twilio."""
    settings = current_app.extensions["parley"].settings
    base = settings.public_base_url
    webhook = (
        (base.rstrip("/") + "/twilio/messages")
        if base
        else url_for("twilio.inbound_message", _external=True)
    )
    return render_template_string(
        _PAGE,
        flows=current_app.extensions["parley"].flows.flows.values(),
        webhook=webhook,
        token=settings.twilio_auth_token is not None,
        llm=bool(settings.openai_api_key or settings.openai_base_url),
    )


@bp.get("/healthz")
def healthz() -> tuple[dict, int]:
    """``{"status": "ok"}`` when the database answers, else 503."""
    if not database_answers(db.session):
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok"}, 200
