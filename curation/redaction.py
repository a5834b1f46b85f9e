"""Private details in transcripts: find them, and replace them with placeholders.

Detectors, each a function ``detector(text, context) -> list[Span]``:

- phone numbers: Google's libphonenumber (the ``phonenumbers`` package's
  `PhoneNumberMatcher`, leniency ``POSSIBLE``, so that reserved fictional
  numbers such as +44 7700 900123 are caught too);
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
        region: ISO 3166 region for numbers written without ``+`` (e.g. ``US``).
        names: Known names of the people in the conversation.
    """

    region: str = "US"
    names: Sequence[str] = field(default_factory=tuple)


Detector = Callable[[str, Context], list[Span]]

# Deliberately simple (RFC 5322 allows far more); a false positive only costs a
# placeholder in a curated transcript.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]", re.IGNORECASE)
_ADDRESS_COUNTRIES = ("US", "CA", "GB")


def phones(text: str, context: Context) -> list[Span]:
    """Phone numbers, with or without a country code."""
    matcher = phonenumbers.PhoneNumberMatcher(
        text, context.region, leniency=phonenumbers.Leniency.POSSIBLE
    )
    return [Span(match.start, match.end, "phone") for match in matcher]


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


#: The detectors run by `find`, in order.
DETECTORS: tuple[Detector, ...] = (phones, emails, urls, addresses, names)


def find(text: str, context: Context | None = None, extra: Iterable[Detector] = ()) -> list[Span]:
    """Every private detail in `text`, sorted, with overlaps merged.

    Where two spans overlap, the longer one wins (an address containing a
    name is one address).
    """
    context = context or Context()
    found: list[Span] = []
    for detector in (*DETECTORS, *extra):
        found.extend(detector(text, context))
    found.sort(key=lambda span: (span.start, -(span.end - span.start)))
    merged: list[Span] = []
    for span in found:
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            if span.end > last.end:
                merged[-1] = Span(last.start, span.end, last.kind)
            continue
        merged.append(span)
    return merged


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
