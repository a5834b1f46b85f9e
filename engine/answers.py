"""Reading a contact's answer as a typed value: the ``type:`` of an ``ask`` step.

Each reader takes what the contact sent and returns the normalised value, or
None when the answer does not fit (the step then re-prompts). Parsing is left
to well-kept libraries: ``dateparser`` for dates (many languages, "tomorrow"),
``email-validator`` for e-mail addresses, ``phonenumbers`` (Google's
libphonenumber) for phone numbers.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from engine.ports import Contact, InboundMessage
from engine.text import fold

AnswerType = Literal[
    "text", "number", "yes_no", "date", "email", "phone", "choice", "media", "location"
]
MediaKind = Literal["image", "audio", "video", "document"]

#: Words read as yes / no, compared folded (case and accents ignored): "Sí" is "si".
YES_WORDS = frozenset(
    {
        "yes", "y", "yeah", "yep", "yup", "yea", "sure", "ok", "okay", "correct", "true",
        "si", "oui", "ja", "sim", "da", "claro", "vale", "d'accord",
    }
)  # fmt: skip
NO_WORDS = frozenset(
    {"no", "n", "nope", "nah", "not", "false", "non", "nein", "nao", "nee", "niet"}
)

#: Languages dates are read in (dateparser codes); fewer languages parse faster.
DATE_LANGUAGES = ("en", "es", "fr", "pt", "de", "it")

_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d+)?|[.,]\d+)$")


class Choice(BaseModel):
    """One allowed answer of a choice question.

    ``{value: sleep, label: "Sleep better", synonyms: [rest, bed]}``; a plain
    string ``sleep`` is ``{value: sleep}``.
    """

    model_config = ConfigDict(extra="forbid")

    value: str
    """What is stored (``vars.<save_as>``) and compared in conditions."""
    label: str | None = None
    """What the contact sees in the numbered list; the value when absent."""
    synonyms: list[str] = Field(default_factory=list)
    """Other words that pick this choice (case and accents ignored)."""

    @property
    def shown(self) -> str:
        """The text shown to the contact."""
        return self.label or self.value


def _choice_of(value: Any) -> Any:
    return {"value": value} if isinstance(value, str) else value


ChoiceItem = Annotated[Choice, BeforeValidator(_choice_of, json_schema_input_type=str | Choice)]
"""A choice as written in a flow: a plain string, or ``{value, label, synonyms}``."""


def as_choices(raw: list[str | Choice]) -> list[Choice]:
    """Plain strings and choice objects, all as `Choice`."""
    return [item if isinstance(item, Choice) else Choice(value=item) for item in raw]


def numbered(choices: list[Choice]) -> str:
    """``"1. Sleep\\n2. Movement"``: the choices as a numbered list."""
    return "\n".join(f"{index}. {choice.shown}" for index, choice in enumerate(choices, 1))


def match_choice(text: str, choices: list[Choice]) -> str | None:
    """The value of the choice `text` names, by value, label, synonym or 1-based number.

    Examples:
        >>> match_choice("2", as_choices(["sleep", "movement"]))
        'movement'
        >>> match_choice("  SLÉEP! ", as_choices(["sleep", "movement"]))
        'sleep'
        >>> match_choice("1", as_choices(["0", "1", "2"]))
        '1'
    """
    folded = fold(text)
    if not folded:
        return None
    # Words first: with choices ["0", "1", "2"], "1" is the choice "1", not the first.
    for choice in choices:
        names = [choice.value, choice.label or "", *choice.synonyms]
        if any(fold(name) == folded for name in names if name):
            return choice.value
    if folded.isdecimal() and 1 <= int(folded) <= len(choices):  # int() takes decimals only
        return choices[int(folded) - 1].value
    return None


def read_number(text: str) -> int | float | None:
    """``"42"`` → 42, ``"1.5"`` or ``"1,5"`` → 1.5; anything else → None."""
    cleaned = re.sub(r"[\s\u00a0\u202f]", "", text)
    if not _NUMBER.match(cleaned):
        return None
    cleaned = cleaned.replace(",", ".")
    if re.fullmatch(r"[+-]?\d+", cleaned):
        return int(cleaned)
    return float(cleaned)


def read_yes_no(text: str) -> bool | None:
    """True for yes, False for no (the whole answer or its first word), else None."""
    folded = fold(text)
    words = re.findall(r"[\w']+", folded)
    for candidate in (folded, words[0] if words else ""):
        if candidate in YES_WORDS:
            return True
        if candidate in NO_WORDS:
            return False
    return None


def read_date(
    text: str,
    now: dt.datetime,
    date_order: str | None = None,
    languages: tuple[str, ...] = DATE_LANGUAGES,
) -> str | None:
    """The date in `text` as ISO 8601 (``2025-03-15``), or None.

    Reads ``14/03/2025``, ``March 14``, ``tomorrow``, ``in 3 days``, ``3 mars``…
    with ``dateparser``; relative dates count from `now`.

    Args:
        text: The answer.
        now: The current time (the flow's clock).
        date_order: ``DMY``, ``MDY`` or ``YMD`` for numeric dates, or None
            for dateparser's guess from the language.
        languages: dateparser language codes to try.
    """
    import dateparser  # loads its language data on first use; only flows with dates pay

    settings: dict[str, Any] = {"RELATIVE_BASE": now.replace(tzinfo=None)}
    if date_order:
        settings["DATE_ORDER"] = date_order
    if not text.strip() or read_number(text) is not None:  # "12" is not a date
        return None
    parsed = dateparser.parse(text, languages=list(languages), settings=settings)
    return parsed.date().isoformat() if parsed else None


def read_email(text: str) -> str | None:
    """The normalised e-mail address (domain lower-cased), or None.

    Syntax only (``email-validator``, RFC 5322/6531); no DNS lookup in a turn.
    """
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(text.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def read_phone(text: str, contact_phone: str | None) -> str | None:
    """A valid phone number in E.164 (``+447700900123``), or None.

    A number without a country code is read in the country of the contact's
    own number (``07700 900123`` from a +44 contact is British).
    """
    import phonenumbers

    region = None
    if contact_phone:
        try:
            own = phonenumbers.parse(contact_phone)
            # The country's main region: +44 is GB even for a number that is
            # not (yet) allocated, or that libphonenumber files under GG or JE.
            region = phonenumbers.region_code_for_country_code(own.country_code)
        except phonenumbers.NumberParseException:
            region = None
    try:
        number = phonenumbers.parse(text.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def media_kind(content_type: str) -> MediaKind:
    """``image/jpeg`` → image, ``audio/ogg`` (a voice note) → audio, ``video/*`` → video,
    anything else (PDF, vCard…) → document."""
    major = content_type.split("/", 1)[0].strip().lower()
    if major in ("image", "audio", "video"):
        return major  # type: ignore[return-value]
    return "document"


def read_media(
    inbound: InboundMessage | None, accept: list[MediaKind] | None
) -> list[dict[str, str]] | None:
    """The attachments, ``[{url, content_type, kind}]``, or None when none fits `accept`."""
    if inbound is None or not inbound.media:
        return None
    items = []
    for index, url in enumerate(inbound.media):
        content_type = inbound.media_types[index] if index < len(inbound.media_types) else ""
        kind = media_kind(content_type)
        if accept is None or kind in accept:
            items.append({"url": url, "content_type": content_type, "kind": kind})
    return items or None


def read_location(inbound: InboundMessage | None) -> dict[str, Any] | None:
    """A shared WhatsApp location, ``{latitude, longitude, address, label}``, or None."""
    location = inbound.location if inbound else None
    if not location or location.get("latitude") is None or location.get("longitude") is None:
        return None
    return dict(location)


def read_answer(
    answer_type: AnswerType,
    inbound: InboundMessage | None,
    contact: Contact,
    now: dt.datetime,
    *,
    choices: list[Choice] | None = None,
    accept: list[MediaKind] | None = None,
    date_order: str | None = None,
) -> Any:
    """The value of an answer of `answer_type`, or None when it does not fit."""
    text = inbound.text.strip() if inbound else ""
    if answer_type == "choice":
        return match_choice(text, choices or [])
    if answer_type == "number":
        return read_number(text)
    if answer_type == "yes_no":
        return read_yes_no(text)
    if answer_type == "date":
        return read_date(text, now, date_order)
    if answer_type == "email":
        return read_email(text)
    if answer_type == "phone":
        return read_phone(text, contact.phone)
    if answer_type == "media":
        return read_media(inbound, accept)
    if answer_type == "location":
        return read_location(inbound)
    return text or None
