"""Voice notes: an inbound audio message, transcribed, reaches the flow as text.

Configured in ``FLOWS_DIR/_settings.yaml`` under ``voice_notes`` (off without
it). The turn service (conversation/turn.py) asks `VoiceNotes.listen` before
the engine runs, with no database connection held: in a queued worker, never in
the webhook (which only stores the message). The audio is downloaded from
Twilio's media URL with the account's credentials (HTTP Basic, required when
Twilio's media authentication is on) and transcribed with OpenAI's audio
transcription API (any OpenAI-compatible server). The flow then sees
``input.text`` = the transcript, ``input.media`` kept and ``input.transcribed``
true; the transcript is stored with the message (``details.transcript``).

Past the size limit or the duration limit (read from the downloaded audio,
`integrations.audio`; before the transcription is paid for), out of the turn's
time, or when the download or the transcription fails, the contact gets
`VoiceSettings.reply` and the flow does not run: nothing is lost (the message
and its media URL are stored).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from engine.flow import FlowSet
from engine.ports import ExecutionState, InboundMessage
from engine.voice import voice_target
from integrations.audio import audio_seconds
from integrations.openai import TranscriptionError
from integrations.twilio import MediaError

log = logging.getLogger("parley.voice")

#: What a failure says when the settings name no other reply.
DEFAULT_REPLY = "Sorry, I couldn't listen to that voice note. Could you type it?"


class VoiceSettings(BaseModel):
    """The ``voice_notes`` section of ``_settings.yaml``."""

    model_config = ConfigDict(extra="forbid")

    model: str = "gpt-4o-mini-transcribe"
    """The transcription model (``gpt-4o-mini-transcribe``, ``gpt-4o-transcribe``,
    ``whisper-1``, or the name an OpenAI-compatible server knows)."""
    max_mb: float = Field(default=5.0, gt=0, le=25)
    """The largest voice note transcribed, in MB (OpenAI accepts up to 25 MB);
    a larger one gets `reply`."""
    max_seconds: float = Field(default=300.0, gt=0, le=1400)
    """The longest voice note transcribed, in seconds (default 5 minutes; at most
    1400, the longest OpenAI's ``gpt-4o-*-transcribe`` models take); a longer one
    gets `reply` and is not sent for transcription. Read from the audio's
    headers; where it cannot be (AMR, a damaged file) only `max_mb` applies."""
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}$")
    """The language spoken (ISO-639-1, e.g. ``en``), a hint to the model; None: detected."""
    reply: str = Field(default=DEFAULT_REPLY, min_length=1)
    """What the contact gets when the voice note could not be transcribed."""
    off_in_flows: list[str] = Field(default_factory=list)
    """Flow ids whose contacts' voice notes are not transcribed (the flow gets
    the media with no text, as without this section)."""


class MediaFetcher(Protocol):
    """Downloads a contact's media (Twilio's media URLs)."""

    def fetch(self, url: str, max_bytes: int, timeout: float) -> tuple[bytes, str]:
        """The media's bytes and content type.

        Raises:
            MediaError: not downloaded, or larger than `max_bytes`.
        """
        ...


class Transcriber(Protocol):
    """Speech to text (OpenAI's ``/v1/audio/transcriptions``)."""

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        content_type: str,
        model: str,
        language: str | None,
        timeout: float | None,
    ) -> str:
        """The transcript of `audio`.

        Raises:
            TranscriptionError: the call failed after the client's retries.
        """
        ...


#: File extensions the transcription API recognises, by content type.
_EXTENSIONS = {
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "m4a",
    "audio/amr": "amr",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/webm": "webm",
    "audio/3gpp": "mp4",
}


class VoiceNoteTooLong(Exception):
    """The voice note lasts longer than ``max_seconds``: it is not transcribed."""


@dataclass
class Heard:
    """What listening to one inbound message gave.

    Attributes:
        inbound: The message the flow gets (with the transcript), or None
            when the contact gets `reply` instead.
        reply: The failure reply, when `inbound` is None.
        record: What is stored with the message (``details.transcript``).
        seconds: How long listening took.
    """

    inbound: InboundMessage | None
    reply: str | None
    record: dict[str, Any]
    seconds: float


@dataclass
class VoiceNotes:
    """Transcribes voice notes for the turn service.

    Attributes:
        settings: The ``voice_notes`` section.
        fetcher: Downloads media (Twilio, with Basic auth).
        transcriber: Speech to text.
        timeout: The most seconds a download or a transcription may take when
            the turn has no deadline (a queued turn).
        measure: The audio's duration in seconds from its bytes and file name,
            or None when unknown (`integrations.audio.audio_seconds`).
    """

    settings: VoiceSettings
    fetcher: MediaFetcher
    transcriber: Transcriber
    timeout: float = 60.0
    measure: Callable[[bytes, str], float | None] = audio_seconds

    def audio_of(self, inbound: InboundMessage | None) -> tuple[str, str] | None:
        """The first audio media (URL, content type) of a message, or None."""
        if inbound is None:
            return None
        for url, content_type in zip(inbound.media, inbound.media_types, strict=False):
            if content_type.lower().startswith("audio/"):
                return url, content_type.lower()
        return None

    def applies(
        self,
        inbound: InboundMessage,
        flows: FlowSet,
        execution: ExecutionState | None,
        flow_id: str | None = None,
    ) -> bool:
        """Whether `inbound` is a voice note to transcribe for the flow and step it goes to.

        Not when the flow is in ``off_in_flows``, nor when the flow or the step
        the contact waits at says ``transcribe: false`` (`engine.voice`): the
        audio then reaches the flow as media, untranscribed.

        Args:
            inbound: The message.
            flows: The loaded flows.
            execution: The contact's open execution, or None.
            flow_id: The flow the turn runs, when the caller names one.
        """
        if self.audio_of(inbound) is None:
            return False
        target, allowed = voice_target(flows, execution, inbound, flow_id)
        return allowed and target not in self.settings.off_in_flows

    def listen(self, inbound: InboundMessage, seconds_left: float | None) -> Heard:
        """Download and transcribe the voice note of `inbound`.

        Args:
            inbound: A message `applies` accepted.
            seconds_left: The turn's time left (an inline turn), or None.

        Returns:
            The message with its transcript, or the failure reply.
        """
        started = time.monotonic()
        audio = self.audio_of(inbound)
        assert audio is not None
        url, content_type = audio
        settings = self.settings
        record: dict[str, Any] = {"model": settings.model}

        def left() -> float:
            budget = self.timeout if seconds_left is None else seconds_left
            remaining = budget - (time.monotonic() - started)
            if remaining <= 0.5:
                raise TimeoutError("the turn's deadline passed")
            return min(remaining, self.timeout)

        try:
            data, served_type = self.fetcher.fetch(url, int(settings.max_mb * 1_000_000), left())
            record["bytes"] = len(data)
            kind = (served_type or content_type).split(";")[0].strip().lower()
            filename = "voice." + _EXTENSIONS.get(kind, kind.rpartition("/")[2] or "ogg")
            self._check_duration(data, filename, record)
            text = self.transcriber.transcribe(
                data, filename, kind, settings.model, settings.language, left()
            ).strip()
            if not text:
                raise TranscriptionError("the transcript is empty (silence?)")
        except (MediaError, VoiceNoteTooLong, TranscriptionError, TimeoutError) as error:
            seconds = time.monotonic() - started
            record.update(error=f"{type(error).__name__}: {error}", ms=int(seconds * 1000))
            log.warning("voice.failed reason=%s ms=%d", record["error"], record["ms"])
            return Heard(None, settings.reply, record, seconds)
        seconds = time.monotonic() - started
        record.update(text=text, ms=int(seconds * 1000))
        log.info("voice.transcribed bytes=%d ms=%d", record["bytes"], record["ms"])
        return Heard(replace(inbound, text=text, transcribed=True), None, record, seconds)

    def _check_duration(self, data: bytes, filename: str, record: dict[str, Any]) -> None:
        """Record the audio's duration, when it can be read, and refuse a voice note too long.

        Raises:
            VoiceNoteTooLong: it lasts more than ``max_seconds``.
        """
        seconds = self.measure(data, filename)
        if seconds is None:
            return  # unknown (AMR, damaged): the size limit stands in for it
        record["audio_seconds"] = round(seconds, 1)
        limit = self.settings.max_seconds
        if seconds > limit:
            raise VoiceNoteTooLong(f"it lasts {seconds:.0f} s, over the limit of {limit:g} s")
