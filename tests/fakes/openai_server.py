"""An OpenAI-compatible HTTP server for tests, driven by the real ``openai`` client.

The server listens on 127.0.0.1 on a free port in a background thread and
answers ``POST /v1/chat/completions`` with scripted replies, in the shapes the
real API uses (see ``shared/fixtures/openai`` beside the project)::

    with FakeOpenAI() as fake:
        fake.script("Hello!", {"intent": "book"}, Error(500))
        llm = OpenAILLM(api_key="sk-test", base_url=fake.base_url)
        ...
        assert fake.requests[0]["model"] == "gpt-4o-mini"

Each request is served on its own connection (HTTP/1.0), so `FakeOpenAI.stop`
can wait for every handler thread and leave no socket open.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

__all__ = ["Error", "FakeOpenAI", "Reply", "prompt_of", "schema_name_of"]

_DEFAULT_ERRORS: dict[int, dict[str, Any]] = {
    400: {
        "message": "Invalid request.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    },
    401: {
        "message": "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    },
    404: {
        "message": "The model does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    },
    429: {
        "message": "Rate limit reached for {model} on requests per min (RPM): Limit 3, "
        "Used 3, Requested 1. Please try again in 20s.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    },
    500: {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    },
}


@dataclass(frozen=True)
class Error:
    """A scripted HTTP error answer.

    Attributes:
        status: The HTTP status, e.g. 429 or 500.
        body: None for the usual OpenAI error envelope for that status
            (``{"error": {"message", "type", "param", "code"}}``); a dict with an
            ``error`` key to send verbatim; any other dict to override fields of
            the default ``error`` object.
        headers: Extra response headers (e.g. ``{"retry-after-ms": "0"}`` or
            ``{"x-should-retry": "false"}``); they override the server's
            ``retry-after-ms`` (see `FakeOpenAI.retry_after_ms`).
    """

    status: int
    body: dict[str, Any] | None = None
    headers: Mapping[str, str] | None = None

    def envelope(self, model: str) -> dict[str, Any]:
        """The JSON body to answer.

        Args:
            model: The requested model, for messages that name it.

        Returns:
            The error envelope.
        """
        if self.body is not None and "error" in self.body:
            return self.body
        default = _DEFAULT_ERRORS.get(
            self.status,
            {
                "message": f"Error {self.status}.",
                "type": "server_error" if self.status >= 500 else "invalid_request_error",
                "param": None,
                "code": None,
            },
        )
        error = {**default, "message": default["message"].format(model=model)}
        error.update(self.body or {})
        return {"error": error}


@dataclass(frozen=True)
class Reply:
    """A scripted completion with more control than a plain str or dict.

    Attributes:
        content: The message content: a str as is, a dict JSON-encoded, or None
            (as with a refusal or tool calls).
        refusal: The message's ``refusal`` text, or None.
        finish_reason: ``stop``, ``length``, ``content_filter`` or ``tool_calls``.
        model: The model to report, or None to echo the request's model.
        usage: Whether to include the ``usage`` object.
    """

    content: str | dict[str, Any] | None = "OK"
    refusal: str | None = None
    finish_reason: str = "stop"
    model: str | None = None
    usage: bool = True


ScriptedReply = str | dict[str, Any] | Error | Reply


class _QuietHandler(WSGIRequestHandler):
    """One request per connection, no access log, and no idle connection kept."""

    protocol_version = "HTTP/1.0"
    timeout = 10

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Skip the access log line."""


class FakeOpenAI:
    """A fake OpenAI Chat Completions server on 127.0.0.1.

    Args:
        default_reply: The answer when no scripted reply is queued.
        delay_seconds: Seconds to wait before answering each request (for
            timeout tests); `stop` cuts the wait short.
        retry_after_ms: The ``retry-after-ms`` header sent with error answers,
            so that the client's retries wait that long instead of its ~0.5-1 s
            backoff; None to send none.

    Attributes:
        requests: The JSON bodies of the chat completion requests received, in
            order (error answers included).
        request_headers: The headers of those requests, lower-cased names.
        default_reply: See Args.
        delay_seconds: See Args.
        retry_after_ms: See Args.
        on_request: Called with each request's JSON body before it is
            answered, in the server's thread (a test looks at, or breaks, the
            world while the model "thinks"); None for nothing.
        answer: Computes the answer to a request from its JSON body when no
            scripted reply is queued (a fake model that answers some prompts
            well and others badly, a judge); None for `default_reply`.
            `prompt_of` and `schema_name_of` read a body.
        moderation_requests: The JSON bodies of ``POST /v1/moderations``
            requests, in order (kept apart from `requests`).
        moderate: Computes the answer to a moderation request from its input
            text: the flagged categories with their scores (``{"self-harm":
            0.93}``), or an `Error`; None (the default) flags nothing.
        transcription_requests: ``{"model", "filename", "content_type",
            "audio", "language", "response_format"}`` of each ``POST
            /v1/audio/transcriptions`` (a multipart upload), in order.
        transcribe: Computes the transcript from the audio's bytes, or an
            `Error`; None (the default) answers ``"(transcript)"``.
    """

    def __init__(
        self,
        default_reply: ScriptedReply = "OK",
        delay_seconds: float = 0.0,
        retry_after_ms: float | None = 10,
    ) -> None:
        self.default_reply = default_reply
        self.delay_seconds = delay_seconds
        self.retry_after_ms = retry_after_ms
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.on_request: Callable[[dict[str, Any]], None] | None = None
        self.answer: Callable[[dict[str, Any]], ScriptedReply] | None = None
        self.moderation_requests: list[dict[str, Any]] = []
        self.moderate: Callable[[str], Mapping[str, float] | Error] | None = None
        self.transcription_requests: list[dict[str, Any]] = []
        self.transcribe: Callable[[bytes], str | Error] | None = None
        self._queue: deque[ScriptedReply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> FakeOpenAI:
        """Start serving in a background thread.

        Returns:
            The server itself.

        Raises:
            RuntimeError: The server is already running.
        """
        if self._server is not None:
            raise RuntimeError("FakeOpenAI is already running")
        self._stopping.clear()
        server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        # Track handler threads so that server_close() joins them.
        server.daemon_threads = False
        server.block_on_close = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut delays short and wait for every handler thread.

        Does nothing when the server is not running.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on.

        Raises:
            RuntimeError: The server is not running.
        """
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running")
        return self._server.port

    @property
    def base_url(self) -> str:
        """The API root for the client, e.g. ``http://127.0.0.1:PORT/v1``.

        Raises:
            RuntimeError: The server is not running.
        """
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting -----------------------------------------------------------

    def script(self, *replies: ScriptedReply) -> FakeOpenAI:
        """Queue replies, answered one per request in order.

        Args:
            *replies: Each a str (the message content), a dict (JSON-encoded as
                the content, for structured output), a `Reply` or an `Error`.

        Returns:
            The server itself.
        """
        with self._lock:
            self._queue.extend(replies)
        return self

    def reset(self) -> FakeOpenAI:
        """Forget the script and the requests; no delay, default reply ``OK``.

        Returns:
            The server itself.
        """
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.request_headers.clear()
            self.moderation_requests.clear()
            self.transcription_requests.clear()
        self.moderate = None
        self.transcribe = None
        self.delay_seconds = 0.0
        self.on_request = None
        self.answer = None
        self.default_reply = "OK"
        return self

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._lock:
            return len(self._queue)

    # -- HTTP ----------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._handle(request)
        finally:
            request.close()  # an upload's temporary file, too
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if request.path == "/v1/moderations" and request.method == "POST":
            return self._moderation(request)
        if request.path == "/v1/audio/transcriptions" and request.method == "POST":
            return self._transcription(request)
        if request.path != "/v1/chat/completions":
            return _json_response(
                404,
                {
                    "error": {
                        "message": f"Invalid URL ({request.method} {request.path})",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        if request.method != "POST":
            return _json_response(405, Error(405, {"message": "Method not allowed."}).envelope(""))
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _json_response(
                400,
                Error(
                    400,
                    {"message": "We could not parse the JSON body of your request."},
                ).envelope(""),
            )

        with self._lock:
            self.requests.append(body)
            self.request_headers.append({k.lower(): v for k, v in request.headers.items()})
            queued = self._queue.popleft() if self._queue else None
            number = next(self._ids)
            hook = self.on_request
            answer = self.answer
        if queued is not None:
            reply = queued
        elif answer is not None:
            reply = answer(body)
        else:
            reply = self.default_reply

        if hook is not None:  # a test's look at the world while the model "thinks"
            hook(body)

        if self.delay_seconds > 0:
            self._stopping.wait(self.delay_seconds)

        model = str(body.get("model") or "fake-model")
        headers = {"x-request-id": f"req_fake{number:024d}"}
        if isinstance(reply, Error):
            if self.retry_after_ms is not None:
                headers["retry-after-ms"] = f"{self.retry_after_ms:g}"
            headers.update(reply.headers or {})
            return _json_response(reply.status, reply.envelope(model), headers)
        if not isinstance(reply, Reply):
            reply = Reply(content=reply)
        return _json_response(200, _completion(number, model, body, reply), headers)

    def _moderation(self, request: Request) -> Response:
        """``POST /v1/moderations``: OpenAI's moderation object (``results[]``)."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "input" not in body:
            return _json_response(400, Error(400, {"param": "input"}).envelope(""))
        with self._lock:
            self.moderation_requests.append(body)
            number = next(self._ids)
            moderate = self.moderate
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = []
        for text in texts:
            text = text if isinstance(text, str) else str(text.get("text", ""))
            flagged = moderate(text) if moderate is not None else {}
            if isinstance(flagged, Error):
                return _json_response(flagged.status, flagged.envelope(""))
            results.append(_moderation_result(flagged))
        model = str(body.get("model") or "omni-moderation-latest")
        return _json_response(
            200, {"id": f"modr-fake{number:024d}", "model": model, "results": results}
        )

    def _transcription(self, request: Request) -> Response:
        """``POST /v1/audio/transcriptions``: multipart ``file`` and ``model``; ``{"text"}``."""
        upload = request.files.get("file")
        model = request.form.get("model")
        if upload is None or not model:
            missing = "file" if upload is None else "model"
            return _json_response(400, Error(400, {"param": missing}).envelope(""))
        audio = upload.read()
        with self._lock:
            self.transcription_requests.append(
                {
                    "model": model,
                    "filename": upload.filename,
                    "content_type": upload.content_type,
                    "audio": audio,
                    "language": request.form.get("language"),
                    "response_format": request.form.get("response_format"),
                }
            )
            transcribe = self.transcribe
        text = transcribe(audio) if transcribe is not None else "(transcript)"
        if isinstance(text, Error):
            return _json_response(text.status, text.envelope(model))
        return _json_response(200, {"text": text})


#: The categories of ``omni-moderation-latest``, and the input types each applies to.
MODERATION_CATEGORIES: dict[str, list[str]] = {
    "harassment": ["text"],
    "harassment/threatening": ["text"],
    "hate": ["text"],
    "hate/threatening": ["text"],
    "illicit": ["text"],
    "illicit/violent": ["text"],
    "self-harm": ["text", "image"],
    "self-harm/instructions": ["text", "image"],
    "self-harm/intent": ["text", "image"],
    "sexual": ["text", "image"],
    "sexual/minors": ["text"],
    "violence": ["text", "image"],
    "violence/graphic": ["text", "image"],
}


def _moderation_result(flagged: Mapping[str, float]) -> dict[str, Any]:
    """One ``results[]`` entry: every category, flagged where `flagged` names it."""
    return {
        "flagged": bool(flagged),
        "categories": {name: name in flagged for name in MODERATION_CATEGORIES},
        "category_scores": {
            name: float(flagged.get(name, 0.00012)) for name in MODERATION_CATEGORIES
        },
        "category_applied_input_types": {
            name: types if name in flagged else [] for name, types in MODERATION_CATEGORIES.items()
        },
    }


def _completion(number: int, model: str, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """A ``chat.completion`` body like the API's, with character-based token counts."""
    content = reply.content
    if isinstance(content, dict):
        content = json.dumps(content)
    completion: dict[str, Any] = {
        "id": f"chatcmpl-fake{number:025d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": reply.refusal,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "service_tier": "default",
        "system_fingerprint": "fp_fake0000",
    }
    if reply.usage:
        prompt_tokens = _tokens(_prompt_text(body.get("messages")))
        completion_tokens = _tokens(content or reply.refusal or "")
        completion["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
    return completion


def prompt_of(body: Mapping[str, Any]) -> str:
    """The content of a request's last user message ("" when there is none)."""
    messages = body.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def schema_name_of(body: Mapping[str, Any]) -> str | None:
    """The structured output's name (``response_format.json_schema.name``), or None."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    schema = response_format.get("json_schema")
    return schema.get("name") if isinstance(schema, dict) else None


def _prompt_text(messages: object) -> str:
    """All message contents of a request, joined."""
    if not isinstance(messages, list):
        return ""
    parts = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else message
        parts.append(content if isinstance(content, str) else json.dumps(content))
    return "\n".join(parts)


def _tokens(text: str) -> int:
    """A deterministic token count: a quarter of the characters, at least 1."""
    return max(1, math.ceil(len(text) / 4))


def _json_response(
    status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    response = Response(json.dumps(payload), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
