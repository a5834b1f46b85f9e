"""``POST /api/v1/executions``: a flow started from outside, like Studio's Executions API."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from models import Execution, ExecutionRequest, db

TOKEN = "studio-token-77a1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTACT = "+15551230003"
OUR_SMS = "+15557650000"

CHECKIN = """\
id: checkin
description: A weekly check-in a scheduler starts.
trigger: {keywords: [checkin]}
variables: {name: "", goal: ""}   # given by the request's Parameters
start: hello
steps:
  hello:
    say: "Hi {{ vars.name }}, how did '{{ vars.goal }}' go this week?"
    next: how
  how:
    ask: "From 1 to 5?"
    choices: ["1", "2", "3", "4", "5"]
    save_as: score
    next: thanks
  thanks:
    say: "Thanks, {{ vars.name }}: {{ vars.score }} noted."
    next: chart
  chart:
    say: "Your week:"
    media: "https://example.org/charts/{{ vars.name }}.png"
"""


@pytest.fixture
def app_config(app_config: dict, tmp_path) -> dict:
    (tmp_path / "checkin.yaml").write_text(CHECKIN)
    app_config.update(STUDIO_TOKEN=TOKEN, FLOWS_DIR=str(tmp_path))
    return app_config


def start(client, key: str | None = "reminder-1", *, as_json=False, **fields):
    data = {"To": CONTACT, "From": OUR_SMS, "Flow": "checkin", **fields}
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    if as_json:
        return client.post("/api/v1/executions", json=data, headers=headers)
    return client.post("/api/v1/executions", data=data, headers=headers)


def test_starts_the_flow_and_sends_its_first_messages(app, client, fake_twilio, twilio):
    parameters = json.dumps({"name": "Ana", "goal": "bed by 23:00"})
    response = start(client, Parameters=parameters)
    assert response.status_code == 201, response.json
    assert response.json["status"] == "waiting"
    assert fake_twilio.bodies == ["Hi Ana, how did 'bed by 23:00' go this week?", "From 1 to 5?"]
    assert {request["form"]["From"] for request in fake_twilio.requests} == {OUR_SMS}
    assert {request["form"]["To"] for request in fake_twilio.requests} == {CONTACT}

    # The contact answers through the Twilio webhook: the same execution goes on.
    reply = twilio.say("4", sender=CONTACT, to=OUR_SMS)
    assert "Thanks, Ana: 4 noted." in reply.get_data(as_text=True)


def test_a_repeated_key_starts_nothing_and_answers_the_same(app, client, fake_twilio):
    first = start(client, Parameters={"name": "Ana", "goal": "walks"}, as_json=True)
    again = start(client, Parameters={"name": "Ana", "goal": "walks"}, as_json=True)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json["replayed"] is True
    assert again.json["execution_id"] == first.json["execution_id"]
    assert again.json["message_ids"] == first.json["message_ids"]
    assert len(fake_twilio.requests) == 2  # sent once
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ExecutionRequest)) == 1


def test_a_contact_already_in_a_flow_is_refused(client, fake_twilio):
    assert start(client, "a", Parameters='{"name": "Ana"}').status_code == 201
    response = start(client, "b", Parameters='{"name": "Ana"}')
    assert response.status_code == 409
    assert "checkin" in response.json["error"]


@pytest.mark.parametrize(
    "fields, status",
    [
        ({"To": ""}, 400),
        ({"To": "messenger:1"}, 400),
        ({"Flow": ""}, 400),
        ({"Flow": "nope"}, 404),
        ({"Parameters": "not json"}, 400),
        ({"Parameters": "[1, 2]"}, 400),
        ({"From": ""}, 400),  # no sender and the contact never wrote
    ],
)
def test_bad_requests(client, fields, status):
    response = start(client, **fields)
    assert response.status_code == status
    assert response.json["error"]


def test_refused_without_the_token(client, fake_twilio):
    response = client.post("/api/v1/executions", data={"To": CONTACT, "Flow": "checkin"})
    assert response.status_code == 401
    assert fake_twilio.requests == []


def test_a_step_endpoint_gives_the_media_a_step_sends(client):
    response = client.post(
        "/studio/flows/checkin/steps/chart",
        data={"From": CONTACT, "vars.name": "ana"},
        headers=AUTH,
    )
    assert response.json["reply"] == "Your week:"
    assert response.json["media"] == ["https://example.org/charts/ana.png"]
    assert response.json["done"] is True


def test_simultaneous_retries_start_one_execution(app, fake_twilio):
    clients = [app.test_client() for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda client: start(client, "same-key"), clients))
    assert sorted(response.status_code for response in responses) == [200, 200, 200, 201]
    assert len({response.json["execution_id"] for response in responses}) == 1
    assert len(fake_twilio.requests) == 2  # the two first messages, sent once
