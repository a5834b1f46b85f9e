"""The engine's `LLM` port on the official ``openai`` client.

Works with OpenAI and with any OpenAI-compatible server (vLLM, Ollama, LiteLLM,
the test fake in ``tests/fakes/openai_server.py``) through ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from engine.ports import (
    LLM,
    LLMError,
    LLMRequest,
    LLMResponse,
    LLMUnavailable,
    LLMUsage,
    ModerationError,
    ModerationResult,
)

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_USER_CHARS",
    "DEFAULT_TIMEOUT",
    "OpenAILLM",
    "TranscriptionError",
    "UnconfiguredLLM",
    "openai_llm",
]

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 6.0
"""Seconds per HTTP attempt; the ``openai`` client's own default is 600 s."""

DEFAULT_MAX_RETRIES = 1
"""Retries the ``openai`` client makes on connection errors, 408, 409, 429 and 5xx."""

DEFAULT_MAX_USER_CHARS = 8192
"""Characters of one user message sent to the model: twice WhatsApp's 4,096-character
message, room for a prompt template around the longest message a contact can send."""

TRUNCATED = " [...]"
"""What ends a user message that was cut to `OpenAILLM.max_user_chars`."""

UNCONFIGURED_MESSAGE = (
    "No LLM is configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for an "
    "OpenAI-compatible server other than OpenAI's)."
)


class TranscriptionError(Exception):
    """Audio could not be transcribed (the API failed after retries, or answered nothing)."""


class OpenAILLM:
    """An `engine.ports.LLM` backed by the Chat Completions API.

    The timeout defaults to 6 s per attempt (the ``openai`` client's own default
    is 600 s) so that a turn run inline in a Twilio webhook, one retry included,
    stays inside Twilio's 15 s limit. Retries are the client's own (connection
    errors, 408, 409, 429 and 5xx, with a short exponential backoff or the
    server's ``retry-after``).

    The API key is handed to the client and never logged nor kept elsewhere.

    Args:
        api_key: The API key, or None for servers that need none (a dummy key
            is sent, as the client requires one).
        base_url: The API root, e.g. ``http://localhost:8000/v1``, or None for
            OpenAI's (or the ``OPENAI_BASE_URL`` environment variable).
        timeout: Seconds per HTTP attempt.
        max_retries: How many times the client retries a failed attempt.
        max_user_chars: The most characters of one ``user`` message (what the
            contact wrote, in the history or the turn's prompt) sent to the
            model; a longer one is cut and ends with `TRUNCATED`. Bounds what a
            contact can make a request cost (and the context it can flood).
    """

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_user_chars: int = DEFAULT_MAX_USER_CHARS,
    ) -> None:
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_user_chars = max_user_chars
        import openai  # here, not at the top: importing it takes a second and a half

        self._client = openai.OpenAI(
            api_key=api_key or "unused",
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )

    @property
    def base_url(self) -> str:
        """The API root the client talks to."""
        return str(self._client.base_url)

    def __repr__(self) -> str:
        return f"OpenAILLM(base_url={self.base_url!r}, timeout={self.timeout!r})"

    def close(self) -> None:
        """Close the client's HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _capped(self, message: dict[str, str]) -> dict[str, str]:
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, str):
            return message
        if len(content) <= self.max_user_chars:
            return message
        return {**message, "content": content[: self.max_user_chars] + TRUNCATED}

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Run one chat completion.

        Args:
            request: The model, messages, temperature and, for structured
                output, the JSON Schema the answer must follow (sent as a
                ``json_schema`` response format with ``strict: true``); with a
                ``timeout`` (the turn's time left), each attempt gets at most
                that, and retries only when they fit in it.

        Returns:
            The answer's text, its usage (the model the API reports, tokens and
            the wall time in milliseconds, retries included) and, under
            structured output, the parsed JSON object as ``data``.

        Raises:
            LLMError: The API failed after the client's retries (HTTP error,
                connection error, timeout), the model refused, the answer was
                empty, or under structured output it was cut short
                (``finish_reason == "length"``) or is not a JSON object.
        """
        structured = request.output_schema is not None
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [self._capped(message) for message in request.messages],
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if structured:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.output_schema,
                    "strict": True,
                },
            }

        import openai  # already imported by __init__: a dictionary look-up
        from openai.types.chat import ChatCompletion

        client = self._client
        if request.timeout is not None:
            # The turn's deadline: each attempt within what is left, and a
            # retry only when a whole attempt still fits after the first.
            attempt = min(self.timeout, request.timeout)
            retries = self.max_retries if attempt * (self.max_retries + 1) <= request.timeout else 0
            client = client.with_options(timeout=attempt, max_retries=retries)
        started = time.perf_counter()
        try:
            # The client's own request path (retries, timeouts, errors, typed
            # answer), without `chat.completions.create`'s walk of the
            # parameters' TypedDicts: the body is plain JSON already, and
            # that walk was two fifths of the call's CPU.
            response = client.post(
                "/chat/completions", body=kwargs, cast_to=ChatCompletion, stream=False
            )
        except openai.APITimeoutError as exc:
            raise LLMError(
                f"LLM request to model {request.model!r} timed out "
                f"(timeout {self.timeout:g} s, {self.max_retries} retries)"
            ) from exc
        except openai.APIConnectionError as exc:
            raise LLMError(
                f"LLM request to model {request.model!r} could not connect: {exc}"
            ) from exc
        except openai.APIStatusError as exc:
            raise LLMError(
                f"LLM request to model {request.model!r} failed with HTTP "
                f"{exc.status_code} ({type(exc).__name__}): {_error_message(exc)}"
            ) from exc
        except openai.APIError as exc:
            raise LLMError(
                f"LLM request to model {request.model!r} failed ({type(exc).__name__}): {exc}"
            ) from exc
        latency_ms = int((time.perf_counter() - started) * 1000)

        if not response.choices:
            raise LLMError(f"LLM answer from model {response.model!r} has no choices")
        choice = response.choices[0]
        message = choice.message
        if message.refusal:
            raise LLMError(f"LLM model {response.model!r} refused: {message.refusal}")
        if structured and choice.finish_reason == "length":
            raise LLMError(
                f"LLM structured answer from model {response.model!r} was cut short "
                "(finish_reason 'length')"
            )
        text = message.content
        if not text:
            raise LLMError(
                f"LLM answer from model {response.model!r} is empty "
                f"(finish_reason {choice.finish_reason!r})"
            )

        data: dict[str, Any] | None = None
        if structured:
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise LLMError(
                    f"LLM structured answer from model {response.model!r} is not valid JSON: {exc}"
                ) from exc
            if not isinstance(parsed, dict):
                raise LLMError(
                    f"LLM structured answer from model {response.model!r} is not a JSON "
                    f"object but {type(parsed).__name__}"
                )
            data = parsed

        usage = response.usage
        result = LLMResponse(
            text=text,
            usage=LLMUsage(
                model=response.model,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                latency_ms=latency_ms,
            ),
            data=data,
        )
        log.debug(
            "LLM call: model=%s prompt_tokens=%d completion_tokens=%d latency_ms=%d",
            result.usage.model,
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            latency_ms,
        )
        return result

    def moderate(self, text: str, model: str, timeout: float | None) -> ModerationResult:
        """Classify `text` with the moderation endpoint (`engine.ports.Moderation`).

        Args:
            text: The text (cut to `max_user_chars`, as for the model).
            model: The moderation model, e.g. ``omni-moderation-latest``.
            timeout: The most seconds the call may take (the turn's time left).

        Returns:
            The first result's ``categories`` and ``category_scores``.

        Raises:
            ModerationError: the call failed after the client's retries, or the
                answer had no result.
        """
        import openai

        client = self._client
        if timeout is not None:
            attempt = min(self.timeout, timeout)
            retries = self.max_retries if attempt * (self.max_retries + 1) <= timeout else 0
            client = client.with_options(timeout=attempt, max_retries=retries)
        try:
            answer = client.moderations.create(model=model, input=text[: self.max_user_chars])
        except openai.APIStatusError as exc:
            raise ModerationError(f"HTTP {exc.status_code}: {_error_message(exc)}") from exc
        except openai.APIError as exc:
            raise ModerationError(f"{type(exc).__name__}: {exc}") from exc
        if not answer.results:
            raise ModerationError("the moderation endpoint returned no result")
        result = answer.results[0]
        categories = result.categories.model_dump(by_alias=True)
        scores = result.category_scores.model_dump(by_alias=True)
        return ModerationResult(
            categories={name: bool(value) for name, value in categories.items()},
            scores={name: float(value or 0.0) for name, value in scores.items()},
        )

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        content_type: str,
        model: str,
        language: str | None,
        timeout: float | None,
    ) -> str:
        """Speech to text with ``/v1/audio/transcriptions`` (`conversation.voice.Transcriber`).

        Args:
            audio: The audio file's bytes (sent as a multipart upload).
            filename: Its name; the extension tells the API the format.
            content_type: Its MIME type.
            model: ``gpt-4o-mini-transcribe``, ``whisper-1``...
            language: ISO-639-1 hint, or None.
            timeout: The most seconds the call may take, retries included.

        Returns:
            The transcript's text.

        Raises:
            TranscriptionError: the call failed after the
                client's retries.
        """
        import openai

        client = self._client
        if timeout is not None:
            retries = self.max_retries if timeout >= 2 * DEFAULT_TIMEOUT else 0
            client = client.with_options(timeout=timeout, max_retries=retries)
        extra: dict[str, Any] = {"language": language} if language else {}
        try:
            answer = client.audio.transcriptions.create(
                model=model, file=(filename, audio, content_type), response_format="json", **extra
            )
        except openai.APIStatusError as exc:
            raise TranscriptionError(f"HTTP {exc.status_code}: {_error_message(exc)}") from exc
        except openai.APIError as exc:
            raise TranscriptionError(f"{type(exc).__name__}: {exc}") from exc
        return str(answer.text)


class UnconfiguredLLM:
    """The `engine.ports.LLM` used when no LLM is configured: every call fails.

    The app still starts and flows without LLM steps still run; an LLM step
    fails with a message saying what to configure.
    """

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Refuse the call.

        Args:
            request: Ignored.

        Returns:
            Never returns.

        Raises:
            LLMUnavailable: Always.
        """
        raise LLMUnavailable(UNCONFIGURED_MESSAGE)

    def moderate(self, text: str, model: str, timeout: float | None) -> ModerationResult:
        """Refuse the check (moderation's ``on_error`` applies).

        Raises:
            ModerationError: Always.
        """
        raise ModerationError(UNCONFIGURED_MESSAGE)

    def transcribe(self, audio: bytes, filename: str, content_type: str, *_: Any) -> str:
        """Refuse the transcription (the contact gets the voice notes' reply).

        Raises:
            TranscriptionError: Always.
        """
        raise TranscriptionError(UNCONFIGURED_MESSAGE)


def openai_llm(
    *,
    api_key: str | None,
    base_url: str | None,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int = DEFAULT_MAX_RETRIES,
    max_user_chars: int = DEFAULT_MAX_USER_CHARS,
    scripted_demo: bool = False,
) -> LLM:
    """Build the LLM the settings ask for.

    Args:
        api_key: ``OPENAI_API_KEY``, or None.
        base_url: ``OPENAI_BASE_URL`` (any OpenAI-compatible server), or None.
        timeout: Seconds per HTTP attempt (``OPENAI_TIMEOUT``).
        max_retries: Retries of a failed attempt (``OPENAI_MAX_RETRIES``).
        max_user_chars: The most characters of one user message sent to the
            model (``PROMPT_MAX_CONTACT_CHARS``); the rest is cut.
        scripted_demo: With no model configured, answer with the scripted
            demo model (a development run) rather than fail.

    Returns:
        The built-in `integrations.scripted.ScriptedDemoLLM` when `base_url` is
        ``scripted``, or when neither `api_key` nor `base_url` is set and
        `scripted_demo` (a development run that is not a test: ``make run``,
        ``flask chat``); an `OpenAILLM` when either is set; else an
        `UnconfiguredLLM` whose calls raise `LLMUnavailable` (production
        without a model, the tests).
    """
    from integrations.scripted import SCRIPTED_URL, ScriptedDemoLLM

    if base_url == SCRIPTED_URL:
        return ScriptedDemoLLM()
    if not api_key and not base_url:
        if scripted_demo:
            return ScriptedDemoLLM()  # a newcomer's first `make run` shows a whole conversation
        return UnconfiguredLLM()
    return OpenAILLM(
        api_key=api_key or None,
        base_url=base_url or None,
        timeout=timeout,
        max_retries=max_retries,
        max_user_chars=max_user_chars,
    )


def _error_message(exc: openai.APIStatusError) -> str:
    """The ``error.message`` of an API error body, else the exception's text."""
    body = exc.body
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    return str(exc)
