"""Voice notes (issue 17): downloaded from Twilio with Basic auth, transcribed by the
OpenAI-compatible fake, handed to the flow as text; through the real signed webhook,
inline and queued."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from app import create_app
from conversation.responder_settings import parse_settings
from integrations.twilio import MediaError, TwilioMedia
from models import Contact, Conversation, Message, db
from tasks import dispatcher
from tests.admin_support import add_user, login
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, TwilioWebhook
from tests.delivery_support import redis_or_skip
from tests.fakes.openai_server import Error, prompt_of
from tests.twiml import messages_of

ROOT = Path(__file__).resolve().parent.parent
SENDER = "whatsapp:+15551230001"
OGG = b"OggS\x00\x02" + bytes(range(256)) * 8  # 2 KB standing in for a voice note
#: A real Ogg Opus recording of 3 seconds (a tone; tests/data/audio/README.md says how it was made).
OPUS_3S = (ROOT / "tests" / "data" / "audio" / "tone_3s.ogg").read_bytes()
SORRY = "I couldn't listen to that, could you type it?"

FLOW = """\
id: coach
trigger: {default: true}
fallback: "Sorry, I'm having trouble right now."
start: note
steps:
  note:
    say: "{% if input.transcribed %}(voice note, {{ input.media | length }} media){% endif %}"
    next: talk
  talk:
    llm: {history: 0, until: "{{ false }}", max_turns: 20}
"""

SETTINGS = f"""\
voice_notes:
  model: whisper-1
  max_mb: 0.01
  language: en
  reply: "{SORRY}"
"""


@pytest.fixture
def settings() -> str | None:
    return SETTINGS


@pytest.fixture
def flow() -> str:
    return FLOW


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path, settings: str | None, flow: str) -> dict:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "coach.yaml").write_text(flow, encoding="utf-8")
    if settings is not None:
        (folder / "_settings.yaml").write_text(settings, encoding="utf-8")
    return {**app_config, "FLOWS_DIR": str(folder)}


@pytest.fixture(autouse=True)
def echo(fake_openai):
    fake_openai.answer = lambda body: f"heard: {prompt_of(body)}"


def voice_note(twilio, fake_twilio, data: bytes = OGG, content_type: str = "audio/ogg"):
    url = fake_twilio.add_media(data, content_type)
    return twilio.post(
        twilio.form("", sender=SENDER, NumMedia="1", MediaUrl0=url, MediaContentType0=content_type)
    )


def inbound(app) -> Message:
    """The contact's latest message."""
    with app.app_context():
        query = sa.select(Message).where(Message.direction == "inbound").order_by(Message.id)
        row = db.session.scalars(query).all()[-1]
        db.session.expunge(row)
        return row


def test_a_voice_note_is_transcribed_and_answered_inline(app, twilio, fake_twilio, fake_openai):
    fake_openai.transcribe = lambda audio: "I want to sleep better" if audio == OGG else "??"
    response = voice_note(twilio, fake_twilio)
    assert response.status_code == 200
    assert messages_of(response.data) == [
        "(voice note, 1 media)",
        "heard: I want to sleep better",
    ]
    assert [request["authorized"] for request in fake_twilio.media_requests] == [True]
    [upload] = fake_openai.transcription_requests
    assert (upload["model"], upload["filename"], upload["language"]) == (
        "whisper-1",
        "voice.ogg",
        "en",
    )
    message = inbound(app)
    assert message.body == ""  # what the contact sent; the transcript is beside it
    assert message.media["transcript"]["text"] == "I want to sleep better"
    assert message.media["transcript"]["bytes"] == len(OGG)
    assert "audio_seconds" not in message.media["transcript"]  # these bytes have no length
    assert message.media["urls"] and message.turn_status == "done"


def test_a_voice_note_is_transcribed_in_the_worker_not_the_webhook(
    app, app_config, fake_twilio, fake_openai
):
    # `app` empties the tables; `queued` is the same app with turns queued.
    fake_openai.transcribe = lambda audio: "Movement, please"
    queued = create_app({**app_config, "REDIS_URL": redis_or_skip()})
    try:
        response = voice_note(TwilioWebhook(queued.test_client()), fake_twilio)
        assert response.status_code == 200 and messages_of(response.data) == []
        assert fake_openai.transcription_requests == []  # not in the webhook
        assert fake_twilio.media_requests == []
        with queued.app_context():
            [contact_id] = db.session.scalars(sa.select(Contact.id)).all()
            assert dispatcher().drain(contact_id)
            db.session.remove()
        assert fake_twilio.bodies == ["(voice note, 1 media)", "heard: Movement, please"]
        assert inbound(queued).media["transcript"]["text"] == "Movement, please"
    finally:
        with queued.app_context():
            db.session.remove()
            db.engine.dispose()


def test_a_failed_transcription_gets_the_clear_reply_and_nothing_is_lost(
    app, twilio, fake_twilio, fake_openai
):
    fake_openai.transcribe = lambda audio: Error(500)
    response = voice_note(twilio, fake_twilio)
    assert messages_of(response.data) == [SORRY]
    assert fake_openai.requests == []  # the flow did not run
    message = inbound(app)
    assert message.media["urls"] and "500" in message.media["transcript"]["error"]
    # The contact types instead, and the flow goes on.
    assert messages_of(twilio.say("I want to sleep better", sender=SENDER).data) == [
        "heard: I want to sleep better"
    ]


def test_a_voice_note_over_the_size_limit_is_not_transcribed(app, twilio, fake_twilio, fake_openai):
    response = voice_note(twilio, fake_twilio, data=b"x" * 20_000)
    assert messages_of(response.data) == [SORRY]
    assert fake_openai.transcription_requests == []
    assert "limit" in inbound(app).media["transcript"]["error"]


@pytest.mark.parametrize("settings", [SETTINGS + "  max_seconds: 2\n"])
def test_a_voice_note_over_the_duration_limit_is_not_transcribed(
    app, twilio, fake_twilio, fake_openai
):
    response = voice_note(twilio, fake_twilio, data=OPUS_3S)
    assert messages_of(response.data) == [SORRY]
    assert fake_openai.transcription_requests == []  # nothing paid for
    assert fake_openai.requests == []  # the flow did not run
    message = inbound(app)
    heard = message.media["transcript"]
    assert heard["audio_seconds"] == 3.0 and heard["bytes"] == len(OPUS_3S)
    assert "VoiceNoteTooLong" in heard["error"] and "limit of 2 s" in heard["error"]
    assert message.media["urls"] and message.media["types"] == ["audio/ogg"]
    # The contact types instead, and the flow goes on.
    assert messages_of(twilio.say("I want to sleep better", sender=SENDER).data) == [
        "heard: I want to sleep better"
    ]


def test_a_voice_note_within_the_duration_limit_is_transcribed(
    app, twilio, fake_twilio, fake_openai
):
    fake_openai.transcribe = lambda audio: "Sleep" if audio == OPUS_3S else "??"
    response = voice_note(twilio, fake_twilio, data=OPUS_3S)
    assert messages_of(response.data) == ["(voice note, 1 media)", "heard: Sleep"]
    assert inbound(app).media["transcript"]["audio_seconds"] == 3.0


@pytest.mark.parametrize("settings", [SETTINGS + "  max_seconds: 1\n"])
def test_a_voice_note_of_unknown_length_is_held_to_the_size_limit_only(
    app, twilio, fake_twilio, fake_openai
):
    fake_openai.transcribe = lambda audio: "Movement"
    response = voice_note(twilio, fake_twilio, data=OGG)  # no length mutagen can read
    assert messages_of(response.data) == ["(voice note, 1 media)", "heard: Movement"]
    assert len(fake_openai.transcription_requests) == 1


def test_the_transcript_is_in_the_console_and_the_inbox(
    app, twilio, fake_twilio, fake_openai, client
):
    fake_openai.transcribe = lambda audio: "Connection matters most"
    voice_note(twilio, fake_twilio)
    add_user(app, "admin@example.org", "admin")
    login(client, "admin@example.org")
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
    page = client.get(f"/admin/conversations/{cid}").get_data(as_text=True)
    assert "Connection matters most" in page and "transcript" in page
    inbox = client.get(f"/admin/inbox/{cid}").get_data(as_text=True)
    assert "(voice note) Connection matters most" in inbox


@pytest.mark.parametrize("settings", [None])
def test_off_unless_configured(app, twilio, fake_twilio, fake_openai):
    response = voice_note(twilio, fake_twilio)
    assert messages_of(response.data) == ["heard:"]
    assert fake_openai.transcription_requests == [] and fake_twilio.media_requests == []


@pytest.mark.parametrize("settings", [SETTINGS + "  off_in_flows: [coach]\n"])
def test_a_flow_can_turn_transcription_off(app, twilio, fake_twilio, fake_openai):
    twilio.say("hello", sender=SENDER)  # the contact is now in `coach`
    voice_note(twilio, fake_twilio)
    assert fake_openai.transcription_requests == []


#: A question whose answer is kept as audio, then a conversation with the model.
SWITCHED = """\
id: coach
trigger: {default: true}
start: week
steps:
  week:
    ask: "Tell me about your week."
    type: media
    transcribe: false
    save_as: week
    next: got
  got:
    say: "{{ 'transcribed' if input.transcribed else 'kept' }}: {{ input.text or '-' }}, \\
      {{ vars.week | length }} media"
    next: talk
  talk:
    llm: {history: 0, until: "{{ false }}", max_turns: 20}
"""


@pytest.mark.parametrize("flow", [SWITCHED])
def test_a_step_can_turn_transcription_off(app, twilio, fake_twilio, fake_openai):
    fake_openai.transcribe = lambda audio: "Busy, but good"
    assert messages_of(twilio.say("hi", sender=SENDER).data) == ["Tell me about your week."]
    # Waiting at `week` (transcribe: false): the audio as media, no text, as without voice notes.
    response = voice_note(twilio, fake_twilio)
    assert messages_of(response.data) == ["kept: -, 1 media", "heard:"]
    assert fake_openai.transcription_requests == [] and fake_twilio.media_requests == []
    assert "transcript" not in inbound(app).media
    # Waiting at `talk` (transcribe by default): transcribed again.
    response = voice_note(twilio, fake_twilio)
    assert messages_of(response.data) == ["heard: Busy, but good"]
    assert len(fake_openai.transcription_requests) == 1


@pytest.mark.parametrize(
    "flow", ["transcribe: false\n" + SWITCHED.replace("    transcribe: false\n", "")]
)
def test_a_flow_file_can_turn_transcription_off(app, twilio, fake_twilio, fake_openai):
    # A contact in no flow: the flow the voice note starts (the default) says no.
    assert messages_of(voice_note(twilio, fake_twilio).data) == ["Tell me about your week."]
    assert messages_of(voice_note(twilio, fake_twilio).data) == ["kept: -, 1 media", "heard:"]
    assert messages_of(voice_note(twilio, fake_twilio).data) == ["heard:"]
    assert fake_openai.transcription_requests == [] and fake_twilio.media_requests == []


def test_images_are_not_transcribed(app, twilio, fake_twilio, fake_openai):
    response = voice_note(twilio, fake_twilio, data=b"\xff\xd8", content_type="image/jpeg")
    assert messages_of(response.data) == ["heard:"]
    assert fake_openai.transcription_requests == []


# The media download, without the app.


def test_credentials_go_only_to_twilio(fake_twilio):
    media = TwilioMedia(ACCOUNT_SID, AUTH_TOKEN, api_base_url=fake_twilio.base_url)
    url = fake_twilio.add_media(OGG, "audio/ogg")
    assert media.fetch(url, 100_000, 5) == (OGG, "audio/ogg")
    with pytest.raises(MediaError, match="not Twilio's"):
        media.fetch("https://example.org/2010-04-01/x.ogg", 100_000, 5)
    wrong = TwilioMedia(ACCOUNT_SID, "wrong", api_base_url=fake_twilio.base_url)
    with pytest.raises(MediaError, match="401"):
        wrong.fetch(url, 100_000, 5)
    assert [request["authorized"] for request in fake_twilio.media_requests] == [True, False]


def test_the_documented_settings_are_valid():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("# voice notes: transcribed for the flow")
    block = readme[start : readme.index("```", start)]
    settings, problems = parse_settings(block, "README.md")
    assert problems == [] and settings is not None and settings.voice_notes is not None
