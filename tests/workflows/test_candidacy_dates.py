"""The candidacy note for a planned treatment start that has already passed."""

from __future__ import annotations

from datetime import date

from core.workflows.candidacy import candidacy


def _result(planned: date):  # noqa: ANN202
    return candidacy(diagnosis_category="invasive", biopsy_date=date(2026, 11, 1),
                     treatment_status="none", planned_treatment_start=planned,
                     reasons=["wants_confirmation"], today=date(2026, 11, 25))


def test_a_past_planned_start_is_said_to_have_passed_not_to_start_in_0_days():
    result = _result(date(2026, 11, 10))
    assert "treatment planned to start in 0 days" not in result.reasons
    assert "the planned treatment start (2026-11-10) has already passed" in result.reasons
    assert result.urgent


def test_a_start_today_or_soon_still_counts_the_days():
    assert "treatment planned to start in 0 days" in _result(date(2026, 11, 25)).reasons
    assert "treatment planned to start in 3 days" in _result(date(2026, 11, 28)).reasons
