"""Reading TwiML answers in tests."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def messages_of(twiml: bytes | str) -> list[str]:
    """The text of each ``<Message>`` of a TwiML ``<Response>``, in order."""
    root = ET.fromstring(twiml)
    assert root.tag == "Response", twiml
    return [(element.text or "") for element in root.iter("Message")]
