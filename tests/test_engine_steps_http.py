"""The ``http`` step through the runner, with the real httpx port against a local API."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.flow import FlowSet, parse_flow
from engine.ports import HTTPError
from engine.templating import Templates
from engine.validate import validate_flows
from integrations.http import HttpxHTTP, allowed_env, env_names
from tests.fakes.api_server import FakeAPI
from tests.test_engine_steps import FALLBACK, Chat


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeAPI]:
    with FakeAPI() as server:
        yield server


@pytest.fixture
def api(api_server: FakeAPI) -> Iterator[FakeAPI]:
    yield api_server.reset()
    api_server.reset()


@pytest.fixture
def http() -> Iterator[HttpxHTTP]:
    client = HttpxHTTP()
    yield client
    client.close()


def http_flow(base_url: str, request: str, extra: str = "") -> str:
    return f"""
    id: shop
    trigger: {{default: true}}
    fallback: "{FALLBACK}"
    variables: {{order: "A-42", count: 3}}
    start: lookup
    steps:
      lookup:
        http:
          url: "{base_url}{{{{ '/orders/' ~ vars.order }}}}"
{textwrap.indent(textwrap.dedent(request), " " * 10)}
        {extra}
        success: found
        fail: sorry
      found:
        say: "{{{{ steps.lookup.status }}}}: {{{{ steps.lookup.response.state }}}}"
      sorry:
        say: "Lookup failed ({{{{ steps.lookup.status }}}})."
    """


def chat_for(tmp_path: Path, flow: str, http: HttpxHTTP, env: dict[str, str] | None = None):
    chat = Chat(tmp_path, flow)
    chat.runner.http = http
    chat.runner.env = env or {}
    return chat


def test_a_2xx_answer_goes_to_success_with_status_and_parsed_json(tmp_path, api, http):
    api.answer("/orders/A-42", {"state": "shipped", "items": [1, 2]})
    chat = chat_for(tmp_path, http_flow(api.base_url, "method: GET"), http)

    assert chat.says("hi") == ["200: shipped"]
    assert chat.execution.step_results["lookup"] == {
        "status": 200,
        "response": {"state": "shipped", "items": [1, 2]},
    }
    assert api.requests[0]["method"] == "GET" and api.requests[0]["path"] == "/orders/A-42"


@pytest.mark.parametrize("status", [404, 500, 302])
def test_any_other_status_goes_to_fail(tmp_path, api, http, status):
    api.answer("/orders/A-42", {"error": "nope"}, status=status)
    chat = chat_for(tmp_path, http_flow(api.base_url, "method: GET"), http)
    assert chat.says("hi") == [f"Lookup failed ({status})."]


def test_a_timeout_goes_to_fail(tmp_path, api, http):
    api.answer("/orders/A-42", {"state": "late"}, delay=3.0)
    chat = chat_for(tmp_path, http_flow(api.base_url, "timeout: 0.2"), http)
    assert chat.says("hi") == ["Lookup failed (None)."]
    assert "timed out" in chat.execution.step_results["lookup"]["error"]


def test_no_connection_goes_to_fail(tmp_path, http):
    chat = chat_for(tmp_path, http_flow("http://127.0.0.1:9", "method: GET"), http)
    assert chat.says("hi") == ["Lookup failed (None)."]
    assert chat.execution.step_results["lookup"]["status"] is None


def test_the_json_body_is_built_from_data_and_keeps_types(tmp_path, api, http):
    api.answer("/orders/A-42", {"state": "created"})
    request = """\
        method: POST
        json:
          phone: "{{ contact.phone }}"
          count: "{{ vars.count }}"
          note: "{{ input.text }}"
          fixed: [1, "two"]
          nested: {order: "{{ vars.order }}"}
    """
    chat = chat_for(tmp_path, http_flow(api.base_url, request), http)
    tricky = 'say "hi", {"admin": true} \\ {{ 7 * 7 }}'
    chat.says(tricky)
    assert api.requests[0]["json"] == {
        "phone": "+15551230001",
        "count": 3,
        "note": tricky,  # what the contact typed stays data: no JSON injection, no template
        "fixed": [1, "two"],
        "nested": {"order": "A-42"},
    }
    assert api.requests[0]["headers"]["Content-Type"] == "application/json"


def test_a_form_body_and_headers_with_an_allowed_secret(tmp_path, api, http):
    api.answer("/orders/A-42", {"state": "ok"})
    request = """\
        method: POST
        headers: {Authorization: "Bearer {{ env.SHOP_TOKEN }}", X-Order: "{{ vars.order }}"}
        form: {phone: "{{ contact.phone }}", count: "{{ vars.count }}"}
    """
    flow, problems = parse_flow(textwrap.dedent(http_flow(api.base_url, request)), "shop.yaml")
    assert problems == [] and flow is not None
    templates = Templates(env_names=frozenset({"SHOP_TOKEN"}))
    assert validate_flows([flow], templates) == []
    chat = chat_for(
        tmp_path, http_flow(api.base_url, "method: GET"), http, {"SHOP_TOKEN": "s3cret"}
    )
    chat.runner.flows = FlowSet({"shop": flow})
    assert chat.says("hi") == ["200: ok"]
    sent = api.requests[0]
    assert sent["form"] == {"phone": "+15551230001", "count": "3"}
    assert sent["headers"]["Authorization"] == "Bearer s3cret"
    assert sent["headers"]["X-Order"] == "A-42"


def test_save_as_keeps_the_answer_and_without_success_next_is_followed(tmp_path, api, http):
    api.answer("/orders/A-42", {"state": "ok"})
    flow = http_flow(api.base_url, "method: GET", extra="save_as: order_info").replace(
        "        success: found\n", "        next: found\n"
    )
    chat = chat_for(tmp_path, flow, http)
    assert chat.says("hi") == ["200: ok"]
    assert chat.vars["order_info"] == {"state": "ok"}


def test_without_fail_a_failed_request_answers_the_fallback(tmp_path, api, http):
    api.answer("/orders/A-42", {}, status=503)
    flow = http_flow(api.base_url, "method: GET").replace("        fail: sorry\n", "")
    flow = flow.replace("      sorry:\n", "      unused_sorry:\n")
    flow = flow.replace("        success: found\n", "        success: found\n        next: found\n")
    parsed, _ = parse_flow(textwrap.dedent(flow), "shop.yaml")
    assert parsed is not None
    parsed.steps.pop("unused_sorry")
    chat = Chat(tmp_path, http_flow(api.base_url, "method: GET"))
    chat.runner.flows = FlowSet({"shop": parsed})
    chat.runner.http = http
    result = chat.send("hi")
    assert [reply.text for reply in result.replies] == [FALLBACK]
    assert result.error is not None and "answered 503" in result.error.reason


def test_without_an_http_client_the_step_fails_clearly(tmp_path):
    chat = Chat(tmp_path, http_flow("https://api.example.org", "method: GET"))
    assert chat.says("hi") == ["Lookup failed (None)."]
    assert "no HTTP client" in chat.execution.step_results["lookup"]["error"]


def test_env_names_outside_the_allowlist_and_env_elsewhere_are_flow_problems(tmp_path):
    flow_text = """
    id: leaky
    trigger: {default: true}
    start: call_api
    steps:
      call_api:
        http:
          url: "https://api.example.org/?key={{ env.DATABASE_URL }}"
          headers: {Authorization: "Bearer {{ env.SHOP_TOKEN }}"}
        next: tell
      tell:
        say: "{{ env.SHOP_TOKEN }}"
    """
    flow, problems = parse_flow(textwrap.dedent(flow_text), "leaky.yaml")
    assert problems == [] and flow is not None
    found = validate_flows([flow], Templates(env_names=frozenset({"SHOP_TOKEN"})))
    messages = [(problem.line, problem.message) for problem in found]
    assert (8, "uses env.DATABASE_URL, which HTTP_ENV_ALLOWLIST does not list") in messages
    assert (12, "uses unknown name 'env'") in messages
    assert not any("SHOP_TOKEN" in message for line, message in messages if line == 9)


@pytest.mark.parametrize(
    ("request_yaml", "word"),
    [
        ("method: GET\njson: {a: 1}", "GET request has no body"),
        ("method: POST\njson: {a: 1}\nform: {b: '2'}", "either `json` or `form`"),
        ("timeout: 30", "less than or equal to 10"),
        ("method: FETCH", "GET"),
    ],
)
def test_bad_requests_are_shape_problems(request_yaml, word):
    flow_text = http_flow("https://api.example.org", request_yaml)
    flow, problems = parse_flow(textwrap.dedent(flow_text), "shop.yaml")
    assert flow is None
    assert any(word in problem.message for problem in problems), problems


def test_the_port_reports_no_answer_as_http_error(http):
    with pytest.raises(HTTPError):
        http.request("GET", "http://127.0.0.1:9/", headers={}, timeout=1)
    with pytest.raises(HTTPError):
        http.request("GET", "not a url", headers={}, timeout=1)


def test_allowed_env_reads_only_listed_names():
    environ = {"SHOP_TOKEN": "a", "OTHER": "b", "EMPTY": ""}
    assert env_names("SHOP_TOKEN, EMPTY  MISSING") == {"SHOP_TOKEN", "EMPTY", "MISSING"}
    assert allowed_env("SHOP_TOKEN,EMPTY,MISSING", environ) == {"SHOP_TOKEN": "a"}
    assert allowed_env(None, environ) == {}


def test_query_parameters_go_in_the_query_string(tmp_path, api, http):
    # Studio sends a GET request's parameters as the query string (issue 13, item 4).
    api.answer("/orders/A-42", {"state": "packed"})
    request = """\
    method: GET
    query: {caller: "{{ contact.phone }}", n: "{{ vars.count }}"}
    """
    chat = chat_for(tmp_path, http_flow(api.base_url, request), http)
    assert chat.says("hi") == ["200: packed"]
    assert api.requests[0]["query"] == {"caller": chat.contact.phone, "n": "3"}


def test_a_json_text_body_is_rendered_then_sent_as_json(tmp_path, api, http):
    api.answer("/orders/A-42", {"state": "noted"})
    request = """\
    method: POST
    json_text: '{"order": "{{ vars.order }}", "count": {{ vars.count }}}'
    """
    chat = chat_for(tmp_path, http_flow(api.base_url, request), http)
    assert chat.says("hi") == ["200: noted"]
    assert api.requests[0]["json"] == {"order": "A-42", "count": 3}


def test_a_json_text_body_that_does_not_parse_takes_fail(tmp_path, api, http):
    request = """\
    method: POST
    json_text: '{"order": {{ vars.order }}}'
    """
    chat = chat_for(tmp_path, http_flow(api.base_url, request), http)
    assert chat.says("hi") == ["Lookup failed (None)."]
    assert api.requests == []


def test_a_text_answer_keeps_its_raw_body(tmp_path, api, http):
    # Studio keeps `body` for any answer, `parsed` only for JSON (issue 13, item 7).
    api.answer("/orders/A-42", "OK thanks", content_type="text/plain")
    chat = chat_for(tmp_path, http_flow(api.base_url, "method: GET"), http)
    chat.says("hi")
    assert chat.execution.step_results["lookup"] == {
        "status": 200,
        "response": None,
        "body": "OK thanks",
    }
