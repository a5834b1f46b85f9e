"""A curated conversation as a conversation test for its flow (YAML).

The shape, until the flow-language test format (``flask flows test``) is
settled, is the simple one of ``tests/flows/script.py``::

    name: conversation-12
    flow: goal_setting
    turns:
      - contact: hello
        bot: ["Hi! Let's pick one small goal for this week.", "Which matters most...?"]
      - contact: sleep
        bot: ["..."]

Only this module knows the shape: switching to the official format is a change
here and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from curation.exports import ExportedConversation


def from_export(conversation: ExportedConversation) -> dict[str, Any]:
    """The test document for one exported (redacted) conversation.

    Bot messages before the contact's first message become the first turn's
    expected replies after an empty contact text.
    """
    turns: list[dict[str, Any]] = []
    for message in conversation.messages:
        if message.role == "user":
            turns.append({"contact": message.text, "bot": []})
        elif turns:
            turns[-1]["bot"].append(message.text)
        else:
            turns.append({"contact": "", "bot": [message.text]})
    return {
        "name": f"conversation-{conversation.id}",
        "flow": conversation.flow_id,
        "turns": turns,
    }


def dump(document: dict[str, Any]) -> str:
    """The document as YAML text (block style, Unicode kept)."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
