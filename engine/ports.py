"""What the engine needs from the world, as plain data and Protocols.

The engine does no I/O of its own: the execution store, the LLM and the clock
are handed to it by the caller (a web request, a Celery task or `flask chat`).
`models/` and `integrations/` implement these Protocols; tests can implement
them in a few lines.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Channel = Literal["whatsapp", "sms"]
ExecutionStatus = Literal["active", "waiting", "ended", "handed_over", "failed"]
Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Contact:
    """The person a turn is for.

    Attributes:
        id: The store's id for the contact (never the phone number, so it can be
            logged).
        phone: E.164 phone number, e.g. ``+15551234567``.
        name: The profile name WhatsApp reports (``ProfileName``), if any.
        channel: The channel of the current conversation.
    """

    id: int
    phone: str
    name: str | None = None
    channel: Channel = "sms"


@dataclass(frozen=True)
class InboundMessage:
    """One message a contact sent, as the engine sees it.

    Attributes:
        text: The message body as typed (data, never a template).
        channel: ``whatsapp`` or ``sms``.
        message_sid: Twilio's ``MessageSid`` (34 characters), or a local id.
        media: URLs of attached media (Twilio's ``MediaUrl{N}``).
        media_types: Their content types (``MediaContentType{N}``), same order.
        button: A WhatsApp quick-reply button the contact tapped:
            ``{"payload": ButtonPayload, "text": ButtonText}``, or None.
        location: A shared WhatsApp location: ``{"latitude": float,
            "longitude": float, "address": str | None, "label": str | None}``,
            or None.
        to: The number or sender it was written to (Twilio's ``To``), which
            picks among flows bound to numbers; None when unknown.
        transcribed: Whether `text` is the transcript of a voice note (the
            audio stays in `media`).
    """

    text: str
    channel: Channel = "sms"
    message_sid: str = ""
    media: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()
    button: dict[str, str] | None = None
    location: dict[str, Any] | None = None
    to: str | None = None
    transcribed: bool = False

    def as_context(self) -> dict[str, Any]:
        """The ``input`` variable of templates.

        Returns:
            ``{text, channel, media, media_types, button, location,
            transcribed}``: ``media`` is the list of URLs, ``button`` and
            ``location`` None when absent.
        """
        return {
            "text": self.text,
            "channel": self.channel,
            "media": list(self.media),
            "media_types": list(self.media_types),
            "button": dict(self.button) if self.button else None,
            "location": dict(self.location) if self.location else None,
            "transcribed": self.transcribed,
        }


@dataclass(frozen=True)
class HistoryMessage:
    """One earlier message of the conversation, oldest first in a history list.

    Attributes:
        role: ``user`` for the contact, ``assistant`` for the bot or an agent.
        content: The message text.
    """

    role: Role
    content: str


@dataclass(frozen=True)
class LLMUsage:
    """What one LLM call cost.

    Attributes:
        model: The model that answered (as the API reports it).
        prompt_tokens: Input tokens (OpenAI ``usage.prompt_tokens``).
        completion_tokens: Output tokens (OpenAI ``usage.completion_tokens``).
        latency_ms: Wall time of the call, retries included, in milliseconds.
    """

    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int


@dataclass(frozen=True)
class LLMRequest:
    """A chat completion request.

    Attributes:
        model: Model name, e.g. ``gpt-4o-mini``.
        messages: OpenAI-style messages, ``[{"role": ..., "content": ...}]``.
        temperature: Sampling temperature, 0 to 2, or None for the server default.
        output_schema: A JSON Schema (an object schema) the answer must follow
            (structured output), or None for free text.
        schema_name: Name for the schema (OpenAI ``json_schema.name``:
            ``[a-zA-Z0-9_-]``, at most 64 characters).
        timeout: The most seconds the call may take, retries included (the
            time left in the turn's deadline), or None for the client's own.
    """

    model: str
    messages: list[dict[str, str]]
    temperature: float | None = None
    output_schema: dict[str, Any] | None = None
    schema_name: str = "output"
    timeout: float | None = None


@dataclass(frozen=True)
class LLMResponse:
    """A completed LLM call.

    Attributes:
        text: The raw text of the answer (the JSON text under structured output).
        data: The parsed JSON object under structured output, else None.
        usage: Tokens and latency.
    """

    text: str
    usage: LLMUsage
    data: dict[str, Any] | None = None


class LLMError(Exception):
    """An LLM call failed (timeout, refusal, server error, bad JSON) after retries."""


class LLMUnavailable(LLMError):
    """No LLM is configured (neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL``)."""


class LLM(Protocol):
    """A chat model."""

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Run one chat completion.

        Raises:
            LLMError: the call failed after the client's retries.
        """
        ...


@dataclass(frozen=True)
class ModerationResult:
    """What a moderation endpoint says about one text (OpenAI's ``results[0]``).

    Attributes:
        categories: Category → whether the endpoint flagged it
            (e.g. ``{"self-harm": True, "violence": False}``).
        scores: Category → its score, 0 to 1 (``category_scores``).
    """

    categories: dict[str, bool]
    scores: dict[str, float]


class ModerationError(Exception):
    """A moderation call failed (timeout, server error, no client configured)."""


class Moderation(Protocol):
    """A moderation classifier (`engine.moderation` decides what its answer means)."""

    def moderate(self, text: str, model: str, timeout: float | None) -> ModerationResult:
        """Classify `text`.

        Args:
            text: The text to check.
            model: The moderation model, e.g. ``omni-moderation-latest``.
            timeout: The most seconds the call may take (the turn's time left),
                or None for the client's own.

        Raises:
            ModerationError: the call failed after the client's retries.
        """
        ...


class Clock(Protocol):
    """The time source, so tests and timers can control `now`."""

    def now(self) -> dt.datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> dt.datetime:
        """The current UTC time."""
        return dt.datetime.now(dt.UTC)


@dataclass
class ExecutionState:
    """A contact's run through one flow, as the engine reads and changes it.

    Attributes:
        flow_id: The flow's ``id``.
        flow_version: Content hash of the flow the execution started on.
        current_step: The step the execution is at (waiting at, when waiting).
        status: ``active`` while steps run, ``waiting`` for the contact,
            ``ended``, ``handed_over`` or ``failed``.
        variables: The flow's variables (``vars`` in templates), JSON-able.
        step_results: Each step's result by step id (``steps`` in templates).
        step_state: Book-keeping of the current step (retries, LLM turns);
            reset when the execution moves to another step.
        wait_deadline: When a waiting step times out, or None.
        id: The store's id, None until stored.
    """

    flow_id: str
    flow_version: str
    current_step: str
    status: ExecutionStatus = "active"
    variables: dict[str, Any] = field(default_factory=dict)
    step_results: dict[str, Any] = field(default_factory=dict)
    step_state: dict[str, Any] = field(default_factory=dict)
    wait_deadline: dt.datetime | None = None
    id: int | None = None


class ExecutionStore(Protocol):
    """Where executions and conversation history live, keyed by contact.

    Implementations run inside the caller's transaction; the caller commits the
    execution and the transcript together.
    """

    def active_execution(self, contact_id: int) -> ExecutionState | None:
        """The contact's execution that is not ended or failed, or None."""
        ...

    def history(self, contact_id: int, limit: int) -> list[HistoryMessage]:
        """The last `limit` messages before the current turn, oldest first."""
        ...


@dataclass(frozen=True)
class Reply:
    """One message the bot sends in a turn.

    Attributes:
        text: The message body (may exceed one Twilio message; the sender splits it).
        step_id: The step that produced it, or None (a fallback outside any step).
        usage: Model, tokens and latency when an LLM wrote it.
        author: ``bot`` or ``system``.
        template: A WhatsApp template to send instead outside the 24-hour
            window: ``{"content_sid": "HX...", "content_variables": {"1": ...}}``
            (Twilio Content API), or None.
        media_url: An image or document to send with the text (TwiML
            ``<Media>``, REST ``MediaUrl``), or None.
        delay_seconds: Wait this long before sending it (a ``say`` step's
            ``delay``). Inline TwiML cannot wait: a sender that answers in the
            webhook's response sends it at once; a REST sender honours it.
    """

    text: str
    step_id: str | None = None
    usage: LLMUsage | None = None
    author: str = "bot"
    template: dict[str, Any] | None = None
    media_url: str | None = None
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class EntitlementCheck:
    """Whether a contact may use a paywalled flow, and how to pay if not.

    Attributes:
        entitled: True when the contact may go on (always, with the paywall off).
        payment_url: Where the contact pays (a Stripe Checkout Session or a
            Payment Link with ``client_reference_id``), when not entitled.
        remind: Whether to send the payment link now; False when it was
            already sent within the last 24 hours (reminders at most once a day).
        status: The subscription status behind the answer (Stripe's
            subscription statuses, or ``none``).
    """

    entitled: bool
    payment_url: str | None = None
    remind: bool = True
    status: str = "none"


class Entitlements(Protocol):
    """Who may use paywalled flows (kept in sync from Stripe webhooks)."""

    def check(self, contact: Contact, entitlement: str) -> EntitlementCheck:
        """Check `contact` against the named entitlement (e.g. ``subscription``).

        Raises:
            EntitlementError: the payment provider could not be reached to
                create a payment link.
        """
        ...


class EntitlementError(Exception):
    """A payment link could not be created (Stripe unreachable or misconfigured)."""


class AlwaysEntitled:
    """Entitlements with the paywall off: everyone is entitled."""

    def check(self, contact: Contact, entitlement: str) -> EntitlementCheck:
        """Always entitled."""
        return EntitlementCheck(entitled=True, status="active")


class FlowArchive(Protocol):
    """Earlier versions of flow files, so an execution can finish on the one it started."""

    def flow_text(self, flow_id: str, version: str) -> str | None:
        """The YAML of flow `flow_id` at `version` (its content hash), or None if unknown."""
        ...


@dataclass(frozen=True)
class HTTPResponse:
    """What an outside HTTP API answered (an ``http`` step's request).

    Attributes:
        status: The HTTP status code, e.g. 200.
        json: The body parsed as JSON, or None when it is not JSON.
        text: The body as text (decoded as the response says, else UTF-8).
    """

    status: int
    json: Any
    text: str


class HTTPError(Exception):
    """An HTTP request got no answer: timeout, connection refused, bad URL, no client."""


class HTTP(Protocol):
    """Makes the requests of ``http`` steps (Studio's Make HTTP Request)."""

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json: Any = None,
        form: dict[str, str] | None = None,
        timeout: float,
    ) -> HTTPResponse:
        """Send one request and read the whole answer.

        Args:
            method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
            url: An absolute http(s) URL.
            headers: Request headers.
            json: A JSON body (sent as ``application/json``), or None.
            form: A form body (``application/x-www-form-urlencoded``), or None.
            timeout: Seconds for the whole request.

        Returns:
            The answer, whatever its status (a 500 is an answer, not an error).

        Raises:
            HTTPError: no answer (timeout, connection error, invalid URL).
        """
        ...


class NoHTTP:
    """The HTTP port when none is configured: every request fails, saying so."""

    def request(self, method: str, url: str, **_: Any) -> HTTPResponse:
        """Always fails.

        Raises:
            HTTPError: always: no HTTP client was given to the runner.
        """
        raise HTTPError("no HTTP client is configured (Runner.http)")
