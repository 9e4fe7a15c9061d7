"""Input cleaning shared by every write: NFC normalisation, NUL refusal, length limits
with a clear message *before* the database, and date sanity checks."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime

from core.errors import ValidationError

# Bidirectional controls (LRE..RLO, LRI..PDI, LRM/RLM/ALM): stripped where text leaves the
# app (exports, file names) so a name cannot visually reorder a spreadsheet row.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
# Other invisible characters that can hide a formula prefix.
ZERO_WIDTH = re.compile("[\u200b-\u200d\u2060\ufeff]")


def clean_text(
    value: str | None, *, field: str, max_length: int, required: bool = False
) -> str | None:
    """Normalise and check one text input; returns None for an empty optional value."""
    if value is None:
        if required:
            raise ValidationError(f"{field} is required.")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text.")
    if "\x00" in value:
        raise ValidationError(f"{field} contains a NUL character, which is not allowed.")
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        if required:
            raise ValidationError(f"{field} is required.")
        return None
    if len(value) > max_length:
        raise ValidationError(
            f"{field} is too long: {len(value):,} characters, the limit is {max_length:,}."
        )
    return value


def require_text(value: str | None, *, field: str, max_length: int) -> str:
    cleaned = clean_text(value, field=field, max_length=max_length, required=True)
    assert cleaned is not None
    return cleaned


def strip_bidi(value: str) -> str:
    return BIDI_CONTROLS.sub("", value)


def search_key(value: str) -> str:
    """How names are stored and searched: NFC, case-folded, inner spaces collapsed."""
    return " ".join(unicodedata.normalize("NFC", value).casefold().split())


# Ids are 64-bit signed integers on both backends: a larger number matches no row, and
# handing it to the driver raises OverflowError instead.
MAX_ID = 2**63 - 1
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


def case_number(value: object) -> int | None:
    """A case number typed or linked by a user ("#123", " 42 ") as an id, or None when
    it is not one: only ASCII digits count (`"²".isdigit()` is true, and `int()` takes
    Arabic-Indic digits), and only up to the largest id a database can hold."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= MAX_ID else None
    text = str(value).strip().removeprefix("#").strip()
    if not _ASCII_DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


# Loose on purpose: patients give numbers in every national format, with extensions. What
# is refused is what cannot be dialled at all (letters, emoji, fewer than five digits).
_PHONE = re.compile(r"[0-9+()\-./ ]+((ext\.?|x|#) ?[0-9]{1,6})?", re.IGNORECASE)
# One @, something before it, a dot in the domain, no spaces: enough to catch a slip
# (a name typed in the wrong box) without pretending to know every valid address.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


def phone_number(value: str | None, *, field: str = "Phone") -> str | None:
    """A cleaned phone number, or None; refuses text no one could dial."""
    if value is None:
        return None
    if not _PHONE.fullmatch(value) or sum(c.isdigit() for c in value) < 5:
        raise ValidationError(f"{field}: {value[:40]!r} is not a phone number (digits, "
                              "spaces, + ( ) - . / and an extension such as 'x12').")
    return value


def email_address(value: str | None, *, field: str = "E-mail") -> str | None:
    if value is None:
        return None
    if not _EMAIL.fullmatch(value):
        raise ValidationError(f"{field}: {value[:40]!r} is not an e-mail address.")
    return value


def parse_date(value: str | date, *, field: str) -> date:
    """Accept ISO dates; refuse impossible ones (Feb 30) with a message naming the field."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValidationError(f"{field}: {value!r} is not a valid date (YYYY-MM-DD).") from None


def not_in_future(day: date | None, *, field: str, today: date) -> None:
    if day is not None and day > today:
        raise ValidationError(f"{field} cannot be in the future ({day.isoformat()}).")
