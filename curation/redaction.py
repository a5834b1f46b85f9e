"""Private details in transcripts: find them, and replace them with placeholders.

Detectors, each a function ``detector(text, context) -> list[Span]``:

- phone numbers: Google's libphonenumber (the ``phonenumbers`` package's
  `PhoneNumberMatcher`, leniency ``POSSIBLE``, so that reserved fictional
  numbers such as +44 7700 900123 are caught too), once for each region a number
  written without ``+`` may belong to: those of ``REDACTION_REGION`` (one or
  several, e.g. ``US,GB``) and the contact's own country, from their E.164
  number (a British contact's ``07700 900123`` is a phone number under ``US``);
- e-mail addresses and URLs: regular expressions;
- street addresses (US, Canada, UK): ``pyap2``'s address patterns;
- names: the names the store knows for the conversation (the contact's WhatsApp
  profile name), matched as whole words.

No maintained name detector that runs offline was available when this was
written: Presidio and scrubadub's name detectors need spaCy or Stanford NER
models downloaded at run time. A statistical detector can be added later as one
more function in `DETECTORS` (or passed as ``extra``) without touching callers.

A span's ``kind`` becomes its placeholder: ``[PHONE]``, ``[EMAIL]``, ``[URL]``,
``[ADDRESS]``, ``[NAME]``.

The loose detectors (addresses, names, any ``extra``) read the text with the
e-mail addresses and URLs blanked out: pyap's UK patterns would otherwise start
an address inside an e-mail's domain. Spans of one kind that overlap are
joined; spans of different kinds are kept apart, each with its own label: one
inside another goes, one that runs past another keeps only its own part. So an
e-mail and an address in one message are two placeholders, and the words
between them stay.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import phonenumbers
import pyap


@dataclass(frozen=True)
class Span:
    """A private detail found in a text.

    Attributes:
        start: Index of its first character.
        end: Index after its last character.
        kind: ``phone``, ``email``, ``url``, ``address`` or ``name``.
    """

    start: int
    end: int
    kind: str

    @property
    def placeholder(self) -> str:
        """What replaces it, e.g. ``[PHONE]``."""
        return f"[{self.kind.upper()}]"


@dataclass(frozen=True)
class Context:
    """What the detectors may use besides the text.

    Attributes:
        regions: ISO 3166 regions a number written without ``+`` may belong to
            (e.g. ``("US", "GB")``); see `regions_for`.
        names: Known names of the people in the conversation.
    """

    regions: Sequence[str] = ("US",)
    names: Sequence[str] = field(default_factory=tuple)


def parse_regions(setting: str | None) -> tuple[str, ...]:
    """The regions of ``REDACTION_REGION``: ISO 3166 codes, comma-separated (``US,GB``).

    Unset or empty means ``US``.

    Raises:
        ValueError: a code libphonenumber does not know; the message names it.
    """
    codes = [code.strip().upper() for code in (setting or "").split(",") if code.strip()]
    unknown = [code for code in codes if code not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        raise ValueError(
            f"REDACTION_REGION: unknown region(s) {', '.join(unknown)}: "
            "use ISO 3166 codes such as US or GB, comma-separated"
        )
    return tuple(dict.fromkeys(codes)) or ("US",)


def contact_region(phone: str | None) -> str | None:
    """The country of an E.164 number (``+447700900456`` → ``GB``), or None."""
    if not phone:
        return None
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    # A reserved number (+44 7700 900xxx, for drama) is valid nowhere: fall back on
    # the main region of its country code.
    region = phonenumbers.region_code_for_number(
        number
    ) or phonenumbers.region_code_for_country_code(number.country_code)
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def regions_for(setting: str | None, phone: str | None = None) -> tuple[str, ...]:
    """The configured regions (`parse_regions`), then the contact's own country.

    Args:
        setting: ``REDACTION_REGION``.
        phone: The contact's E.164 number, when known.

    Raises:
        ValueError: the setting names an unknown region.
    """
    regions = parse_regions(setting)
    own = contact_region(phone)
    return (*regions, own) if own and own not in regions else regions


Detector = Callable[[str, Context], list[Span]]

# Deliberately simple (RFC 5322 allows far more); a false positive only costs a
# placeholder in a curated transcript.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]", re.IGNORECASE)
_ADDRESS_COUNTRIES = ("US", "CA", "GB")


def phones(text: str, context: Context) -> list[Span]:
    """Phone numbers, with a country code or as written in any of the context's regions."""
    spans = []
    for region in context.regions or ("US",):
        matcher = phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.POSSIBLE
        )
        spans.extend(Span(match.start, match.end, "phone") for match in matcher)
    return spans


def emails(text: str, context: Context) -> list[Span]:
    """E-mail addresses."""
    return [Span(match.start(), match.end(), "email") for match in _EMAIL.finditer(text)]


def urls(text: str, context: Context) -> list[Span]:
    """Web addresses (``http(s)://`` or ``www.``)."""
    return [
        Span(match.start(), match.end(), "url")
        for match in _URL.finditer(text)
        if not _EMAIL.fullmatch(match.group())
    ]


def addresses(text: str, context: Context) -> list[Span]:
    """Street addresses in the US, Canada and the UK (pyap2's patterns)."""
    spans = []
    for country in _ADDRESS_COUNTRIES:
        for address in pyap.parse(text, country=country):
            if address.match_start is not None and address.match_end is not None:
                spans.append(Span(address.match_start, address.match_end, "address"))
    return spans


def names(text: str, context: Context) -> list[Span]:
    """The known names, and each of their words of 3 letters or more, as whole words."""
    words = set()
    for name in context.names:
        if name:
            words.add(name.strip())
            words.update(part for part in name.split() if len(part) >= 3)
    spans = []
    for word in sorted(filter(None, words), key=len, reverse=True):
        pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
        spans.extend(Span(m.start(), m.end(), "name") for m in pattern.finditer(text))
    return spans


#: Detectors of exact patterns, run on the text as written.
PATTERN_DETECTORS: tuple[Detector, ...] = (phones, emails, urls)
#: Detectors of looser shapes, run with e-mail addresses and URLs blanked out.
LOOSE_DETECTORS: tuple[Detector, ...] = (addresses, names)
#: Every detector `find` runs.
DETECTORS: tuple[Detector, ...] = PATTERN_DETECTORS + LOOSE_DETECTORS

#: What blanks out e-mail addresses and URLs for the loose detectors (same length,
#: and no word or address character pyap could take for part of an address).
_BLANK = ";"
_EDGE = " \t\r\n,;:."


def _tidy(text: str, span: Span) -> Span | None:
    """`span` without the spaces and punctuation at its edges (None if nothing is left)."""
    start, end = span.start, span.end
    while start < end and text[start] in _EDGE:
        start += 1
    while end > start and text[end - 1] in _EDGE:
        end -= 1
    return Span(start, end, span.kind) if end > start else None


def find(text: str, context: Context | None = None, extra: Iterable[Detector] = ()) -> list[Span]:
    """Every private detail in `text`, sorted, not overlapping, each with its own kind.

    Overlapping spans of one kind are joined. Of two kinds, the span found
    first (the earlier start, then the longer) keeps its place; a span inside
    it goes (an address containing a name is one address), and a span running
    past its end keeps only the part after it, with its own kind.

    Args:
        text: The message.
        context: Regions and names (default: `Context()`).
        extra: More detectors, run with the loose ones.
    """
    context = context or Context()
    found: list[Span] = []
    for detector in PATTERN_DETECTORS:
        found.extend(detector(text, context))
    blanked = list(text)
    for span in found:
        if span.kind in ("email", "url"):
            blanked[span.start : span.end] = _BLANK * (span.end - span.start)
    loose_text = "".join(blanked)
    for detector in (*LOOSE_DETECTORS, *extra):
        found.extend(detector(loose_text, context))
    tidied = [tidy for tidy in (_tidy(text, span) for span in found) if tidy is not None]
    tidied.sort(key=lambda span: (span.start, -(span.end - span.start)))
    kept: list[Span] = []
    for span in tidied:
        if kept and span.start < kept[-1].end:
            last = kept[-1]
            if span.end <= last.end:
                continue
            if span.kind == last.kind:
                kept[-1] = Span(last.start, span.end, last.kind)
                continue
            rest = _tidy(text, Span(last.end, span.end, span.kind))
            if rest is None:
                continue
            span = rest
        kept.append(span)
    return kept


def apply(text: str, spans: Sequence[Span]) -> str:
    """`text` with each (sorted, non-overlapping) span replaced by its placeholder."""
    pieces = []
    position = 0
    for span in spans:
        pieces.append(text[position : span.start])
        pieces.append(span.placeholder)
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces)


def redact(text: str, context: Context | None = None) -> str:
    """`text` with every private detail `find` sees replaced."""
    return apply(text, find(text, context))


def segments(text: str, spans: Sequence[Span]) -> list[tuple[str, str | None]]:
    """`text` cut into ``(piece, kind or None)`` for highlighting suggestions."""
    pieces: list[tuple[str, str | None]] = []
    position = 0
    for span in spans:
        if span.start > position:
            pieces.append((text[position : span.start], None))
        pieces.append((text[span.start : span.end], span.kind))
        position = span.end
    if position < len(text):
        pieces.append((text[position:], None))
    return pieces
