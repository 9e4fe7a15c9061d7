"""Patient clock thresholds and deadline risk (with and without history), pure functions
and the medians read from stored history on both databases."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from core.db import session_scope
from core.models import Case, CaseEvent
from core.workflows.clocks import (
    PatientClockLevel,
    PatientClockThresholds,
    SlaLimit,
    deadline_shortfall,
    expected_remaining_days,
    load_limits,
    patient_clock_level,
    remaining_states,
    risk_cutoff,
    stage_medians,
)
from tests.factories import make_case, make_team

TODAY = date(2026, 11, 25)


@pytest.mark.parametrize(("days", "level"), [
    (0, PatientClockLevel.NONE),
    (29, PatientClockLevel.NONE),
    (30, PatientClockLevel.AMBER),
    (44, PatientClockLevel.AMBER),
    (45, PatientClockLevel.RED),
    (59, PatientClockLevel.RED),
    (60, PatientClockLevel.CRITICAL),
    (200, PatientClockLevel.CRITICAL),
])
def test_patient_clock_levels_at_30_45_60_days(days, level):
    assert patient_clock_level(TODAY - timedelta(days=days), TODAY) is level


def test_patient_clock_thresholds_are_configurable():
    t = PatientClockThresholds(amber=20, red=25, critical=30)
    assert patient_clock_level(TODAY - timedelta(days=19), TODAY, t) is PatientClockLevel.NONE
    assert patient_clock_level(TODAY - timedelta(days=20), TODAY, t) is PatientClockLevel.AMBER
    assert patient_clock_level(TODAY - timedelta(days=25), TODAY, t) is PatientClockLevel.RED
    assert patient_clock_level(TODAY - timedelta(days=30), TODAY, t) is (
        PatientClockLevel.CRITICAL)


def test_patient_clock_without_a_biopsy_date_is_silent():
    assert patient_clock_level(None, TODAY) is PatientClockLevel.NONE


def test_remaining_states_include_the_current_one_and_end_at_seen():
    assert [s.value for s in remaining_states("records_received")] == [
        "records_received", "scheduled", "seen"]
    assert remaining_states("closed") == ()


DEFAULT_LIMITS = {s: SlaLimit(d) for s, d in {
    "assessed": 2, "referral": 7, "records_requested": 10, "records_received": 3,
    "scheduled": 14, "seen": 14}.items()}


def test_without_history_the_remaining_limits_are_summed():
    remaining = expected_remaining_days({}, DEFAULT_LIMITS)
    assert remaining["records_requested"] == 10 + 3 + 14 + 14
    assert remaining["assessed"] == 50
    assert remaining["seen"] == 14


def test_deadline_risk_shortfall_without_history():
    remaining = expected_remaining_days({}, DEFAULT_LIMITS)
    # 41 days still needed from records_requested
    assert deadline_shortfall(TODAY + timedelta(days=40), "records_requested", TODAY,
                              remaining) == 1
    assert deadline_shortfall(TODAY + timedelta(days=41), "records_requested", TODAY,
                              remaining) is None
    assert deadline_shortfall(None, "records_requested", TODAY, remaining) is None


def test_risk_cutoff_rounds_a_fractional_need_up():
    # 5.5 days needed: a start 5 days away is short, 6 days away fits
    assert risk_cutoff(TODAY, 5.5) == TODAY + timedelta(days=6)
    assert risk_cutoff(TODAY, 5.0) == TODAY + timedelta(days=5)


def test_business_day_limits_count_as_longer_calendar_time_when_planning():
    limits = dict(DEFAULT_LIMITS, seen=SlaLimit(10, business_days=True))
    assert expected_remaining_days({}, limits)["seen"] == 14.0


def _history(session, case_id: int, state: str, days: list[float], now) -> None:
    team_id = session.get(Case, case_id).team_id
    for d in days:
        session.add(CaseEvent(case_id=case_id, from_state=state, to_state="closed", at=now,
                              days_in_from_state=d, version=1, team_id=team_id))
    session.flush()


def test_medians_come_from_history_when_there_is_enough(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        case = make_case(session, now=now, team=team)
        _history(session, case.id, "referral", [float(d) for d in range(1, 22)], now)  # 21 rows
        _history(session, case.id, "scheduled", [1.0] * 10 + [3.0] * 10, now)  # 20, even
        _history(session, case.id, "seen", [5.0] * 19, now)  # too thin
        medians = stage_medians(session)
        assert medians["referral"].n == 21 and medians["referral"].median == 11.0
        assert medians["scheduled"].median == 2.0  # the two middle rows averaged
        assert medians["seen"].n == 19 and medians["seen"].median is None
        assert medians["assessed"].n == 0 and medians["assessed"].median is None
        remaining = expected_remaining_days(medians, load_limits(session))
        # referral 11 (history) + records_requested 10 + records_received 3 (limits)
        # + scheduled 2 (history) + seen 14 (limit, history too thin)
        assert remaining["referral"] == 40.0
        assert remaining["scheduled"] == 16.0
