"""Responders from FLOWS_DIR/_settings.yaml, through the real webhook: opt-out, reset, welcome,
after hours."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import create_app
from conversation.responder_settings import AfterHoursSettings, parse_settings
from engine.flow import FlowError
from models import Execution, Message, OptOut, db
from models.store import OutboundPart, SqlStore, StoredInbound
from tests.conftest import OUR_WHATSAPP
from tests.twiml import messages_of

ROOT = Path(__file__).resolve().parent.parent
WHATSAPP = "whatsapp:+15551230001"
SMS = "+15551230002"
OUR_SMS = "+15550009999"
GREETING = "Hi Ana! I'm Parley, your well-being companion. Let's pick one small goal for this week."
QUESTION = "Which matters most to you right now: 1. sleep, 2. movement or 3. connection?"
STOPPED = "You won't get any more messages from us. Reply START to come back."
BACK = "Welcome back! You'll get our messages again."


def flows_dir(tmp_path: Path, settings: str | None) -> Path:
    """The shipped flows, and a settings file, in a folder of their own."""
    folder = tmp_path / "flows"
    folder.mkdir()
    for path in (ROOT / "flows").glob("*.yaml"):
        if not path.name.startswith("_"):
            shutil.copy(path, folder / path.name)
    if settings is not None:
        (folder / "_settings.yaml").write_text(settings, encoding="utf-8")
    return folder


@pytest.fixture
def settings() -> str | None:
    return None


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path, settings: str | None) -> dict:
    return {**app_config, "FLOWS_DIR": str(flows_dir(tmp_path, settings))}


def say(twilio, text: str, sender: str = WHATSAPP) -> list[str]:
    to = OUR_WHATSAPP if sender.startswith("whatsapp:") else OUR_SMS
    response = twilio.post(twilio.form(text, sender=sender, to=to, ProfileName="Ana"))
    assert response.status_code == 200, response.data
    return messages_of(response.data)


# Opt-out keywords.


def test_stop_silences_everything_until_start_on_whatsapp(app, twilio):
    assert say(twilio, "hello") == [GREETING, QUESTION]

    assert say(twilio, " Stop ") == [STOPPED]
    assert say(twilio, "hello?") == []
    assert say(twilio, "billing") == []  # not even the billing keyword answers
    assert say(twilio, "yes") == [BACK]  # an opt-in keyword, since the contact opted out
    assert say(twilio, "sleep") != []

    with app.app_context():
        assert db.session.scalars(sa.select(OptOut)).all() == []
        inbound = db.session.scalars(
            sa.select(Message.body).where(Message.direction == "inbound").order_by(Message.id)
        ).all()
        assert inbound == ["hello", " Stop ", "hello?", "billing", "yes", "sleep"]


@pytest.mark.parametrize("keyword", ["STOP", "stopall", "UNSUBSCRIBE", "cancel", "End", "QUIT"])
def test_twilios_opt_out_keywords_on_sms_get_no_answer_of_ours(app, twilio, keyword):
    # Twilio's Advanced Opt-Out answers them on SMS itself.
    assert say(twilio, keyword, sender=SMS) == []
    assert say(twilio, "hello", sender=SMS) == []
    with app.app_context():
        opt_out = db.session.scalars(sa.select(OptOut)).one()
        assert (opt_out.keyword, opt_out.channel) == (keyword.upper(), "sms")
    assert say(twilio, "UNSTOP", sender=SMS) == []
    assert say(twilio, "hello", sender=SMS) == [GREETING, QUESTION]


def test_opt_in_keywords_are_plain_answers_for_contacts_who_did_not_opt_out(app, twilio):
    assert say(twilio, "start") == [GREETING, QUESTION]  # goal_setting's own keyword


def test_send_stored_cancels_messages_to_a_contact_who_opted_out(app, twilio, fake_twilio):
    say(twilio, "hello")
    say(twilio, "STOP")
    with app.app_context():
        store = SqlStore(db.session)
        message = db.session.scalars(sa.select(Message).order_by(Message.id)).first()
        ids = store.store_outbound(
            StoredInbound(0, message.contact_id, message.conversation_id),
            [OutboundPart(body="A reminder.")],
            execution_id=None,
            flow_id=None,
        )
        db.session.commit()

        sent = app.extensions["parley"].send_stored(ids, db.session)

        assert sent == 0
        assert db.session.get(Message, ids[0]).status == "canceled"
    assert fake_twilio.requests == []


@pytest.mark.parametrize(
    "settings",
    ['opt_out:\n  keywords: [arrête]\n  reply: "Au revoir."\n  opt_in_keywords: [reprendre]\n'],
)
def test_opt_out_keywords_are_configurable(app, twilio):
    assert say(twilio, "STOP") == [GREETING, QUESTION]  # not a keyword any more
    assert say(twilio, "ARRETE") == ["Au revoir."]  # accents ignored
    assert say(twilio, "hello") == []


# The reset code.


def test_reset_code_ends_the_execution_and_starts_afresh(app, twilio):
    say(twilio, "hello")

    assert say(twilio, "ResetMyHistory") == [GREETING, QUESTION]

    with app.app_context():
        executions = db.session.scalars(sa.select(Execution).order_by(Execution.id)).all()
        assert [(e.status, e.current_step) for e in executions] == [
            ("ended", "area"),
            ("waiting", "area"),
        ]


@pytest.mark.parametrize("settings", ["reset:\n  code: clean slate\n  reply: Starting over.\n"])
def test_reset_code_and_reply_are_configurable(app, twilio):
    say(twilio, "hello")
    assert say(twilio, "resetmyhistory") != [GREETING, QUESTION]  # an answer to `area` now
    assert say(twilio, "Clean Slate") == ["Starting over.", GREETING, QUESTION]


# Welcome.

WELCOME = 'welcome:\n  text: "Welcome, {{ contact.name }}!"\n  after_silence: 30d\n'


@pytest.mark.parametrize("settings", [WELCOME])
def test_welcome_on_first_contact_and_after_a_silence(app, twilio):
    assert say(twilio, "hello") == ["Welcome, Ana!", GREETING, QUESTION]
    assert say(twilio, "what?")[0] != "Welcome, Ana!"

    with app.app_context():
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
        db.session.execute(sa.update(Message).values(created_at=long_ago))
        db.session.commit()
    assert say(twilio, "sleep")[0] == "Welcome, Ana!"


@pytest.mark.parametrize("settings", ["welcome:\n  text: Hello from Parley.\n"])
def test_welcome_without_after_silence_is_for_first_contact_only(app, twilio):
    assert say(twilio, "hello") == ["Hello from Parley.", GREETING, QUESTION]
    with app.app_context():
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
        db.session.execute(sa.update(Message).values(created_at=long_ago))
        db.session.commit()
    assert "Hello from Parley." not in say(twilio, "what?")


# After hours.

CLOSED_ALWAYS = "after_hours:\n  timezone: Europe/London\n  hours: {}\n  reply: We're closed.\n"
CLOSED_THEN_FLOW = CLOSED_ALWAYS + "  continue_flow: true\n"
OPEN_ALWAYS = (
    "after_hours:\n  timezone: Pacific/Auckland\n  reply: We're closed.\n  hours:\n"
    + "".join(f"    {day}: '00:00-24:00'\n" for day in ("mon", "tue", "wed", "thu", "fri"))
    + "".join(f"    {day}: ['00:00-12:00', '12:00-24:00']\n" for day in ("sat", "sun"))
)


@pytest.mark.parametrize("settings", [CLOSED_ALWAYS])
def test_after_hours_reply_instead_of_the_flow(app, twilio):
    assert say(twilio, "hello") == ["We're closed."]
    with app.app_context():
        assert db.session.scalars(sa.select(Execution)).all() == []


@pytest.mark.parametrize("settings", [CLOSED_THEN_FLOW])
def test_after_hours_reply_then_the_flow(app, twilio):
    assert say(twilio, "hello") == ["We're closed.", GREETING, QUESTION]


@pytest.mark.parametrize("settings", [OPEN_ALWAYS + WELCOME])
def test_no_after_hours_reply_while_open(app, twilio):
    assert say(twilio, "hello") == ["Welcome, Ana!", GREETING, QUESTION]


def hours(**extra) -> AfterHoursSettings:
    return AfterHoursSettings(
        timezone="America/New_York",
        hours={"mon": ["09:00-12:00", "13:00-17:30"], "sat": "10:00-14:00"},
        reply="Closed.",
        **extra,
    )


@pytest.mark.parametrize(
    ("utc", "is_open"),
    [
        ("2026-03-02T13:59", False),  # Monday 08:59 in New York (EST, UTC-5)
        ("2026-03-02T14:00", True),  # 09:00
        ("2026-03-02T17:00", False),  # 12:00, lunch
        ("2026-03-02T22:29", True),  # 17:29
        ("2026-03-02T22:30", False),  # 17:30
        ("2026-03-03T15:00", False),  # Tuesday: no hours
        ("2026-03-09T13:30", True),  # Monday 09:30 EDT (UTC-4), after the change
        ("2026-03-07T15:00", True),  # Saturday 10:00
    ],
)
def test_business_hours_in_the_time_zone(utc, is_open):
    moment = dt.datetime.fromisoformat(utc).replace(tzinfo=dt.UTC)
    assert hours().is_open(moment) is is_open


def test_closed_dates_are_closed_all_day():
    monday = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
    assert hours(closed=[dt.date(2026, 3, 2)]).is_open(monday) is False


# The settings file is validated like a flow: every problem with file:line.

BROKEN = """\
opt_out:
  reply_on_sms: perhaps
welcome:
  after_silence: soon
after_hours:
  timezone: Mars/Olympus
  hours:
    monday: "09:00-17:00"
  reply: closed
reset:
  kode: x
"""


def test_settings_problems_have_file_and_line():
    settings, problems = parse_settings(BROKEN, "flows/_settings.yaml")

    assert settings is None
    found = sorted((problem.line, problem.message.split(":")[0]) for problem in problems)
    assert found == [
        (2, "opt_out.reply_on_sms"),
        (3, "welcome.text"),
        (4, "welcome.after_silence"),
        (6, "after_hours.timezone"),
        (7, "after_hours.hours"),
        (11, "reset.kode"),
    ]
    assert all(str(problem).startswith("flows/_settings.yaml:") for problem in problems)


def test_unquoted_yes_is_refused_with_a_hint():
    settings, problems = parse_settings("opt_out:\n  opt_in_keywords: [START, YES]\n", "s.yaml")
    assert settings is None
    assert [(problem.line, "in quotes" in problem.message) for problem in problems] == [(2, True)]


def test_the_shipped_settings_file_is_valid():
    settings, problems = parse_settings((ROOT / "flows" / "_settings.yaml").read_text(), "x")
    assert problems == []
    assert "YES" in settings.opt_out.opt_in_keywords


def test_the_server_refuses_to_start_on_a_broken_settings_file(app_config, tmp_path):
    folder = Path(app_config["FLOWS_DIR"])
    (folder / "_settings.yaml").write_text(BROKEN, encoding="utf-8")

    with pytest.raises(FlowError) as raised:
        create_app(app_config)

    assert f"{folder / '_settings.yaml'}:6:" in str(raised.value)


def test_the_settings_file_is_not_a_flow(app_config):
    folder = Path(app_config["FLOWS_DIR"])
    (folder / "_settings.yaml").write_text("welcome:\n  text: Hi.\n", encoding="utf-8")
    app = create_app(app_config)
    assert sorted(app.extensions["parley"].flows.flows) == ["goal_setting", "menu"]
