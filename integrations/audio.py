"""How long a voice note lasts, read from its bytes with mutagen (no decoding, no ffmpeg).

Twilio's webhook says nothing of a recording's length, so the duration limit of
voice notes (``voice_notes.max_seconds``, conversation/voice.py) is checked on
the downloaded audio before it is sent for transcription. mutagen reads the
length from the container's headers: Ogg Opus (WhatsApp's voice notes), Ogg
Vorbis, MP3, MP4/M4A, AAC, WAV and FLAC among others. It does not read AMR
(some phones' MMS audio) nor WebM: for those, and for anything damaged, the
duration is unknown and only the size limit (``max_mb``) applies.
"""

from __future__ import annotations

import io
import logging

import mutagen

log = logging.getLogger("parley.voice")


def audio_seconds(data: bytes, filename: str) -> float | None:
    """The duration of an audio file, in seconds, or None when it cannot be read.

    Args:
        data: The whole file.
        filename: A name with the extension its content type implies
            (``voice.ogg``): a hint for formats mutagen cannot tell from the
            bytes alone (MP3 without ID3 tags).

    Returns:
        The length from the file's headers; None for a format mutagen does not
        know, a damaged file, or a length of zero.
    """
    buffer = io.BytesIO(data)
    buffer.name = filename  # mutagen scores formats by extension too
    try:
        found = mutagen.File(buffer)
        seconds = float(found.info.length) if found is not None else 0.0
    except Exception as error:
        # A parser of the contact's bytes: whatever it trips on, the length is
        # unknown and the size limit stands in for it (never a failed turn).
        log.info("voice.duration_unknown reason=%s", type(error).__name__)
        return None
    return seconds if seconds > 0 else None
