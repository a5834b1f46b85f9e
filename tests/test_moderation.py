"""Moderation (issue 17): the contact's text before ``llm`` steps and the model's reply
before it is sent, through the real signed webhook and the fake OpenAI server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conversation.responder_settings import parse_settings
from engine.moderation import ModerationSettings, Moderator
from engine.ports import ModerationError, ModerationResult
from handover.control import control
from handover.routing import set_available
from models import Conversation, Message, User, db
from tests.admin_support import add_user, login
from tests.fakes.api_server import FakeAPI
from tests.fakes.openai_server import Error
from tests.twiml import messages_of

ROOT = Path(__file__).resolve().parent.parent
SENDER = "whatsapp:+15551230001"
FALLBACK = "Sorry, I'm having trouble right now."
SAFE = "I'm a bot. If you are in danger, call 999 or text SHOUT to 85258."

FLOW = f"""\
id: coach
trigger: {{default: true}}
fallback: "{FALLBACK}"
start: talk
steps:
  talk:
    llm: {{history: 0, until: "{{{{ false }}}}", max_turns: 20}}
"""

SETTINGS = f"""\
moderation:
  categories: {{self-harm: safe_message, violence: fallback, harassment: allow}}
  safe_message: "{SAFE}"
  handover: queue:crisis
"""


@pytest.fixture
def settings() -> str | None:
    return SETTINGS


@pytest.fixture
def agent_app() -> bool:
    """Whether an agent app gets the control events (``AGENT_WEBHOOK_URL``)."""
    return False


@pytest.fixture
def hooks(agent_app: bool) -> Iterator[FakeAPI | None]:
    if not agent_app:
        yield None
        return
    with FakeAPI() as api:
        api.answer("/hooks", {"ok": True})
        yield api


@pytest.fixture
def app_config(
    app_config: dict, tmp_path: Path, settings: str | None, hooks: FakeAPI | None
) -> dict:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "coach.yaml").write_text(FLOW, encoding="utf-8")
    if settings is not None:
        (folder / "_settings.yaml").write_text(settings, encoding="utf-8")
    config = {**app_config, "FLOWS_DIR": str(folder)}
    if hooks is not None:
        config.update(
            AGENT_WEBHOOK_URL=hooks.base_url + "/hooks",
            AGENT_WEBHOOK_SECRET="whsec_test",
            AGENT_WEBHOOK_DEADLINE="2",
            AGENT_WEBHOOK_BACKOFF="0.01",
        )
    return config


def flag_when(words: dict[str, dict[str, float]]):
    """A fake moderation model: a text containing a key is flagged with its scores."""

    def moderate(text: str):
        for word, scores in words.items():
            if word in text:
                return scores
        return {}

    return moderate


def say(twilio, text: str) -> list[str]:
    response = twilio.say(text, sender=SENDER)
    assert response.status_code == 200, response.data
    return messages_of(response.data)


def decisions(app) -> list[list[dict] | None]:
    with app.app_context():
        return list(
            db.session.scalars(
                sa.select(Message.moderation)
                .where(Message.direction == "inbound")
                .order_by(Message.id)
            )
        )


def test_an_unflagged_message_reaches_the_model_and_its_reply_is_checked(app, twilio, fake_openai):
    fake_openai.script("Let's find one small step.")
    assert say(twilio, "I want to sleep better") == ["Let's find one small step."]
    texts = [request["input"] for request in fake_openai.moderation_requests]
    assert texts == ["I want to sleep better", "Let's find one small step."]
    assert fake_openai.moderation_requests[0]["model"] == "omni-moderation-latest"
    assert decisions(app) == [None]


def test_self_harm_gets_the_safe_message_and_lands_in_the_inbox(app, twilio, fake_openai):
    add_user(app, "ann@example.org", "agent")
    fake_openai.moderate = flag_when({"hurt myself": {"self-harm": 0.91, "violence": 0.2}})
    assert say(twilio, "I want to hurt myself") == [SAFE]
    assert fake_openai.requests == []  # the model was never called
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
        assert control(db.session, cid).controlled_by == "queue:crisis"
        reply = db.session.scalars(sa.select(Message).where(Message.direction == "outbound")).one()
        assert (reply.body, reply.author) == (SAFE, "system")
    [record] = decisions(app)[0]
    assert (record["direction"], record["category"], record["action"]) == (
        "inbound",
        "self-harm",
        "safe_message",
    )
    assert record["score"] == pytest.approx(0.91)
    assert record["categories"]["violence"] == pytest.approx(0.2)


#: The settings without a `handover:` line: the automatic handover.
AUTO = SETTINGS.replace("  handover: queue:crisis\n", "")


def holder(app) -> tuple[int, str, bool]:
    """The conversation's id, who controls it, and whether a handover waits for an agent."""
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
        state = control(db.session, cid)
        return cid, state.controlled_by, state.pending


@pytest.mark.parametrize("settings", [AUTO])
def test_self_harm_goes_to_a_person_by_itself_when_agents_are_configured(
    app, twilio, fake_openai, client
):
    add_user(app, "ann@example.org", "agent")
    fake_openai.moderate = flag_when({"hurt myself": {"self-harm": 0.91}})
    assert say(twilio, "I want to hurt myself") == [SAFE]
    cid, controlled_by, pending = holder(app)
    assert (controlled_by, pending) == ("queue:support", True)  # HANDOVER_QUEUE: nobody available
    # The bot is silent now: the next message is for the person.
    assert say(twilio, "are you there?") == []
    assert fake_openai.requests == []
    with app.app_context():
        last = db.session.scalars(sa.select(Message).order_by(Message.id.desc())).first()
        assert (last.body, last.turn_status) == ("are you there?", "skipped")
    login(client, "ann@example.org")
    assert f"Conversation {cid}" in client.get("/admin/inbox").get_data(as_text=True)


@pytest.mark.parametrize("settings", [AUTO])
def test_an_available_agent_gets_it_whatever_their_role(app, twilio, fake_openai):
    add_user(app, "bo@example.org", "admin")  # an admin who answers in the inbox too
    with app.app_context():
        bo = db.session.scalars(sa.select(User.id)).one()
        set_available(db.session, bo, True)
        db.session.commit()
    fake_openai.moderate = flag_when({"hurt myself": {"self-harm": 0.91}})
    assert say(twilio, "I want to hurt myself") == [SAFE]
    assert holder(app)[1:] == (f"agent:{bo}", True)


@pytest.mark.parametrize("settings", [AUTO])
def test_without_agents_the_safe_message_stays_with_the_bot(app, twilio, fake_openai):
    add_user(app, "admin@example.org", "admin")  # not an agent, not available
    fake_openai.moderate = flag_when({"hurt myself": {"self-harm": 0.91}})
    fake_openai.script("I'm here. What's on your mind?")
    assert say(twilio, "I want to hurt myself") == [SAFE]
    assert holder(app)[1] == "bot"
    assert say(twilio, "thanks") == ["I'm here. What's on your mind?"]


@pytest.mark.parametrize("agent_app", [True])
@pytest.mark.parametrize("settings", [AUTO])
def test_an_agent_app_counts_as_agents(app, twilio, fake_openai, hooks):
    fake_openai.moderate = flag_when({"hurt myself": {"self-harm": 0.91}})
    assert say(twilio, "I want to hurt myself") == [SAFE]
    assert holder(app)[1] == "queue:support"
    events = [request["json"].get("kind") for request in hooks.requests]
    assert "handover" in events, events


@pytest.mark.parametrize(
    "settings", [AUTO + "  handover: none\n", AUTO + "  handover: false\n"], ids=["none", "false"]
)
def test_the_designer_can_opt_out_of_the_handover(app, twilio, fake_openai):
    add_user(app, "ann@example.org", "agent")
    fake_openai.moderate = flag_when({"hurt myself": {"self-harm": 0.91}})
    assert say(twilio, "I want to hurt myself") == [SAFE]
    assert holder(app)[1] == "bot"


@pytest.mark.parametrize("settings", [AUTO])
def test_a_failed_check_is_not_handed_over_by_itself(app, twilio, fake_openai):
    add_user(app, "ann@example.org", "agent")
    fake_openai.moderate = lambda text: Error(500)  # an outage would fill the inbox
    assert say(twilio, "hello") == [SAFE]
    assert holder(app)[1] == "bot"


def test_a_flagged_model_reply_is_never_sent(app, twilio, fake_openai):
    fake_openai.moderate = flag_when({"punch": {"violence": 0.88}})
    fake_openai.script("You should punch him.", "Let's breathe together.")
    assert say(twilio, "my brother annoys me") == [FALLBACK]
    with app.app_context():
        bodies = list(db.session.scalars(sa.select(Message.body).order_by(Message.id)))
    assert "You should punch him." not in bodies
    [record] = decisions(app)[0]
    assert (record["direction"], record["category"], record["action"]) == (
        "outbound",
        "violence",
        "fallback",
    )
    # The step stays: the contact's next message runs it again.
    assert say(twilio, "ok") == ["Let's breathe together."]


def test_an_allowed_category_is_recorded_and_goes_on(app, twilio, fake_openai):
    fake_openai.moderate = flag_when({"idiot": {"harassment": 0.7}})
    fake_openai.script("I hear you.")
    assert say(twilio, "my boss is an idiot") == ["I hear you."]
    [record] = decisions(app)[0]
    assert (record["category"], record["action"]) == ("harassment", "allow")


def test_a_failed_moderation_call_sends_the_safe_message_by_default(app, twilio, fake_openai):
    fake_openai.moderate = lambda text: Error(500)
    assert say(twilio, "hello") == [SAFE]
    assert fake_openai.requests == []
    [record] = decisions(app)[0]
    assert (record["action"], record["category"]) == ("safe_message", None)
    assert "500" in record["error"]


@pytest.mark.parametrize(
    "settings",
    [SETTINGS + "  on_error: {inbound: allow, outbound: allow}\n"],
)
def test_failing_open_is_the_designers_choice(app, twilio, fake_openai):
    fake_openai.moderate = lambda text: Error(500)
    fake_openai.script("Hi there.")
    assert say(twilio, "hello") == ["Hi there."]
    assert [record["action"] for record in decisions(app)[0]] == ["allow", "allow"]


@pytest.mark.parametrize("settings", [None])
def test_off_unless_configured(app, twilio, fake_openai):
    fake_openai.moderate = flag_when({"hurt": {"self-harm": 0.99}})
    fake_openai.script("Model reply.")
    assert say(twilio, "I want to hurt myself") == ["Model reply."]
    assert fake_openai.moderation_requests == []


def test_the_console_transcript_shows_the_decision(app, twilio, fake_openai, client):
    fake_openai.moderate = flag_when({"hurt myself": {"self-harm": 0.91}})
    say(twilio, "I want to hurt myself")
    add_user(app, "admin@example.org", "admin")
    login(client, "admin@example.org")
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
    page = client.get(f"/admin/conversations/{cid}").get_data(as_text=True)
    assert "moderation" in page and "self-harm" in page and "safe_message" in page


def test_curators_can_filter_on_moderation(app, twilio, fake_openai, client):
    fake_openai.moderate = flag_when({"hurt myself": {"self-harm": 0.91}})
    say(twilio, "I want to hurt myself")
    twilio.say("hello", sender="whatsapp:+15551230002")
    add_user(app, "admin@example.org", "admin")
    login(client, "admin@example.org")
    with app.app_context():
        flagged = db.session.scalars(
            sa.select(Conversation.id).join(Message).where(Message.moderation.is_not(None))
        ).one()
    page = client.get("/admin/conversations?moderated=yes").get_data(as_text=True)
    assert f"/admin/conversations/{flagged}" in page
    assert "2 conversations" in client.get("/admin/conversations").get_data(as_text=True)
    assert "1 conversation<" in page


def test_the_metrics_count_the_decisions(app, twilio, fake_openai):
    fake_openai.moderate = flag_when(
        {"hurt myself": {"self-harm": 0.91}, "idiot": {"harassment": 0.7}}
    )
    fake_openai.script("I hear you.")
    say(twilio, "my boss is an idiot")
    say(twilio, "I want to hurt myself")
    from curation import metrics

    with app.app_context():
        totals = metrics.build(db.session, 1).totals
    assert (totals["moderation"], totals["moderation_blocked"]) == (2, 1)


# The settings and the decision, without the app.


def test_a_subcategory_follows_its_parent_unless_listed():
    settings = ModerationSettings(
        categories={"self-harm": "safe_message", "self-harm/instructions": "fallback"},
        safe_message="Help is here.",
    )
    assert settings.action_for("self-harm/intent") == "safe_message"
    assert settings.action_for("self-harm/instructions") == "fallback"
    assert settings.action_for("hate") == "allow"


class Port:
    def __init__(self, result: ModerationResult | None) -> None:
        self.result = result

    def moderate(self, text: str, model: str, timeout: float | None) -> ModerationResult:
        if self.result is None:
            raise ModerationError("down")
        return self.result


def test_a_threshold_flags_a_score_the_endpoint_did_not_flag():
    settings = ModerationSettings(
        categories={"self-harm": "safe_message"},
        thresholds={"self-harm": 0.3},
        safe_message="Help is here.",
    )
    result = ModerationResult({"self-harm": False}, {"self-harm": 0.42})
    decision = Moderator(Port(result), settings).decide("text", "inbound", "talk", None)
    assert decision is not None and (decision.category, decision.action) == (
        "self-harm",
        "safe_message",
    )
    low = ModerationResult({"self-harm": False}, {"self-harm": 0.1})
    assert Moderator(Port(low), settings).decide("text", "inbound", "talk", None) is None


def test_a_flagged_reply_is_never_a_safe_message_and_failures_follow_on_error():
    settings = ModerationSettings(categories={"self-harm": "safe_message"}, safe_message="Help.")
    result = ModerationResult({"self-harm": True}, {"self-harm": 0.9})
    reply = Moderator(Port(result), settings).decide("text", "outbound", "talk", None)
    assert reply is not None and reply.action == "fallback"
    failed = Moderator(Port(None), settings)
    assert failed.decide("x", "inbound", "talk", None).action == "safe_message"
    assert failed.decide("x", "outbound", "talk", None).action == "fallback"


def test_settings_problems_have_file_and_line():
    text = "moderation:\n  categories: {self-harm: safe_message, selfharm: allow}\n"
    settings, problems = parse_settings(text, "flows/_settings.yaml")
    assert settings is None
    assert any("selfharm" in str(problem) for problem in problems)
    assert all(str(problem).startswith("flows/_settings.yaml:2:") for problem in problems)
    text = "moderation:\n  categories: {self-harm: safe_message}\n"
    settings, problems = parse_settings(text, "flows/_settings.yaml")
    assert settings is None and "safe_message" in str(problems[0])
    text = "moderation:\n  safe_message: Help.\n  handover: crisis\n"
    settings, problems = parse_settings(text, "flows/_settings.yaml")
    assert settings is None and str(problems[0]).startswith("flows/_settings.yaml:3:")
    assert "auto, none, available" in str(problems[0])


def test_the_recommended_coaching_configuration_in_the_readme_is_valid():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("# moderation: recommended for coaching flows")
    block = readme[start : readme.index("```", start)]
    settings, problems = parse_settings(block, "README.md")
    assert problems == [] and settings is not None and settings.moderation is not None
