"""The Twilio edge: inbound webhook parsing, signatures, replies and sending.

Everything here is plain Python on the official ``twilio`` package (9.x) and
imports no Flask, so Flask views, Celery tasks and the CLI can all use it.

Sources:
    - Messaging webhook parameters: https://www.twilio.com/docs/messaging/guides/webhook-request
      (form-encoded; "Twilio will occasionally add new parameters without
      advance notice", so unknown parameters are ignored here but still signed).
    - Webhook signatures (``X-Twilio-Signature``): Twilio docs "Webhooks
      security" and twilio-python ``twilio/request_validator.py``.
    - Body limit: error 21617, "The concatenated message body exceeds the 1600
      character limit" (https://www.twilio.com/docs/api/errors/21617).
    - E.164: ITU-T Recommendation E.164, at most 15 digits after the ``+``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import Message, MessagingResponse

from engine.ports import Channel, InboundMessage

__all__ = [
    "DEFAULT_SEND_TIMEOUT",
    "FIELD_LIMITS",
    "MAX_BODY_CHARS",
    "MAX_MEDIA",
    "MAX_WHATSAPP_BODY_CHARS",
    "InboundForm",
    "TwilioSender",
    "is_message_sid",
    "parse_address",
    "parse_inbound",
    "public_url",
    "signature_is_valid",
    "split_body",
    "twiml_reply",
]

MAX_BODY_CHARS = 1600
"""Twilio's limit for one message ``Body``: longer bodies fail with error 21617
("The concatenated message body exceeds the 1600 character limit",
https://www.twilio.com/docs/api/errors/21617). The same page warns that emoji and
other "higher byte count" characters count as more than one character, so
`split_body` counts UTF-16 code units (an emoji counts 2)."""

MAX_WHATSAPP_BODY_CHARS = 4096
"""The longest WhatsApp text message (WhatsApp Business Platform: "text.body ...
Maximum 4096 characters"); an SMS body is at most `MAX_BODY_CHARS`."""

#: The longest value Parley accepts for each other inbound parameter. Twilio's own
#: are shorter (a SID is 34 characters, an address a few dozen, a WhatsApp button's
#: text 20, a media URL about 150); these only keep an absurd value out of the store.
FIELD_LIMITS: dict[str, int] = {
    "To": 100,
    "AccountSid": 64,
    "ProfileName": 256,
    "WaId": 32,
    "ButtonText": 256,
    "ButtonPayload": 1024,
    "Address": 1024,
    "Label": 1024,
    "Latitude": 32,
    "Longitude": 32,
    "MediaUrl": 2048,
    "MediaContentType": 255,
}

MAX_MEDIA = 10
"""At most 10 media per message (Twilio Messaging: "up to 10 media files")."""

DEFAULT_SEND_TIMEOUT = 10.0
"""Seconds per REST call of `TwilioSender` (the ``requests`` default is no timeout)."""

# E.164: "+", a country code that never starts with 0, at most 15 digits in all.
# ASCII digits only: `\d` would also accept e.g. Arabic-Indic digits.
_ADDRESS_RE = re.compile(r"(?P<prefix>whatsapp:)?(?P<phone>\+[1-9][0-9]{7,14})")
# Message SIDs: "SM" (SMS/WhatsApp) or "MM" (MMS) and 32 hex digits, 34 characters
# in all (the webhook docs: "A 34-character unique identifier for the message").
_MESSAGE_SID_RE = re.compile(r"(?:SM|MM)[0-9a-fA-F]{32}")
_ASCII_INT_RE = re.compile(r"[0-9]{1,9}")
# Characters XML 1.0 forbids (C0 controls but tab/LF/CR, surrogates, U+FFFE/U+FFFF).
_XML_INVALID_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Where `split_body` may cut, best first, as (pattern, cut at the match's start?).
_BREAKS: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"\n[ \t\r]*\n"), True),  # paragraph break
    (re.compile(r"\n"), True),  # line break
    (re.compile(r"[.!?][\"')\]\u201d\u2019]*(?=\s)"), False),  # sentence end
    (re.compile(r"\s"), True),  # any space
)


def _short(value: str, limit: int = 40) -> str:
    """`repr` of a value, shortened for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def is_message_sid(value: str) -> bool:
    """Whether `value` is a message SID: ``SM`` or ``MM`` and 32 hex digits."""
    return bool(_MESSAGE_SID_RE.fullmatch(value))


def parse_address(address: str) -> tuple[Channel, str]:
    """Split a Twilio ``From`` address into its channel and E.164 phone number.

    ``whatsapp:+15551234567`` is WhatsApp, a bare ``+15551234567`` is SMS. Only use
    this for ``From``: ``To`` may be a short code (e.g. ``384387``), which is
    Parley's own number, not a contact.

    Args:
        address: The raw address, e.g. ``whatsapp:+15551234567``.

    Returns:
        ``(channel, phone)``, e.g. ``("whatsapp", "+15551234567")``.

    Raises:
        ValueError: The address is not ``[whatsapp:]+`` followed by 8 to 15 ASCII
            digits, the first not 0 (E.164, ITU-T E.164: at most 15 digits). This
            includes other channels (``messenger:...``) and WhatsApp business-scoped
            user ids (``whatsapp:US.1234``) that carry no phone number.
    """
    if not isinstance(address, str) or not address:
        raise ValueError("address is empty")
    match = _ADDRESS_RE.fullmatch(address)
    if match is None:
        reason = "expected [whatsapp:]+ and 8 to 15 digits (E.164)"
        if address[:1].isspace() or address.startswith("whatsapp: "):
            reason += "; a space where '+' belongs means '+' was not URL-encoded as %2B"
        elif ":" in address and not address.startswith("whatsapp:"):
            reason += f"; channel {address.split(':', 1)[0]!r} is not supported"
        raise ValueError(f"not a phone number: {_short(address)} ({reason})")
    channel: Channel = "whatsapp" if match["prefix"] else "sms"
    return channel, match["phone"]


@dataclass(frozen=True)
class InboundForm:
    """One inbound message from Twilio's Messaging webhook, checked.

    Built by `parse_inbound`; the parameters are those of
    https://www.twilio.com/docs/messaging/guides/webhook-request.

    Attributes:
        message_sid: ``MessageSid``, 34 characters: ``SM`` or ``MM`` and 32 hex digits.
        account_sid: ``AccountSid`` as sent, or None when absent (not checked:
            it identifies the account, the signature authenticates it).
        from_address: ``From`` as sent, e.g. ``whatsapp:+15551234567``.
        to_address: ``To`` as sent (Parley's number; may be a short code).
        channel: ``whatsapp`` or ``sms``, from the ``From`` prefix.
        phone: The sender's E.164 number, ``From`` without its prefix.
        body: ``Body`` as typed; empty for media-only or location messages.
        profile_name: ``ProfileName`` (WhatsApp profile name), or None.
        wa_id: ``WaId`` (the sender's WhatsApp id), or None.
        media: ``MediaUrl0`` ... ``MediaUrl{NumMedia-1}``, in order.
        num_media: ``NumMedia``.
        media_types: ``MediaContentType{N}`` of each media, same order ("" when absent).
        button: ``{"payload": ButtonPayload, "text": ButtonText}`` when the contact
            tapped a WhatsApp quick-reply button, else None.
        location: ``{"latitude", "longitude", "address", "label"}`` when the
            contact shared a WhatsApp location (``Latitude``/``Longitude``,
            ``Address``, ``Label``), else None.
    """

    message_sid: str
    account_sid: str | None
    from_address: str
    to_address: str
    channel: Channel
    phone: str
    body: str
    profile_name: str | None
    wa_id: str | None
    media: tuple[str, ...]
    num_media: int
    media_types: tuple[str, ...] = ()
    button: dict[str, str] | None = None
    location: dict[str, Any] | None = None

    def to_inbound(self) -> InboundMessage:
        """The message as the engine sees it.

        Returns:
            An `engine.ports.InboundMessage` with the body, channel, SID and media.
        """
        return InboundMessage(
            text=self.body,
            channel=self.channel,
            message_sid=self.message_sid,
            media=self.media,
            media_types=self.media_types,
            button=self.button,
            location=self.location,
        )


def parse_inbound(form: Mapping[str, str]) -> InboundForm:
    """Parse and check the form Twilio posts for an inbound message.

    Parameters Parley does not use (``SmsSid``, ``FromCity``, ``Latitude``,
    ``ButtonText``, ...) are ignored; Twilio adds new ones without notice. Check
    the signature (`signature_is_valid`) before trusting any of it.

    Args:
        form: The webhook's form fields (a dict, or Werkzeug's ``request.form``:
            the first value of a repeated field is used).

    Returns:
        The checked message.

    Raises:
        ValueError: A field is missing, malformed, holds a NUL character or is
            longer than Parley accepts (``Body``: `MAX_BODY_CHARS` for SMS,
            `MAX_WHATSAPP_BODY_CHARS` for WhatsApp; the others: `FIELD_LIMITS`;
            at most `MAX_MEDIA` media); the message starts with the field's
            name, e.g. ``MessageSid is missing`` or
            ``From is not a phone number: 'whatsapp:US.1234' (...)``.
    """
    for name in form:
        if "\x00" in (form.get(name) or ""):
            raise ValueError(f"{name} contains a NUL character")
    for name, limit in FIELD_LIMITS.items():
        if name in ("MediaUrl", "MediaContentType"):
            continue
        _check_length(form, name, limit)
    message_sid = form.get("MessageSid") or ""
    if not message_sid:
        raise ValueError("MessageSid is missing")
    if not _MESSAGE_SID_RE.fullmatch(message_sid):
        raise ValueError(
            f"MessageSid is not a message SID: {_short(message_sid)} "
            "(expected SM or MM and 32 hex digits)"
        )

    from_address = form.get("From") or ""
    if not from_address:
        raise ValueError("From is missing")
    try:
        channel, phone = parse_address(from_address)
    except ValueError as exc:
        raise ValueError(f"From is {exc}") from None

    to_address = form.get("To") or ""
    if not to_address:
        raise ValueError("To is missing")

    raw_num_media = form.get("NumMedia") or "0"
    if not _ASCII_INT_RE.fullmatch(raw_num_media):
        raise ValueError(f"NumMedia is not a count: {_short(raw_num_media)}")
    num_media = int(raw_num_media)
    if num_media > MAX_MEDIA:
        raise ValueError(f"NumMedia is {num_media}: at most {MAX_MEDIA} media per message")
    body = form.get("Body") or ""
    limit = MAX_WHATSAPP_BODY_CHARS if channel == "whatsapp" else MAX_BODY_CHARS
    if len(body) > limit:
        raise ValueError(f"Body has {len(body)} characters: at most {limit} on {channel}")
    media: list[str] = []
    for index in range(num_media):
        _check_length(form, f"MediaUrl{index}", FIELD_LIMITS["MediaUrl"])
        _check_length(form, f"MediaContentType{index}", FIELD_LIMITS["MediaContentType"])
        url = form.get(f"MediaUrl{index}") or ""
        if not url:
            raise ValueError(f"MediaUrl{index} is missing (NumMedia is {num_media})")
        media.append(url)
    media_types = tuple(form.get(f"MediaContentType{index}") or "" for index in range(num_media))

    return InboundForm(
        message_sid=message_sid,
        account_sid=form.get("AccountSid") or None,
        from_address=from_address,
        to_address=to_address,
        channel=channel,
        phone=phone,
        body=body,
        profile_name=form.get("ProfileName") or None,
        wa_id=form.get("WaId") or None,
        media=tuple(media),
        num_media=num_media,
        media_types=media_types,
        button=_button(form),
        location=_location(form),
    )


def _check_length(form: Mapping[str, str], name: str, limit: int) -> None:
    """Raise ValueError when the parameter `name` is longer than `limit` characters."""
    value = form.get(name) or ""
    if len(value) > limit:
        raise ValueError(f"{name} has {len(value)} characters: at most {limit}")


def _button(form: Mapping[str, str]) -> dict[str, str] | None:
    """A tapped quick-reply button (``ButtonPayload``, ``ButtonText``), or None."""
    payload, text = form.get("ButtonPayload") or "", form.get("ButtonText") or ""
    if not (payload or text):
        return None
    return {"payload": payload, "text": text}


def _location(form: Mapping[str, str]) -> dict[str, Any] | None:
    """A shared location (``Latitude``, ``Longitude``, ``Address``, ``Label``), or None.

    Raises:
        ValueError: only one of the coordinates is present, or one is not a
            number in range (``Latitude is not a latitude: 'x'``).
    """
    latitude, longitude = form.get("Latitude") or "", form.get("Longitude") or ""
    if not (latitude or longitude):
        return None
    coordinates = {}
    for name, raw, limit in (("Latitude", latitude, 90), ("Longitude", longitude, 180)):
        if not raw:
            raise ValueError(f"{name} is missing (a location needs Latitude and Longitude)")
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not -limit <= value <= limit:  # NaN fails this too
            raise ValueError(f"{name} is not a {name.lower()}: {_short(raw)}")
        coordinates[name.lower()] = value
    return {
        **coordinates,
        "address": form.get("Address") or None,
        "label": form.get("Label") or None,
    }


class _MultiParams(dict[str, list[str]]):
    """Form parameters with all values of each name, as `RequestValidator` reads them.

    `RequestValidator.get_values` calls ``getall`` (WebOb), then ``getlist``
    (Django, Werkzeug), and otherwise wraps ``params[name]`` in a list, which
    breaks on a dict of lists; so every input is normalised to this.
    """

    def getall(self, name: str) -> list[str]:
        return self[name]


def _all_values(params: Mapping[str, Any]) -> _MultiParams:
    """Every value of every parameter, whatever mapping the caller has."""
    getlist = getattr(params, "getlist", None)
    result = _MultiParams()
    for name in params:
        if getlist is not None:
            values = getlist(name)
        else:
            value = params[name]
            values = [value] if isinstance(value, str) else value
        result[name] = [str(v) for v in values]
    return result


def signature_is_valid(
    auth_token: str,
    url: str,
    params: Mapping[str, str | list[str]] | str | None,
    signature: str | None,
) -> bool:
    """Check Twilio's ``X-Twilio-Signature`` with the official `RequestValidator`.

    The signed string is the full URL Twilio called, then each POST parameter
    sorted by name, name followed by value (every value of a repeated name);
    HMAC-SHA1 keyed with the auth token, base64 (Twilio docs "Webhooks security";
    twilio-python ``twilio/request_validator.py``). The validator accepts the URL
    with its port removed or with the default port (443/80) added. Every posted
    parameter must be passed, including ones Parley does not use.

    Args:
        auth_token: The account's auth token.
        url: The exact URL Twilio requested, query included; behind an HTTPS
            proxy build it with `public_url`.
        params: The POST form: a dict of strings, a dict of lists (repeated
            names), or a MultiDict (Werkzeug's ``request.form``). For a JSON
            webhook, the raw body string; the URL then carries ``bodySHA256``.
        signature: The ``X-Twilio-Signature`` header, or None if absent.

    Returns:
        True if the signature matches; False if it does not, or is empty or None.

    Raises:
        ValueError: ``auth_token`` is empty (any signature would be forgeable).
    """
    if not auth_token:
        raise ValueError("auth_token is empty: cannot check Twilio signatures")
    if not signature:
        return False
    validator = RequestValidator(auth_token)
    if isinstance(params, str):
        # The validator only checks a raw body against `bodySHA256`; a string
        # without it would be read as a mapping and fail.
        if "bodySHA256=" not in url:
            return False
        checked: str | _MultiParams = params
    else:
        checked = _all_values(params or {})
    try:
        return bool(validator.validate(url, checked, signature))
    except ValueError:  # e.g. a URL with a port that is not a number
        return False


def public_url(public_base_url: str, path: str, query_string: str | bytes = "") -> str:
    """The URL Twilio called, from the public base URL and the request's path.

    Behind an HTTPS-terminating proxy the app sees ``http://internal:8000/...``
    while Twilio signed ``https://public.example/...``; signatures must be
    checked against the public one.

    Args:
        public_base_url: ``PUBLIC_BASE_URL``, e.g. ``https://parley.example.com``,
            with or without a trailing slash (a path prefix is kept).
        path: The request path, e.g. ``/twilio/inbound``.
        query_string: The raw query string without ``?`` (Werkzeug's
            ``request.query_string`` bytes are accepted), or empty.

    Returns:
        E.g. ``https://parley.example.com/twilio/inbound?x=1``.

    Raises:
        ValueError: ``public_base_url`` is not an absolute http(s) URL, or has a
            query or fragment.
    """
    if not re.match(r"https?://[^/?#\s]+", public_base_url or ""):
        raise ValueError(f"PUBLIC_BASE_URL is not an http(s) URL: {_short(public_base_url)}")
    if "?" in public_base_url or "#" in public_base_url:
        raise ValueError(f"PUBLIC_BASE_URL has a query or fragment: {_short(public_base_url)}")
    if isinstance(query_string, bytes):
        query_string = query_string.decode("utf-8", "replace")
    query_string = query_string.removeprefix("?")
    url = public_base_url.rstrip("/") + "/" + path.lstrip("/")
    return f"{url}?{query_string}" if query_string else url


def _fit(text: str, start: int, limit: int) -> int:
    """How many code points of `text` from `start` fit in `limit` UTF-16 code units."""
    units = 0
    for offset, ch in enumerate(text[start : start + limit + 1]):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return offset
    return len(text) - start


def _cut(text: str, width: int) -> int:
    """Where to end the next part of `text`, which is longer than `width`.

    Tries paragraph breaks, line breaks, sentence ends, then spaces, first ones
    that keep the part at least half full (so a break near the start does not
    waste a whole message), then any; a hard cut at `width` as a last resort.
    """
    window = text[: width + 1]  # one more, to see a space right after the part
    for min_fill in (max(1, width // 2), 1):
        for pattern, at_start in _BREAKS:
            best = 0
            for match in pattern.finditer(window):
                cut = match.start() if at_start else match.end()
                if min_fill <= cut <= width:
                    best = cut
            if best:
                return best
    return width


def split_body(text: str, limit: int = MAX_BODY_CHARS) -> list[str]:
    """Split a reply into message bodies that each fit Twilio's limit.

    Cuts at paragraph breaks, else line breaks, else sentence ends (``.``,
    ``!`` or ``?`` before a space), else spaces, and only as a last resort
    mid-word; a break is only taken if the part is at least half full, unless
    there is no other. Length counts UTF-16 code units, so a part also stays
    within `limit` characters: Twilio error 21617 says emoji and other "higher
    byte count" characters count as more than one
    (https://www.twilio.com/docs/api/errors/21617).

    Args:
        text: The reply.
        limit: Most characters per part; Twilio's is `MAX_BODY_CHARS` (1600).

    Returns:
        The parts in order, stripped, none empty: ``[text.strip()]`` when it fits,
        ``[]`` for blank text. Joined with spaces they keep every word; after a
        hard cut, joining the parts with ``""`` gives back the cut word.

    Raises:
        ValueError: `limit` is less than 2 (a character may need 2 units).
    """
    if limit < 2:
        raise ValueError(f"limit must be at least 2, not {limit}")
    text = text.strip()
    parts: list[str] = []
    start = 0
    while start < len(text):
        width = _fit(text, start, limit)
        if start + width >= len(text):
            parts.append(text[start:])
            break
        cut = _cut(text[start : start + width + 1], width)
        parts.append(text[start : start + cut].rstrip())
        start += cut
        while start < len(text) and text[start].isspace():
            start += 1
    return parts


def twiml_reply(texts: Sequence[str], media: Sequence[str | None] | None = None) -> str:
    """The TwiML answer to a Messaging webhook: one ``<Message>`` per text.

    A text with a media URL becomes ``<Message><Body>text</Body><Media>url</Media></Message>``
    (TwiML ``<Media>``: an image or document sent with the message); the text
    may then be blank. TwiML cannot wait between messages: a ``say`` step's
    ``delay`` is only honoured when replies go out through the REST API.

    Built with the official `MessagingResponse`, which escapes ``<``, ``&`` and
    ``>``. Characters XML 1.0 forbids (control characters other than tab and
    newlines) are removed, as the library writes them as they are. Blank texts
    are skipped (Twilio warning 14103: an empty body is invalid). Split long
    texts first with `split_body`: each body is limited to 1600 characters.

    Args:
        texts: The message bodies, in order.
        media: The media URL of each text (same order; None for none), or None.

    Returns:
        The XML document, e.g. ``<?xml ...?><Response><Message>Hi</Message></Response>``;
        ``<Response />`` (with the declaration) when there is nothing to send.
    """
    response = MessagingResponse()
    for index, text in enumerate(texts):
        body = _XML_INVALID_RE.sub("", text)
        url = media[index] if media is not None and index < len(media) else None
        if url:
            message = Message()
            if body.strip():
                message.body(body)
            message.media(url)
            response.append(message)
        elif body.strip():
            response.message(body)
    return str(response.to_xml())


class TwilioSender:
    """Sends messages through Twilio's REST API with the official client.

    Args:
        account_sid: The account SID (``AC...``).
        auth_token: The account's auth token.
        api_base_url: Replaces ``https://api.twilio.com`` (e.g. a fake server on
            ``http://127.0.0.1:PORT`` in tests); edge and region routing
            (``TWILIO_EDGE``/``TWILIO_REGION``) are then turned off. None for Twilio.
        http_client: A ``twilio.http.HttpClient`` to use instead of a
            ``TwilioHttpClient`` with `timeout`.
        timeout: Seconds per REST call when `http_client` is None.

    Raises:
        ValueError: `account_sid` or `auth_token` is empty (the client would
            silently fall back to ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``).
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_base_url: str | None = None,
        http_client: Any = None,
        timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("TwilioSender needs an account SID and an auth token")
        # Imported here: the REST client is a fifth of a second that commands
        # which send nothing (flask --help, flows validate) need not wait for.
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        if http_client is None:
            http_client = TwilioHttpClient(
                timeout=timeout, proxy=_environment_proxies(api_base_url or TWILIO_API)
            )
            # requests reads the proxy and CA-bundle variables from os.environ
            # on every request (a third of a send's CPU); they are read once
            # here instead, when the sender is made.
            http_client.session.trust_env = False
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                http_client.session.verify = bundle
        self._client = Client(account_sid, auth_token, http_client=http_client)
        if api_base_url is not None:
            self._client.api.base_url = api_base_url.rstrip("/")
            self._client.edge = None
            self._client.region = None

    def send(
        self,
        from_address: str,
        to_address: str,
        body: str,
        status_callback: str | None = None,
        *,
        content_sid: str | None = None,
        content_variables: Mapping[str, str] | None = None,
        media_urls: Sequence[str] = (),
    ) -> str:
        """Send one message (``POST /2010-04-01/Accounts/{sid}/Messages.json``).

        Args:
            from_address: Parley's sender, e.g. ``whatsapp:+14155238886`` or ``+1...``.
            to_address: The contact, e.g. ``whatsapp:+15551234567``.
            body: At most 1600 characters (`MAX_BODY_CHARS`; else Twilio error
                21617): split longer texts with `split_body`.
            status_callback: URL for Twilio's status callbacks, or None.
            content_sid: A Content API template (``HX...``) to send instead of
                `body` (WhatsApp, outside the 24-hour window), or None.
            content_variables: The template's placeholders, e.g. ``{"1": "Ana"}``
                (sent as the JSON string Twilio's ``ContentVariables`` takes).
            media_urls: Images or documents to send with `body` (``MediaUrl``).

        Returns:
            The new message's SID (``SM`` and 32 hex digits).

        Raises:
            twilio.base.exceptions.TwilioRestException: Twilio refused the message
                (``.code`` is Twilio's error code, e.g. 21617, 21610, 63016).
            requests.RequestException: Twilio could not be reached in time.
        """
        kwargs: dict[str, Any] = {"from_": from_address, "to": to_address}
        if content_sid:
            kwargs["content_sid"] = content_sid
            if content_variables:
                kwargs["content_variables"] = json.dumps(dict(content_variables))
        else:
            kwargs["body"] = body
            if media_urls:
                kwargs["media_url"] = list(media_urls)
        if status_callback:
            kwargs["status_callback"] = status_callback
        message = self._client.messages.create(**kwargs)
        return str(message.sid)

    def close(self) -> None:
        """Close the HTTP session of the default client (idempotent)."""
        session = getattr(self._client.http_client, "session", None)
        if session is not None:
            session.close()


#: Twilio's REST API (its edges and regions have hosts of their own).
TWILIO_API = "https://api.twilio.com"


def _environment_proxies(url: str) -> dict[str, str]:
    """The proxies that the environment (``HTTPS_PROXY``, ``NO_PROXY``...) sets for `url`."""
    from requests.utils import get_environ_proxies

    return dict(get_environ_proxies(url))


class MediaError(Exception):
    """Inbound media could not be downloaded (refused, too large, timeout)."""


#: Where Twilio serves inbound media (``MediaUrl{N}``); credentials go nowhere else.
TWILIO_MEDIA_HOSTS = frozenset({"api.twilio.com"})


class TwilioMedia:
    """Downloads inbound media from Twilio (`conversation.voice.MediaFetcher`).

    Twilio's media URLs need HTTP Basic auth with the account SID and auth
    token when the account's media authentication is on (the default for new
    accounts); the download then redirects to a short-lived URL of its CDN, to
    which httpx sends no credentials (another origin). The credentials are
    sent only to Twilio's API host (or `api_base_url`, a test fake): a media
    URL elsewhere is refused.

    Args:
        account_sid: ``TWILIO_ACCOUNT_SID``.
        auth_token: ``TWILIO_AUTH_TOKEN``.
        api_base_url: ``TWILIO_API_BASE`` (tests), whose host is allowed too.
    """

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str | None = None) -> None:
        import httpx

        self._auth = httpx.BasicAuth(account_sid, auth_token)
        hosts = set(TWILIO_MEDIA_HOSTS)
        if api_base_url:
            hosts.add(httpx.URL(api_base_url).host)
        self.hosts = frozenset(hosts)

    def fetch(self, url: str, max_bytes: int, timeout: float) -> tuple[bytes, str]:
        """The media's bytes and content type, read up to `max_bytes`.

        Raises:
            MediaError: not a Twilio URL, an HTTP error, a
                timeout, or more than `max_bytes`.
        """
        import httpx

        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL as error:
            raise MediaError(f"not a URL: {error}") from error
        if host not in self.hosts:
            raise MediaError(f"media on {host!r} is not Twilio's: not downloaded")
        try:
            client = httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=3)
            with client, client.stream("GET", url, auth=self._auth) as response:
                if response.status_code != 200:
                    raise MediaError(f"HTTP {response.status_code} from Twilio's media URL")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise MediaError(f"{int(declared)} bytes, over the {max_bytes} limit")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise MediaError(f"over the {max_bytes}-byte limit")
                    chunks.append(chunk)
                kind = response.headers.get("content-type", "")
        except httpx.TimeoutException as error:
            raise MediaError(f"timed out after {timeout:g} s") from error
        except httpx.HTTPError as error:
            raise MediaError(f"{type(error).__name__}: {error}") from error
        return b"".join(chunks), kind
