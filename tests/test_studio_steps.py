"""``POST /studio/flows/<flow>/steps/<step>``: one Parley step, as a Studio HTTP widget calls it."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from app import create_app
from config import ConfigError
from models import Execution, Message, db

TOKEN = "studio-token-5d2e"
PHONE = "+15551230002"
FROM = f"whatsapp:{PHONE}"


@pytest.fixture
def app_config(app_config: dict) -> dict:
    app_config.update(STUDIO_TOKEN=TOKEN, STUDIO_LLM_TIMEOUT="1")
    return app_config


def step(client, flow: str, step_id: str, body: str = "", *, as_json=False, **kwargs):
    """Post as Studio's Make HTTP Request widget does (form by default)."""
    headers = kwargs.pop("headers", {"Authorization": f"Bearer {TOKEN}"})
    fields = {"From": FROM, "Body": body, **kwargs.pop("fields", {})}
    url = f"/studio/flows/{flow}/steps/{step_id}"
    if as_json:
        return client.post(url, json=fields, headers=headers, **kwargs)
    return client.post(url, data=fields, headers=headers, **kwargs)


def coach(reply: str, goal: str = "", agreed: bool = False) -> dict:
    return {"reply": reply, "goal": goal, "agreed": agreed}


def test_an_llm_step_answers_with_the_models_reply(app, client, fake_openai):
    fake_openai.script(coach("What keeps you up at night?"))
    response = step(client, "goal_setting", "coach", "I sleep badly", fields={"vars.area": "sleep"})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    data = response.json
    assert data["reply"] == "What keeps you up at night?"
    assert data["done"] is False
    assert data["waiting"] is True  # `until` not met: the step waits for the answer
    assert data["next"] == "coach"
    assert data["fallback"] is False
    assert "I sleep badly" in json.dumps(fake_openai.requests[-1])

    fake_openai.script(coach("Deal: lights out by 23:00.", "bed by 23:00", agreed=True))
    data = step(client, "goal_setting", "coach", "ok, bed by 23:00", as_json=True).json
    assert data["reply"] == "Deal: lights out by 23:00."
    assert data["variables"]["goal"]["goal"] == "bed by 23:00"
    assert data["next"] == "confirm"  # where the step leads: Studio runs it next
    assert data["waiting"] is False
    with app.app_context():
        execution = db.session.scalars(sa.select(Execution)).one()
        assert execution.flow_id == "goal_setting"
        assert execution.current_step == data["next"]
        statuses = db.session.scalars(
            sa.select(Message.status).where(Message.direction == "outbound")
        ).all()
        assert statuses == ["studio", "studio"]  # Studio sends them, not Parley


def test_the_step_runs_in_the_contacts_execution(client):
    first = step(client, "menu", "count").json
    assert first["variables"]["visits"] == 1
    assert first["next"] == "choose"
    asked = step(client, "menu", "choose").json
    assert asked["reply"].startswith("What would you like?")
    assert asked["waiting"] is True
    answered = step(client, "menu", "choose", "1").json
    assert answered["variables"]["topic"] == "hours"
    assert answered["next"] == "hours"
    assert step(client, "menu", "hours").json["reply"].startswith("We're open")


def test_a_late_llm_answers_with_the_fallback_and_says_so(client, fake_openai):
    fake_openai.delay_seconds = 3  # STUDIO_LLM_TIMEOUT is 1 s
    data = step(client, "goal_setting", "coach", "hello", fields={"vars.area": "sleep"}).json
    assert data["fallback"] is True
    assert "timed out" in data["error"]
    assert data["reply"] == "Sorry, I'm having trouble right now. Please try again in a minute."
    assert data["next"] == "coach"  # try the step again


def test_the_answer_fits_in_studios_64_kb(client, fake_openai):
    fake_openai.script(coach("x" * 70_000))
    response = step(client, "goal_setting", "coach", "hi", fields={"vars.area": "sleep"})
    assert len(response.data) <= 64 * 1024
    assert response.json["truncated"] is True


@pytest.mark.parametrize(
    "headers, query",
    [({}, ""), ({"Authorization": "Bearer nope"}, ""), ({}, "?token=nope")],
)
def test_refused_without_the_token(client, headers, query):
    response = client.post(
        f"/studio/flows/menu/steps/count{query}", data={"From": FROM}, headers=headers
    )
    assert response.status_code == 401


def test_the_token_may_be_a_query_parameter(client):
    response = client.post(f"/studio/flows/menu/steps/count?token={TOKEN}", data={"From": FROM})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "url, fields, status",
    [
        ("/studio/flows/nope/steps/count", {"From": FROM}, 404),
        ("/studio/flows/menu/steps/nope", {"From": FROM}, 404),
        ("/studio/flows/menu/steps/count", {}, 400),
        ("/studio/flows/menu/steps/count", {"From": "messenger:123"}, 400),
    ],
)
def test_bad_requests(client, url, fields, status):
    response = client.post(url, data=fields, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == status
    assert response.json["error"]


@pytest.mark.parametrize("value", ["soon", "0"])
def test_a_malformed_llm_timeout_is_named_at_startup(app_config, value):
    with pytest.raises(ConfigError) as raised:
        create_app({**app_config, "STUDIO_LLM_TIMEOUT": value})
    assert raised.value.variables == ["STUDIO_LLM_TIMEOUT"]
    assert "STUDIO_LLM_TIMEOUT" in str(raised.value)


def test_studios_own_content_types(client, fake_openai):
    """Studio's widget labels its bodies with a charset; both kinds are read."""
    fake_openai.script(coach("Tell me more."), coach("And then?"))
    fields = {"From": FROM, "Body": "hi", "vars.area": "sleep"}
    as_json = client.post(
        f"/studio/flows/goal_setting/steps/coach?token={TOKEN}",
        data=json.dumps(fields),
        content_type="application/json;charset=utf-8",
    )
    assert as_json.json["reply"] == "Tell me more."
    as_form = client.post(
        f"/studio/flows/goal_setting/steps/coach?token={TOKEN}",
        data="From=whatsapp%3A%2B15551230002&Body=hi",
        content_type="application/x-www-form-urlencoded;charset=utf-8",
    )
    assert as_form.json["reply"] == "And then?"
