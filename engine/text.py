"""Comparing what contacts type: case, accents and surrounding punctuation ignored."""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """Lower-case, accents removed, punctuation and spaces trimmed: ``" Sleep!"`` → ``"sleep"``."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return plain.strip(" \t\n.!?,;:'\"()[]")
