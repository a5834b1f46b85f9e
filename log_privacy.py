"""No phone number in clear in the logs: a filter that masks them in every record.

Contacts are keyed by phone number, and numbers reach log lines in many ways: a
malformed ``From`` quoted in a 400's reason, a URL with ``?phone=``, a library's
error message. Rather than trust every call site, `PhoneMaskingFilter` rewrites
each record's message (and its exception text) before any handler sees it.

It is installed as a log record factory (`install`), because a filter attached
to a logger is not consulted for records of its child loggers, and handlers
(gunicorn's, pytest's ``caplog``) come and go. SQL parameters never get here:
the engine runs with ``hide_parameters=True`` (app.py).

What counts as a phone number here is deliberately broad (a false positive only
hides a number in a log line): ``+`` and 7 to 15 digits, spaces, dots, dashes or
parentheses between them (E.164 and how people write it, ITU-T E.164: at most
15 digits); ``%2B`` and the same (URL-encoded); and a bare run of 8 to 15
digits that is not part of a longer word (a WhatsApp ``WaId``, a number whose
``+`` was lost), which spares ids, counts and durations.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "[PHONE]"

_PHONE = re.compile(
    r"(?:\+|%2[Bb])[0-9](?:[\s.()-]{0,2}[0-9]){6,14}"  # +1 555 123 4567, %2B1555...
    r"|(?<![\w+%])[0-9]{8,15}(?![\w])"  # 15551234567, a WaId
)

_installed = threading.Lock()
_INSTALLED_MARK = "_parley_phone_mask"


def mask_phones(text: str) -> str:
    """`text` with every phone-number-like run replaced by ``[PHONE]``."""
    return _PHONE.sub(MASK, text)


class PhoneMaskingFilter(logging.Filter):
    """Rewrites a record so that its message and exception text show no phone number.

    The message is formatted once here (``msg % args``) and the record keeps
    the masked text with no arguments; an exception is formatted into
    ``exc_text`` (what `logging.Formatter` prints) and masked too. Never drops a
    record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask `record` in place; always True (keep the record)."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it for the handler to report
            return True
        record.msg, record.args = mask_phones(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_phones(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_phones(record.stack_info)
        return True


def install() -> None:
    """Mask phone numbers in every log record of the process (idempotent)."""
    with _installed:
        previous = logging.getLogRecordFactory()
        if getattr(previous, _INSTALLED_MARK, False):
            return
        masking = PhoneMaskingFilter()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            masking.filter(record)
            return record

        setattr(factory, _INSTALLED_MARK, True)
        logging.setLogRecordFactory(factory)
