"""Shared by the tests of the designer's quality loop (issue 16)."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa

from models import Message, db

ROOT = Path(__file__).resolve().parent.parent
COACH = [
    {"reply": "Movement it is! What kind of moving do you enjoy?", "goal": "", "agreed": False},
    {
        "reply": "How about a 10-minute walk after lunch?",
        "goal": "a 10-minute walk after lunch",
        "agreed": False,
    },
]


def copy_flows(app_config: dict, tmp_path: Path) -> Path:
    """Give the app about to start a copy of the shipped flows (saved tests go there)."""
    flows = tmp_path / "own_flows"
    shutil.copytree(ROOT / "flows", flows)
    app_config["FLOWS_DIR"] = str(flows)
    return flows


EMAIL = "ana.garcia@example.com"
ADDRESS = "1600 Pennsylvania Avenue NW, Washington, DC 20500"
PRIVATE = f"I walk from {ADDRESS} most days; write to {EMAIL} or call +1 555 123 0001"
AGREED = {
    "reply": "Wonderful, it's a deal!",
    "goal": "a 10-minute walk after lunch",
    "agreed": True,
}


def run_a_conversation(twilio, fake_openai) -> None:
    """hello → area 2 → the coach twice (private details) → agreed."""
    fake_openai.script(COACH[0], {**COACH[1], "goal": f"walks logged to {EMAIL}"}, AGREED)
    twilio.say("hello", ProfileName="Ana")
    twilio.say("2")
    twilio.say(PRIVATE)
    twilio.say("Yes, let's do it!")


def conversation_id(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(Message.conversation_id).limit(1))


def assert_private_details_absent(text: str) -> None:
    assert "5551230001" not in text.replace(" ", "").replace("-", "")
    assert "555 123 0001" not in text
    assert EMAIL not in text and "ana.garcia" not in text
    assert "Pennsylvania" not in text and "1600" not in text
    assert "Ana" not in text
