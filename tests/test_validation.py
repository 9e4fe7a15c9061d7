"""Small parsers every page and command relies on: case numbers and audit details."""

from __future__ import annotations

import json

import pytest

from core import audit
from core.models import DETAIL_MAX
from core.validation import MAX_ID, case_number


@pytest.mark.parametrize("raw, want", [
    ("42", 42), (" #42 ", 42), (42, 42), ("0042", 42), (str(MAX_ID), MAX_ID),
    (str(MAX_ID + 1), None), ("0", None), ("-1", None), ("²", None), ("٣", None),
    ("4 2", None), ("", None), ("1e3", None), (True, None), (0, None), (MAX_ID + 1, None),
    ("9" * 400, None),
])
def test_case_numbers_are_ascii_digits_within_what_a_database_holds(raw, want):
    assert case_number(raw) == want


@pytest.mark.parametrize("detail", [
    {"reason": "\x01" * 400},  # 2,400 characters once escaped
    {"reason": "é" * 5000, "rows": 3},
    {"note": '"\\' * 3000},
])
def test_a_long_audit_detail_is_cut_to_valid_json_that_fits(detail):
    text = audit.detail_json(detail)
    assert len(text) <= DETAIL_MAX
    kept = json.loads(text)["truncated"]
    full = json.dumps(detail, ensure_ascii=False, sort_keys=True)
    assert kept.endswith("…") and full.startswith(kept[:-1])
    # as much as fits: one more character of the original would not
    assert len(json.dumps({"truncated": full[:len(kept)] + "…"},
                          ensure_ascii=False)) > DETAIL_MAX


def test_a_short_audit_detail_is_stored_as_it_is():
    assert json.loads(audit.detail_json({"b": 1, "a": "x"})) == {"a": "x", "b": 1}
