"""Redaction of personal data before anything reaches the store.

Runs in the store's writer thread, never on the request path. It rewrites string values only, so
the stored request keeps its JSON shape (roles, parameters, tool schemas) and stays replayable.
"""

from __future__ import annotations

import re
from typing import Any

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13-19 digits, optionally in groups separated by spaces or dashes; confirmed with Luhn below so
# that order numbers and timestamps survive.
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
# Phone numbers need separators or a leading +, so that plain quantities and years are kept.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?!\w)"
)


# Cheap necessary conditions, tested before the full patterns: most text has no e-mail address,
# card or phone number, and scanning a 3 KB prompt with the full patterns costs ~0.25 ms.
_CARD_HINT = re.compile(r"\d[ -]?\d[ -]?\d[ -]?\d[ -]?\d[ -]?\d")
_PHONE_HINT = re.compile(r"\d{3}[\s.-]\d{3}")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_sub(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)


def _has_at(value: str) -> bool:
    return "@" in value


class Redactor:
    def __init__(
        self,
        *,
        emails: bool = True,
        card_numbers: bool = True,
        phone_numbers: bool = True,
        patterns: tuple[str, ...] | list[str] = (),
    ) -> None:
        # (hint, pattern, replacement): the pattern runs only where the hint says it can match
        self._steps: list[tuple[Any, re.Pattern[str], Any]] = []
        if card_numbers:  # before phones: a card number would otherwise look like phone numbers
            self._steps.append((_CARD_HINT.search, _CARD, _card_sub))
        if emails:
            self._steps.append((_has_at, _EMAIL, "[EMAIL]"))
        if phone_numbers:
            self._steps.append((_PHONE_HINT.search, _PHONE, "[PHONE]"))
        for p in patterns:
            self._steps.append((None, re.compile(p), "[REDACTED]"))

    def text(self, value: str) -> str:
        for hint, pattern, repl in self._steps:
            if hint is None or hint(value):
                value = pattern.sub(repl, value)
        return value

    def json(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string redacted (keys are left alone)."""
        if not self._steps:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        return value
