"""`integrations.openai.OpenAILLM` through the real ``openai`` client, against a fake server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import openai
import pytest

from config import ConfigError, load_settings
from engine.ports import LLMError, LLMRequest, LLMUnavailable
from integrations.openai import OpenAILLM, UnconfiguredLLM, openai_llm
from tests.fakes.openai_server import Error, FakeOpenAI, Reply

SCHEMA = {
    "type": "object",
    "properties": {"intent": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["intent", "confidence"],
    "additionalProperties": False,
}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running fake OpenAI server, stopped after the test."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def make_llm(fake_openai: FakeOpenAI) -> Iterator[Callable[..., OpenAILLM]]:
    """Build `OpenAILLM`s on the fake server; their clients are closed after the test."""
    made: list[OpenAILLM] = []

    def make(timeout: float = 5.0, max_retries: int = 0) -> OpenAILLM:
        llm = OpenAILLM(
            api_key="sk-test-secret",
            base_url=fake_openai.base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()


def chat(text: str = "Hi there", **kwargs: object) -> LLMRequest:
    return LLMRequest(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are a booking assistant."},
            {"role": "user", "content": text},
        ],
        **kwargs,  # type: ignore[arg-type]
    )


def test_free_text_returns_text_and_usage(fake_openai, make_llm):
    fake_openai.script("Hello! How can I help?")

    response = make_llm().complete(chat(temperature=0.2))

    assert response.text == "Hello! How can I help?"
    assert response.data is None
    assert response.usage.model == "gpt-4o-mini"
    # The fake counts a quarter of the characters: 37 prompt, 22 completion.
    assert response.usage.prompt_tokens == 10
    assert response.usage.completion_tokens == 6
    assert response.usage.latency_ms >= 0
    [sent] = fake_openai.requests
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"][1] == {"role": "user", "content": "Hi there"}
    assert sent["temperature"] == 0.2
    assert "response_format" not in sent
    assert fake_openai.request_headers[0]["authorization"] == "Bearer sk-test-secret"


def test_temperature_none_is_omitted(fake_openai, make_llm):
    make_llm().complete(chat())

    assert "temperature" not in fake_openai.requests[0]


def test_structured_output_sends_strict_schema_and_returns_data(fake_openai, make_llm):
    fake_openai.script({"intent": "book", "confidence": 0.9})

    response = make_llm().complete(chat(output_schema=SCHEMA, schema_name="intent"))

    assert response.data == {"intent": "book", "confidence": 0.9}
    assert json.loads(response.text) == response.data
    assert fake_openai.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "intent", "schema": SCHEMA, "strict": True},
    }


def test_missing_usage_counts_zero_tokens(fake_openai, make_llm):
    fake_openai.script(Reply("Hi", usage=False, model="gpt-4o-mini-2024-07-18"))

    response = make_llm().complete(chat())

    assert response.usage.model == "gpt-4o-mini-2024-07-18"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (0, 0)


def test_server_error_is_retried_once_then_succeeds(fake_openai, make_llm):
    fake_openai.script(Error(500), "Recovered")

    response = make_llm(max_retries=1).complete(chat())

    assert response.text == "Recovered"
    assert len(fake_openai.requests) == 2


def test_server_error_twice_raises(fake_openai, make_llm):
    fake_openai.script(Error(500), Error(500))

    with pytest.raises(LLMError, match="HTTP 500") as caught:
        make_llm(max_retries=1).complete(chat())

    assert isinstance(caught.value.__cause__, openai.InternalServerError)
    assert "server had an error" in str(caught.value)
    assert len(fake_openai.requests) == 2


def test_rate_limit_without_retries_raises(fake_openai, make_llm):
    fake_openai.script(Error(429))

    with pytest.raises(LLMError, match="HTTP 429") as caught:
        make_llm(max_retries=0).complete(chat())

    assert isinstance(caught.value.__cause__, openai.RateLimitError)
    assert "sk-test-secret" not in str(caught.value)
    assert len(fake_openai.requests) == 1


def test_timeout_raises(fake_openai, make_llm):
    fake_openai.delay_seconds = 3.0

    with pytest.raises(LLMError, match="timed out") as caught:
        make_llm(timeout=0.3, max_retries=0).complete(chat())

    assert isinstance(caught.value.__cause__, openai.APITimeoutError)


def test_connection_refused_raises(fake_openai):
    port = fake_openai.port
    fake_openai.stop()

    llm = OpenAILLM(api_key=None, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with llm, pytest.raises(LLMError, match="could not connect"):
        llm.complete(chat())


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("not json {", "not valid JSON"),
        ('["a", "list"]', "not a JSON object"),
        (Reply('{"intent": "bo', finish_reason="length"), "cut short"),
        (Reply(None, refusal="I'm very sorry, but I can't assist with that."), "refused"),
        (Reply(""), "empty"),
    ],
)
def test_bad_structured_answers_raise(fake_openai, make_llm, reply, message):
    fake_openai.script(reply)

    with pytest.raises(LLMError, match=message):
        make_llm().complete(chat(output_schema=SCHEMA))


def test_empty_free_text_raises(fake_openai, make_llm):
    fake_openai.script(Reply(None))

    with pytest.raises(LLMError, match="empty"):
        make_llm().complete(chat())


def test_unconfigured_llm_raises_unavailable():
    llm = openai_llm(api_key=None, base_url=None)

    assert isinstance(llm, UnconfiguredLLM)
    with pytest.raises(LLMUnavailable, match="set OPENAI_API_KEY"):
        llm.complete(chat())


def test_the_settings_build_an_openai_llm(fake_openai):
    settings = load_settings(
        {"OPENAI_BASE_URL": fake_openai.base_url, "OPENAI_TIMEOUT": "2.5", "OPENAI_MAX_RETRIES": 0}
    )
    llm = openai_llm(
        api_key=None,
        base_url=settings.openai_base_url,
        timeout=settings.openai_timeout,
        max_retries=settings.openai_max_retries,
    )
    try:
        assert isinstance(llm, OpenAILLM)
        assert (llm.timeout, llm.max_retries) == (2.5, 0)
        assert llm.complete(chat()).text == "OK"
        assert fake_openai.request_headers[0]["authorization"] == "Bearer unused"
    finally:
        llm.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [("OPENAI_TIMEOUT", "soon"), ("OPENAI_TIMEOUT", "0"), ("OPENAI_MAX_RETRIES", "-1")],
)
def test_malformed_openai_settings_are_named(name, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({"OPENAI_API_KEY": "sk-x", name: value})
    assert raised.value.variables == [name]
