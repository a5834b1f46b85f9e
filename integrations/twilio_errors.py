"""What Twilio's error codes mean, in words a console user can act on.

Twilio reports a failed message with a numeric ``ErrorCode`` (the REST API's
``code`` when it refuses a send, the status callback's ``ErrorCode`` when a
carrier or WhatsApp drops it later). The console shows the code, a short
meaning and the link to Twilio's page for it (``https://www.twilio.com/docs/errors/<code>``).
The meanings below are the common messaging errors, from Twilio's error
dictionary; any other code is shown with its link only.
"""

from __future__ import annotations

#: Short meanings of common messaging error codes (Twilio's error dictionary).
MEANINGS: dict[int, str] = {
    20003: "Twilio refused the account's credentials",
    20429: "too many requests to Twilio",
    21211: "the 'To' number is not a valid phone number",
    21408: "the account may not send to this region",
    21610: "the contact replied STOP: Twilio blocks messages to them",
    21612: "Twilio cannot route a message between these two numbers",
    21614: "the 'To' number is not a mobile number",
    21617: "the message is longer than 1,600 characters",
    30003: "the phone is unreachable (off or out of coverage)",
    30004: "the message was blocked by the contact or their carrier",
    30005: "unknown destination: the number may not exist",
    30006: "a landline or unreachable carrier",
    30007: "the carrier filtered the message as spam",
    30008: "unknown error from the carrier",
    63003: "the WhatsApp number is not valid",
    63016: "outside WhatsApp's 24-hour window: only an approved template can be sent",
    63018: "WhatsApp's rate limit for this sender was reached",
    63024: "the WhatsApp recipient is not valid",
}


def error_url(code: int) -> str:
    """Twilio's documentation page for an error code."""
    return f"https://www.twilio.com/docs/errors/{code}"


def describe(code: int | None) -> str:
    """``Twilio error 30007: the carrier filtered the message as spam`` (or the code alone).

    Args:
        code: Twilio's error code, or None.

    Returns:
        A sentence for the console; empty when `code` is None.
    """
    if code is None:
        return ""
    meaning = MEANINGS.get(code)
    return f"Twilio error {code}: {meaning}" if meaning else f"Twilio error {code}"
