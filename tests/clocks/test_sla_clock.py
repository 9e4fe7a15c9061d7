"""SLA clock: every severity boundary of every state, pause/resume, business days.

Time is always passed in; nothing is patched globally."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.models import Case
from core.vocab import CaseState, FlagSeverity
from core.workflows.clocks import (
    DEFAULT_SLA_DAYS,
    SlaLimit,
    add_business_days,
    apply_deadlines,
    deadlines_for_case,
    sla_deadlines,
    sla_status,
)

NY = ZoneInfo("America/New_York")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, far from DST and holidays
LIMITS = {s.value: SlaLimit(d) for s, d in DEFAULT_SLA_DAYS.items()}
SECOND = timedelta(seconds=1)


def case_in(state: str, *, entered: datetime = T0, paused: int = 0, on_hold: bool = False,
            outcome: datetime | None = None) -> Case:
    case = Case(state=state, state_entered_at=entered, paused_seconds=paused, on_hold=on_hold,
                outcome_recorded_at=outcome)
    apply_deadlines(case, deadlines_for_case(case, LIMITS, "US", tz=NY))
    return case


# (fraction of the limit, expected severity just before it, expected severity at it)
BOUNDARIES = [
    (0.75, None, FlagSeverity.DUE_SOON),
    (1.0, FlagSeverity.DUE_SOON, FlagSeverity.STALLED),
    (1.5, FlagSeverity.STALLED, FlagSeverity.ESCALATED),
]


@pytest.mark.parametrize("state", [s.value for s in DEFAULT_SLA_DAYS])
@pytest.mark.parametrize(("fraction", "before", "at"), BOUNDARIES)
def test_sla_severity_changes_exactly_at_each_boundary_of_each_state(state, fraction, before,
                                                                    at):
    case = case_in(state)
    boundary = T0 + timedelta(days=DEFAULT_SLA_DAYS[CaseState(state)] * fraction)
    assert sla_status(case, boundary - SECOND).severity == before
    assert sla_status(case, boundary).severity == at
    assert sla_status(case, boundary).fraction == pytest.approx(fraction)


def test_sla_status_reports_how_far_past_the_limit():
    case = case_in("records_requested")  # 10 days
    status = sla_status(case, T0 + timedelta(days=12.5))
    assert status.severity is FlagSeverity.STALLED
    assert status.past_limit == pytest.approx(0.25)
    assert "125%" in status.describe()


@pytest.mark.parametrize("on_hold,state,outcome", [
    (True, "referral", None),
    (False, "closed", None),
    (False, "seen", T0),
])
def test_sla_clock_stops_on_hold_when_closed_and_once_the_outcome_is_in(on_hold, state, outcome):
    case = case_in(state, on_hold=on_hold, outcome=outcome)
    assert (case.due_soon_at, case.due_at, case.escalate_at) == (None, None, None)
    status = sla_status(case, T0 + timedelta(days=100))
    assert status.severity is None and not status.running


def test_pause_and_resume_continue_where_the_clock_stopped():
    # referral: 7 days. 3 days run, then 2 days on hold, then the clock resumes.
    running = case_in("referral")
    assert running.due_at == T0 + timedelta(days=7)
    held = case_in("referral", on_hold=True)
    assert sla_status(held, T0 + timedelta(days=30)).severity is None
    resumed = case_in("referral", paused=int(timedelta(days=2).total_seconds()))
    assert resumed.due_at == T0 + timedelta(days=9)
    assert resumed.due_soon_at == T0 + timedelta(days=2 + 7 * 0.75)
    assert resumed.escalate_at == T0 + timedelta(days=2 + 10.5)
    # 8 days after entry only 6 have counted: due soon, not stalled
    assert sla_status(resumed, T0 + timedelta(days=8)).severity is FlagSeverity.DUE_SOON
    assert sla_status(resumed, T0 + timedelta(days=9)).severity is FlagSeverity.STALLED


def _ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY).astimezone(UTC)


def test_business_days_skip_a_weekend():
    # Friday 10:00 + 2 business days: Saturday and Sunday do not count -> Tuesday 10:00
    assert add_business_days(_ny(2026, 12, 4, 10), 2, "US", NY) == _ny(2026, 12, 8, 10)


def test_business_days_skip_a_us_holiday_and_the_weekend_after_it():
    # Wednesday before Thanksgiving (Thu 26 Nov 2026) 10:00 + 3 business days:
    # Wed rest, (Thu holiday), Fri, (Sat, Sun), Mon, Tue until 10:00
    assert add_business_days(_ny(2026, 11, 25, 10), 3, "US", NY) == _ny(2026, 12, 1, 10)


def test_business_days_follow_the_configured_holiday_country():
    # In Great Britain 26 Nov is a working day: the same 3 days end on Monday
    assert add_business_days(_ny(2026, 11, 25, 10), 3, "GB", NY) == _ny(2026, 11, 30, 10)


def test_business_days_starting_on_a_weekend_count_from_monday():
    assert add_business_days(_ny(2026, 12, 5, 15), 1, "US", NY) == _ny(2026, 12, 8, 0)


def test_business_day_limit_gives_all_three_deadlines():
    limits = dict(LIMITS, records_received=SlaLimit(4, business_days=True))
    d = sla_deadlines(state="records_received", state_entered_at=_ny(2026, 11, 25, 10),
                      paused_seconds=0, on_hold=False, outcome_recorded=False, limits=limits,
                      holiday_country="US", tz=NY)
    # 3 business days (75 %) -> Tue 1 Dec 10:00; 4 -> Wed 2 Dec; 6 -> Fri 4 Dec
    assert d.due_soon_at == _ny(2026, 12, 1, 10)
    assert d.due_at == _ny(2026, 12, 2, 10)
    assert d.escalate_at == _ny(2026, 12, 4, 10)


def test_business_day_deadline_is_a_business_day_in_local_time_across_dst():
    # DST ends Sun 1 Nov 2026: Friday 30 Oct 10:00 + 1 business day = Monday 10:00 local
    assert add_business_days(_ny(2026, 10, 30, 10), 1, "US", NY) == _ny(2026, 11, 2, 10)
