"""The SLA clock: time in the current state against its limit (DESIGN.md section 5).

Deadlines are computed here, in Python, when a case is written, and stored on the case
(`due_soon_at` 75 %, `due_at` 100 %, `escalate_at` 150 %) so the scan and the triage
queue are plain indexed comparisons with `now` - no date arithmetic in SQL, the same on
SQLite and PostgreSQL (healthchecks' `alert_after`).

While a case is on hold the clock is paused: the deadlines are cleared, and on resume
the time spent on hold is added to `paused_seconds` and the deadlines move later by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import holidays as holiday_calendars
from sqlmodel import Session, select

from core.models import Case, SlaRule
from core.timeutil import as_utc
from core.vocab import CaseState

# DESIGN.md section 5 defaults, in calendar days. `seen` runs until the outcome is in.
DEFAULT_SLA_DAYS: dict[CaseState, int] = {
    CaseState.ASSESSED: 2,
    CaseState.REFERRAL: 7,
    CaseState.RECORDS_REQUESTED: 10,
    CaseState.RECORDS_RECEIVED: 3,
    CaseState.SCHEDULED: 14,
    CaseState.SEEN: 14,
}
DUE_SOON_FRACTION = 0.75
ESCALATE_FRACTION = 1.5


@dataclass(frozen=True)
class SlaLimit:
    days: int
    business_days: bool = False


@dataclass(frozen=True)
class Deadlines:
    due_soon_at: datetime | None
    due_at: datetime | None
    escalate_at: datetime | None

    @classmethod
    def none(cls) -> Deadlines:
        return cls(None, None, None)


def ensure_default_rules(session: Session, *, now: datetime) -> int:
    """Insert the default SLA rules that are missing; returns how many were added."""
    have = set(session.exec(select(SlaRule.state)).all())
    added = 0
    for state, days in DEFAULT_SLA_DAYS.items():
        if state.value not in have:
            session.add(SlaRule(state=state.value, limit_days=days, updated_at=now))
            added += 1
    session.flush()
    return added


def load_limits(session: Session) -> dict[str, SlaLimit]:
    rules = session.exec(select(SlaRule)).all()
    limits = {s.value: SlaLimit(d) for s, d in DEFAULT_SLA_DAYS.items()}
    limits.update({r.state: SlaLimit(r.limit_days, r.business_days) for r in rules})
    return limits


@lru_cache(maxsize=32)
def _holidays(country: str, year: int) -> frozenset[date]:
    return frozenset(holiday_calendars.country_holidays(country, years=year).keys())


def is_business_day(day: date, country: str) -> bool:
    return day.weekday() < 5 and day not in _holidays(country, day.year)


def add_business_days(start: datetime, days: float, country: str) -> datetime:
    """Move `days` business days forward from `start`, skipping weekends and holidays.

    Whole days step over non-working days; the fractional part is added as hours on the
    landing day. A start on a non-working day counts from the next working day.
    """
    whole = int(days)
    fraction = days - whole
    current = start
    while not is_business_day(current.date(), country):
        current = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    remaining = whole
    while remaining > 0:
        current += timedelta(days=1)
        if is_business_day(current.date(), country):
            remaining -= 1
    return current + timedelta(days=fraction)


def sla_deadlines(
    *,
    state: str,
    state_entered_at: datetime,
    paused_seconds: int,
    on_hold: bool,
    outcome_recorded: bool,
    limits: dict[str, SlaLimit],
    holiday_country: str = "US",
) -> Deadlines:
    """The three stored deadlines of a case, from its stored fields.

    None when the clock does not run: closed, on hold, or seen with its outcome recorded.
    """
    if state == CaseState.CLOSED or on_hold or (state == CaseState.SEEN and outcome_recorded):
        return Deadlines.none()
    limit = limits.get(state)
    if limit is None:
        return Deadlines.none()
    start = as_utc(state_entered_at) + timedelta(seconds=paused_seconds)

    def at(fraction: float) -> datetime:
        if limit.business_days:
            return add_business_days(start, limit.days * fraction, holiday_country)
        return start + timedelta(days=limit.days * fraction)

    return Deadlines(at(DUE_SOON_FRACTION), at(1.0), at(ESCALATE_FRACTION))


def deadlines_for_case(case: Case, limits: dict[str, SlaLimit], holiday_country: str) -> Deadlines:
    return sla_deadlines(
        state=case.state,
        state_entered_at=case.state_entered_at,
        paused_seconds=case.paused_seconds,
        on_hold=case.on_hold,
        outcome_recorded=case.outcome_recorded_at is not None,
        limits=limits,
        holiday_country=holiday_country,
    )


def apply_deadlines(case: Case, deadlines: Deadlines) -> None:
    case.due_soon_at = deadlines.due_soon_at
    case.due_at = deadlines.due_at
    case.escalate_at = deadlines.escalate_at
