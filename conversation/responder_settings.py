"""The responders' settings file: ``FLOWS_DIR/_settings.yaml``, validated like a flow.

One YAML file beside the flows configures what answers before any flow runs
(step 4 of a turn, DESIGN.md): opt-out keywords, the reset code, a welcome
message and after-hours replies. Every section is optional; without the file,
opt-out keywords and the reset code work with their defaults, and there is no
welcome and no after-hours reply.

Example::

    opt_out:
      reply: "You won't hear from us again. Reply START to come back."
    reset:
      code: resetmyhistory
      reply: "Starting over."
    welcome:
      text: "Welcome to Parley!"
      after_silence: 30d
    after_hours:
      timezone: Europe/London
      hours: {mon: "09:00-17:00", tue: ["09:00-12:00", "13:00-17:00"]}
      closed: [2026-12-25]
      reply: "We're closed now; we'll answer from 9:00."
    moderation:                        # off when absent (engine/moderation.py)
      categories: {self-harm: safe_message, violence/graphic: fallback}
      safe_message: "I'm a bot. If you are in danger, call 999 or text SHOUT to 85258."
      handover: queue:crisis           # default: auto (a person where agents are configured)
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from conversation.voice import VoiceSettings
from engine.flow import FlowError, FlowProblem, yaml_lines
from engine.moderation import ModerationSettings
from engine.steps.base import Duration

#: The settings file's name in ``FLOWS_DIR`` (files starting with ``_`` are not flows).
SETTINGS_FILE = "_settings.yaml"

#: Twilio's default opt-out keywords for SMS (Twilio docs, "Advanced Opt-Out").
OPT_OUT_KEYWORDS = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]
#: Twilio's default opt-in keywords.
OPT_IN_KEYWORDS = ["START", "YES", "UNSTOP"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


class OptOutSettings(BaseModel):
    """Opt-out keywords: a contact who sends one gets no message at all until an opt-in one.

    On SMS, Twilio's Advanced Opt-Out (on by default) answers these keywords
    itself and blocks later messages to the contact (error 21610); Parley then
    stays silent (``reply_on_sms: false``) so the contact does not get two answers.
    """

    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = Field(default_factory=lambda: list(OPT_OUT_KEYWORDS))
    """Whole messages that opt out (case and accents ignored)."""
    opt_in_keywords: list[str] = Field(default_factory=lambda: list(OPT_IN_KEYWORDS))
    """Whole messages that opt back in; they mean nothing special to a contact
    who has not opted out (``YES`` stays an answer)."""
    reply: str = "You won't get any more messages from us. Reply START to come back."
    """The confirmation of an opt-out (the last message the contact gets)."""
    opt_in_reply: str = "Welcome back! You'll get our messages again."
    """The confirmation of an opt-in."""
    reply_on_sms: bool = False
    """Send `reply` and `opt_in_reply` on SMS too (only when Advanced Opt-Out is off)."""

    @field_validator("keywords", "opt_in_keywords", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(item, bool) for item in value):
            raise ValueError(
                'write yes/no/on/off keywords in quotes ("YES"): '
                "unquoted, YAML reads them as true/false"
            )
        return value


class ResetSettings(BaseModel):
    """A code that ends the contact's executions so the flow starts afresh (for testers)."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(default="resetmyhistory", min_length=1)
    """The whole message that resets (case and accents ignored)."""
    reply: str = ""
    """Sent before the flow starts again (nothing when empty)."""


class WelcomeSettings(BaseModel):
    """A welcome message before the flow, on first contact or after a long silence."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    """The welcome message (a template seeing ``contact``); the flow runs after it."""
    after_silence: Duration | None = None
    """Welcome again a contact who has not written for this long (``30d``);
    None: on first contact only."""


class AfterHoursSettings(BaseModel):
    """An automatic reply outside business hours."""

    model_config = ConfigDict(extra="forbid")

    timezone: str
    """An IANA time zone, e.g. ``Europe/London`` (daylight saving included)."""
    hours: dict[str, list[str]]
    """Opening hours by weekday (``mon`` … ``sun``), each a list of ``"HH:MM-HH:MM"``
    (or one such string); a missing day is closed all day. ``24:00`` ends a day."""
    closed: list[dt.date] = []
    """Dates closed all day (holidays), ``YYYY-MM-DD``."""
    reply: str = Field(min_length=1)
    """What a contact who writes while closed gets."""
    continue_flow: bool = False
    """Run the flow after the reply (true) or answer with the reply alone (false)."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}; use e.g. Europe/London") from error
        return value

    @field_validator("hours", mode="before")
    @classmethod
    def _spans(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        checked: dict[str, list[str]] = {}
        for day, spans in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown day {day!r}; use {', '.join(WEEKDAYS)}")
            spans = [spans] if isinstance(spans, str) else spans
            if not isinstance(spans, list):
                raise ValueError(f"{day}: a list of 'HH:MM-HH:MM'")
            for span in spans:
                _parse_span(str(span))
            checked[day] = [str(span) for span in spans]
        return checked

    def is_open(self, moment: dt.datetime) -> bool:
        """Whether `moment` (timezone-aware) is within business hours."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        if local.date() in self.closed:
            return False
        minute = local.hour * 60 + local.minute
        spans = self.hours.get(WEEKDAYS[local.weekday()], [])
        return any(start <= minute < end for start, end in map(_parse_span, spans))


def _parse_span(span: str) -> tuple[int, int]:
    """``"09:00-17:30"`` → (540, 1050) minutes since midnight.

    Raises:
        ValueError: not ``HH:MM-HH:MM`` with the start before the end.
    """
    match = _SPAN.match(span.strip())
    if not match:
        raise ValueError(f"{span!r} is not like 09:00-17:00")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start_h > 23 or start_m > 59 or end_m > 59 or end > 24 * 60 or start >= end:
        raise ValueError(f"{span!r}: the start must come before the end, within one day")
    return start, end


class ResponderSettings(BaseModel):
    """The settings file: each responder's section."""

    model_config = ConfigDict(extra="forbid")

    opt_out: OptOutSettings = OptOutSettings()
    """Opt-out keywords (``STOP``…) and opt-in keywords (``START``…)."""
    reset: ResetSettings = ResetSettings()
    """The reset code."""
    welcome: WelcomeSettings | None = None
    """A welcome message; none when absent."""
    after_hours: AfterHoursSettings | None = None
    """After-hours replies; none when absent."""
    moderation: ModerationSettings | None = None
    """Moderation of the contact's text before ``llm`` steps and of the
    model's replies (`engine.moderation`); off when absent."""
    voice_notes: VoiceSettings | None = None
    """Voice notes transcribed for the flow (conversation/voice.py); off when absent."""


def load_settings(flows_dir: Path) -> ResponderSettings:
    """The settings in ``flows_dir/_settings.yaml``, or the defaults when there is none.

    Raises:
        FlowError: the file is not valid; every problem with ``file:line``.
    """
    path = flows_dir / SETTINGS_FILE
    if not path.is_file():
        return ResponderSettings()
    settings, problems = parse_settings(path.read_text(encoding="utf-8"), str(path))
    if settings is None:
        raise FlowError(problems)
    return settings


def parse_settings(text: str, source: str) -> tuple[ResponderSettings | None, list[FlowProblem]]:
    """Parse a settings file's text.

    Returns:
        The settings (None when invalid) and the problems, each with its line.
    """
    try:
        data = yaml.safe_load(text)
        lines, _ = yaml_lines(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        reason = getattr(error, "problem", None) or str(error)
        return None, [
            FlowProblem(source, mark.line + 1 if mark else 1, f"not valid YAML: {reason}")
        ]
    if data is None:
        return ResponderSettings(), []
    if not isinstance(data, dict):
        return None, [FlowProblem(source, 1, "the settings file is a mapping of sections")]
    try:
        return ResponderSettings.model_validate(data), []
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = tuple(part for part in item["loc"] if not str(part).startswith("function-"))
            line = next(
                (
                    lines[location[:end]]
                    for end in range(len(location), 0, -1)
                    if location[:end] in lines
                ),
                1,
            )
            name = ".".join(str(part) for part in location) or "settings"
            problems.append(FlowProblem(source, line, f"{name}: {item['msg']}"))
        return None, problems
