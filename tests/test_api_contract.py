"""The API keeps its contract: bad values get a 400 problem, and schemathesis finds nothing.

schemathesis generates requests from ``/api/openapi.json`` (valid and invalid
ones) and runs every check against the app through its WSGI interface, with
the API tokens set, so CI runs it with the rest of the suite (``make test``).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

TOKEN = "contract-token-0123456789"


@pytest.fixture
def app_config(app_config):
    """Every API's token set to one value, as an integrator would send it."""
    return {
        **app_config,
        "INTERNAL_API_TOKEN": TOKEN,
        "AGENT_API_TOKEN": TOKEN,
        "STUDIO_TOKEN": TOKEN,
    }


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/conversations?page=²",
        "/api/v1/conversations?page=99999999999999999999",
        "/api/v1/conversations/search?query=%00",
        "/api/v1/conversations/search?query=",
        "/api/v1/messages?conversation_id=²",
        "/api/v1/messages?conversation_id=-1",
        "/api/v1/conversations/99999999999999999999",
    ],
)
def test_bad_values_get_a_400_problem(client, path):
    response = client.get(path)

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == 400 and response.json["detail"]


def test_unknown_paths_and_methods_under_api_are_problems_too(client):
    for response, status in (
        (client.get("/api/v1/conversations/null,null"), 404),
        (client.get("/api/v1/nothing-here"), 404),
        (client.delete("/api/v1/conversations"), 405),
    ):
        assert response.status_code == status
        assert response.mimetype == "application/problem+json"
        assert response.json["title"] and response.json["status"] == status
    assert "GET" in client.delete("/api/v1/conversations").headers["Allow"]


def test_recent_messages_wants_exactly_one_of_contact_id_and_phone(client):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for body in ({"contact_id": None, "phone": None}, {"contact_id": 1, "phone": "+15551230001"}):
        response = client.post("/api/v1/contacts.recent-messages", json=body, headers=headers)
        assert response.status_code == 400
        assert "exactly one" in response.json["detail"]


def test_the_api_keeps_its_openapi_contract(app, database_url):
    """Every operation, valid and invalid generated requests, every check."""
    if not database_url.startswith("sqlite"):
        pytest.skip("run once, on SQLite: the same queries run on PostgreSQL in test_api.py")
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=12,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                case.call_and_validate(headers=headers)

            check()
