"""Twilio Studio's *Split Based On* operators, as Jinja tests for conditions.

Registered on every template environment (`engine.templating.Templates`), so a
condition reads like Studio's widget::

    - if: "vars.area is matches_any_of(['sleep', 'rest'])"
      then: sleep_tips
    - if: "input.text is starts_with('stop')"
      then: bye
    - if: "vars.age is greater_than(17)"
      then: adult
    - if: "vars.note is is_blank"
      then: ask_note

Text comparisons (``equal_to``, ``not_equal_to``, ``matches_any_of``,
``does_not_match_any_of``, ``contains``, ``does_not_contain``, ``starts_with``)
ignore case, accents and surrounding spaces and punctuation, as Studio's
string operators ignore case and as ``ask`` matches choices: ``"Sléep! "`` is
equal to ``"sleep"``. ``regex`` searches the text as written, case-insensitively
(write ``(?-i)`` at the start of the pattern for case-sensitive matching).
``greater_than`` and ``less_than`` compare numbers. As in Studio, a value that
is empty or not a number does not match (Studio takes ``noMatch``), and the
comparison is logged (``flow.operator.not_a_number``) so it is not silent; a
value to compare with that is not a number is the designer's mistake and fails
the condition with an error.

``matches_any_of`` takes a list, or a comma-separated string as Studio does
(``'sleep, rest'``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import Undefined

from engine.text import fold

log = logging.getLogger("parley.engine")


def _text(value: Any) -> str:
    if value is None or isinstance(value, Undefined):
        return ""
    return str(value)


def _options(values: Any) -> list[str]:
    if isinstance(values, str):
        return [part for part in values.split(",") if part.strip()]
    if isinstance(values, Iterable):
        return [_text(item) for item in values]
    return [_text(values)]


def _number(value: Any, operator: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{operator}: {value!r} is not a number")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(_text(value).strip().replace(",", "."))
    except ValueError:
        raise ValueError(f"{operator}: {_text(value)!r} is not a number") from None


def equal_to(value: Any, other: Any) -> bool:
    """The text equals `other` (case, accents and surrounding punctuation ignored)."""
    return fold(_text(value)) == fold(_text(other))


def not_equal_to(value: Any, other: Any) -> bool:
    """The opposite of `equal_to`."""
    return not equal_to(value, other)


def matches_any_of(value: Any, options: Any) -> bool:
    """The text equals one of `options` (a list, or ``'a, b, c'``)."""
    folded = fold(_text(value))
    return any(fold(option) == folded for option in _options(options))


def does_not_match_any_of(value: Any, options: Any) -> bool:
    """The opposite of `matches_any_of`."""
    return not matches_any_of(value, options)


def contains(value: Any, part: Any) -> bool:
    """`part` occurs in the text (case and accents ignored)."""
    return fold(_text(part)) in fold(_text(value))


def does_not_contain(value: Any, part: Any) -> bool:
    """The opposite of `contains`."""
    return not contains(value, part)


def starts_with(value: Any, prefix: Any) -> bool:
    """The text starts with `prefix` (case and accents ignored)."""
    return fold(_text(value)).startswith(fold(_text(prefix)))


def regex(value: Any, pattern: Any) -> bool:
    """The regular expression `pattern` (Python syntax) matches somewhere in the text.

    Raises:
        re.error: the pattern is not a valid regular expression.
    """
    return re.search(_text(pattern), _text(value), flags=re.IGNORECASE) is not None


def _compared(value: Any, other: Any, operator: str) -> tuple[float, float] | None:
    """Both sides as numbers; None (no match) when `value` is empty or not a number."""
    limit = _number(other, operator)
    try:
        return _number(value, operator), limit
    except ValueError:
        log.info("flow.operator.not_a_number operator=%s", operator)
        return None


def greater_than(value: Any, other: Any) -> bool:
    """The number is greater than `other`; False when the value is not a number (Studio).

    Raises:
        ValueError: `other` is not a number.
    """
    pair = _compared(value, other, "greater_than")
    return pair is not None and pair[0] > pair[1]


def less_than(value: Any, other: Any) -> bool:
    """The number is less than `other`; False when the value is not a number (Studio).

    Raises:
        ValueError: `other` is not a number.
    """
    pair = _compared(value, other, "less_than")
    return pair is not None and pair[0] < pair[1]


def is_blank(value: Any) -> bool:
    """Nothing there: undefined, None, blank text, or an empty list or mapping."""
    if value is None or isinstance(value, Undefined):
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | dict | set):
        return not value
    return False


def is_not_blank(value: Any) -> bool:
    """The opposite of `is_blank`."""
    return not is_blank(value)


OPERATORS: dict[str, Callable[..., bool]] = {
    "equal_to": equal_to,
    "not_equal_to": not_equal_to,
    "matches_any_of": matches_any_of,
    "does_not_match_any_of": does_not_match_any_of,
    "contains": contains,
    "does_not_contain": does_not_contain,
    "starts_with": starts_with,
    "regex": regex,
    "greater_than": greater_than,
    "less_than": less_than,
    "is_blank": is_blank,
    "is_not_blank": is_not_blank,
}
"""Operator name → Jinja test, as registered on the template environment."""
