"""The clocks of a case (DESIGN.md section 5): SLA, patient clock, deadline risk.

SLA deadlines are computed here, in Python, when a case is written, and stored on the
case (`due_soon_at` 75 %, `due_at` 100 %, `escalate_at` 150 %) so the scan and the triage
queue are plain indexed comparisons with `now` - no date arithmetic in SQL, the same on
SQLite and PostgreSQL (healthchecks' `alert_after`).

While a case is on hold the clock is paused: the deadlines are cleared, and on resume
the time spent on hold is added to `paused_seconds` and the deadlines move later by it.

The patient clock (days since the diagnosing biopsy) never pauses; the scan compares
`biopsy_date` with cutoff dates computed here. Deadline risk compares the planned
treatment start with the time the remaining stages typically take (`stage_medians` from
stored history, else the SLA limits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from functools import lru_cache

import holidays as holiday_calendars
from sqlalchemy import (
    ColumnElement,
    String,
    cast,
    func,
    literal,
    literal_column,
    union_all,
    update,
)
from sqlalchemy import case as sql_case
from sqlalchemy import select as sa_select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session, select

from core.models import Case, CaseEvent, SlaRule
from core.timeutil import as_utc
from core.vocab import FUNNEL, CaseState, FlagSeverity

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
# Below this many finished stays in a state its median is too noisy to plan with; the
# state's SLA limit stands in for it.
MIN_HISTORY = 20


@dataclass(frozen=True)
class SlaLimit:
    days: int
    business_days: bool = False

    @property
    def calendar_days(self) -> float:
        """Rough calendar length, for planning sums only (5 business days ~ 7 days)."""
        return self.days * 7 / 5 if self.business_days else float(self.days)


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


_RULES = SlaRule.__table__
# ORM attributes, not table columns: the session flushes a rule edited but not yet flushed.
_RULES_STMT = sa_select(SlaRule.state, SlaRule.limit_days, SlaRule.business_days)


def load_limits(session: Session) -> dict[str, SlaLimit]:
    """The SLA limits as the database has them now (never cached: an admin may have just
    changed one, in this process or another)."""
    rules = session.execute(_RULES_STMT).all()
    return _limits_from_rules(tuple((r.state, r.limit_days, bool(r.business_days))
                                    for r in rules))


class _comma_joined(FunctionElement[str]):
    """The aggregate joining text values with commas. (func.aggregate_strings binds its
    separator at every execution, which costs more than the rest of the subquery.)"""

    type = String()
    name = "comma_joined"
    inherit_cache = True


@compiles(_comma_joined)
def _group_concat(element: _comma_joined, compiler, **kw) -> str:  # noqa: ANN001
    return f"group_concat({compiler.process(element.clauses, **kw)})"


@compiles(_comma_joined, "postgresql")
def _string_agg(element: _comma_joined, compiler, **kw) -> str:  # noqa: ANN001
    return f"string_agg({compiler.process(element.clauses, **kw)}, ',')"


def limits_column() -> ColumnElement[str]:
    """Every SLA rule as one short text ("state:days:business,..."), as a scalar subquery:
    the write path reads the limits in the statement that loads the case, so it needs no
    statement of its own and can never use a limit an admin has since changed."""
    sep = literal_column("':'")
    one = (_RULES.c.state + sep + cast(_RULES.c.limit_days, String) + sep
           + cast(sql_case((_RULES.c.business_days, literal_column("1")),
                           else_=literal_column("0")), String))
    return sa_select(_comma_joined(one)).scalar_subquery()


def limits_from_text(text: str | None) -> dict[str, SlaLimit]:
    """The limits from `limits_column()`'s text."""
    return dict(_parse_limits(text or ""))


@lru_cache(maxsize=16)
def _parse_limits(text: str) -> dict[str, SlaLimit]:
    # Keyed on the text itself, so an edited rule is a different key: nothing to invalidate.
    # Callers get a copy (limits_from_text); the cached dict is never handed out.
    rules = []
    for part in filter(None, text.split(",")):
        state, days, business = part.split(":")
        rules.append((state, int(days), business == "1"))
    return _limits_from_rules(tuple(rules))


def _limits_from_rules(rules: tuple[tuple[str, int, bool], ...]) -> dict[str, SlaLimit]:
    limits = {s.value: SlaLimit(d) for s, d in DEFAULT_SLA_DAYS.items()}
    limits.update({state: SlaLimit(days, business) for state, days, business in rules})
    return limits


def local_zone() -> tzinfo:
    """The service's time zone (settings.timezone), for times shown to its users."""
    return _default_tz()


def _default_tz() -> tzinfo:
    # Business days are days of the service's own calendar, not UTC days: a case that
    # arrives at 22:00 on a Thursday in New York arrived on Thursday.
    from core.config import get_settings

    return get_settings().tz


def local_today(now: datetime, tz: tzinfo | None = None) -> date:
    """'Today' in the service's time zone (patient clock and deadline risk count days)."""
    return as_utc(now).astimezone(tz or _default_tz()).date()


# --- business days ----------------------------------------------------------------------


@lru_cache(maxsize=32)
def _holidays(country: str, year: int) -> frozenset[date]:
    return frozenset(holiday_calendars.country_holidays(country, years=year).keys())


def is_business_day(day: date, country: str) -> bool:
    return day.weekday() < 5 and day not in _holidays(country, day.year)


def add_business_days(
    start: datetime, days: float, country: str, tz: tzinfo | None = None
) -> datetime:
    """The moment `days` business days of time have passed since `start`.

    Only time on working days counts (weekends and the country's public holidays are
    skipped whole, judged in the service's time zone), so 2 business days from Friday
    15:00 end on Tuesday 15:00 and 2.25 from Wednesday 20:00 end on Monday 02:00.
    A start on a non-working day counts from the next working day's midnight.
    """
    zone = tz or _default_tz()
    remaining = timedelta(days=days)
    current = as_utc(start).astimezone(zone)
    for _ in range(3700):  # ten years of days: a limit can never need more
        next_midnight = datetime.combine(current.date() + timedelta(days=1), time.min, zone)
        if is_business_day(current.date(), country):
            # Subtract in UTC: aware datetimes in one zone subtract as wall time, which
            # would be an hour off across a DST change.
            available = next_midnight.astimezone(UTC) - current.astimezone(UTC)
            if remaining <= available:
                return (current.astimezone(UTC) + remaining).astimezone(UTC)
            remaining -= available
        current = next_midnight
    raise ValueError(f"{days} business days is beyond any SLA limit")


# --- SLA clock --------------------------------------------------------------------------


def sla_deadlines(
    *,
    state: str,
    state_entered_at: datetime,
    paused_seconds: int,
    on_hold: bool,
    outcome_recorded: bool,
    limits: dict[str, SlaLimit],
    holiday_country: str = "US",
    tz: tzinfo | None = None,
) -> Deadlines:
    """The three stored deadlines of a case, from its stored fields.

    None when the clock does not run: closed, on hold, or seen with its outcome recorded.
    """
    if state == CaseState.CLOSED or on_hold or (state == CaseState.SEEN and outcome_recorded):
        return Deadlines.none()
    limit = limits.get(state)
    if limit is None:
        return Deadlines.none()
    start = as_utc(state_entered_at) + timedelta(seconds=paused_seconds or 0)

    def at(fraction: float) -> datetime:
        if limit.business_days:
            return add_business_days(start, limit.days * fraction, holiday_country, tz)
        return start + timedelta(days=limit.days * fraction)

    return Deadlines(at(DUE_SOON_FRACTION), at(1.0), at(ESCALATE_FRACTION))


def deadlines_for_case(
    case: Case, limits: dict[str, SlaLimit], holiday_country: str, tz: tzinfo | None = None
) -> Deadlines:
    return sla_deadlines(
        state=case.state,
        state_entered_at=case.state_entered_at,
        paused_seconds=case.paused_seconds,
        on_hold=case.on_hold,
        outcome_recorded=case.outcome_recorded_at is not None,
        limits=limits,
        holiday_country=holiday_country,
        tz=tz,
    )


def apply_deadlines(case: Case, deadlines: Deadlines) -> None:
    case.due_soon_at = deadlines.due_soon_at
    case.due_at = deadlines.due_at
    case.escalate_at = deadlines.escalate_at


@dataclass(frozen=True)
class SlaStatus:
    """Where a case stands against its SLA at `now`, for the triage queue's "why".

    `fraction` is the share of the limit used (1.25 = a quarter past the limit); it is
    measured against the stored deadline, so pauses and business days are already in it.
    """

    severity: FlagSeverity | None
    fraction: float | None
    due_at: datetime | None
    running: bool

    @property
    def past_limit(self) -> float:
        """How far past the limit, as a fraction of it (0 while within the limit)."""
        return max(0.0, (self.fraction or 0.0) - 1.0)

    def describe(self) -> str:
        if not self.running or self.fraction is None:
            return "SLA clock paused or stopped"
        pct = round(self.fraction * 100)
        if self.severity is None:
            return f"{pct}% of the time limit used"
        return f"{self.severity.value.replace('_', ' ')}: {pct}% of the time limit used"


def sla_status(case: Case, now: datetime) -> SlaStatus:
    if case.due_at is None:
        return SlaStatus(None, None, None, running=False)
    now = as_utc(now)
    due_at = as_utc(case.due_at)
    start = as_utc(case.state_entered_at) + timedelta(seconds=case.paused_seconds or 0)
    span = (due_at - start).total_seconds()
    fraction = (now - start).total_seconds() / span if span > 0 else None
    severity = sla_level(case.due_soon_at, case.due_at, case.escalate_at, now)
    return SlaStatus(severity, fraction, due_at, running=True)


def sla_level(due_soon_at: datetime | None, due_at: datetime | None,
              escalate_at: datetime | None, now: datetime) -> FlagSeverity | None:
    """The SLA level the stored deadlines give at `now` (None: not due soon yet, or the
    clock is not running - the deadlines are NULL then). `core.flag_levels` has the same
    rule in SQL."""
    now = as_utc(now)
    for at, level in ((escalate_at, FlagSeverity.ESCALATED), (due_at, FlagSeverity.STALLED),
                      (due_soon_at, FlagSeverity.DUE_SOON)):
        if at is not None and now >= as_utc(at):
            return level
    return None


def recompute_all_deadlines(
    session: Session,
    *,
    now: datetime,
    batch_size: int = 2000,
    holiday_country: str | None = None,
    tz: tzinfo | None = None,
) -> int:
    """Recompute every stored deadline (nightly, and after an admin edits the limits).

    Cases whose clock does not run (closed, on hold, seen with the outcome in) are
    cleared in one UPDATE; the rest are read in id-ordered batches of a few columns,
    computed in Python (business days need the holiday calendar) and written back only
    where something changed. Returns how many cases changed. `now` is unused by the
    rules themselves (deadlines are absolute) but kept for the job's record.
    """
    del now
    if holiday_country is None:
        from core.config import get_settings

        holiday_country = get_settings().holiday_country
    limits = load_limits(session)
    t = Case.__table__
    stopped = (
        (t.c.state == CaseState.CLOSED.value)
        | t.c.on_hold
        | ((t.c.state == CaseState.SEEN.value) & t.c.outcome_recorded_at.is_not(None))
    )
    changed = session.execute(
        update(t)
        .where(stopped, t.c.due_at.is_not(None) | t.c.due_soon_at.is_not(None)
               | t.c.escalate_at.is_not(None))
        .values(due_soon_at=None, due_at=None, escalate_at=None)
    ).rowcount or 0
    cols = (t.c.id, t.c.state, t.c.state_entered_at, t.c.paused_seconds,
            t.c.due_soon_at, t.c.due_at, t.c.escalate_at)
    last_id = 0
    while True:
        rows = session.execute(
            sa_select(*cols).where(~stopped, t.c.id > last_id).order_by(t.c.id).limit(batch_size)
        ).all()
        if not rows:
            break
        last_id = rows[-1].id
        updates = []
        for r in rows:
            d = sla_deadlines(state=r.state, state_entered_at=r.state_entered_at,
                              paused_seconds=r.paused_seconds, on_hold=False,
                              outcome_recorded=False, limits=limits,
                              holiday_country=holiday_country, tz=tz)
            stored = tuple(as_utc(v) if v else None for v in (r.due_soon_at, r.due_at,
                                                               r.escalate_at))
            if stored != (d.due_soon_at, d.due_at, d.escalate_at):
                updates.append({"id": r.id, "due_soon_at": d.due_soon_at, "due_at": d.due_at,
                                "escalate_at": d.escalate_at})
        if updates:
            session.execute(update(Case), updates)  # bulk UPDATE by primary key
            changed += len(updates)
    return changed


# --- patient clock ----------------------------------------------------------------------


class PatientClockLevel(StrEnum):
    NONE = "none"
    AMBER = "amber"
    RED = "red"
    CRITICAL = "critical"

    @property
    def severity(self) -> FlagSeverity | None:
        return {
            "none": None,
            "amber": FlagSeverity.DUE_SOON,
            "red": FlagSeverity.STALLED,
            "critical": FlagSeverity.ESCALATED,
        }[self.value]


@dataclass(frozen=True)
class PatientClockThresholds:
    amber: int = 30
    red: int = 45
    critical: int = 60

    @classmethod
    def from_settings(cls, settings=None) -> PatientClockThresholds:  # noqa: ANN001
        if settings is None:
            from core.config import get_settings

            settings = get_settings()
        return cls(settings.patient_clock_amber_days, settings.patient_clock_red_days,
                   settings.patient_clock_critical_days)

    def cutoffs(self, today: date) -> tuple[date, date, date]:
        """A biopsy on or before these dates is amber, red, critical (set-based scan)."""
        return (today - timedelta(days=self.amber), today - timedelta(days=self.red),
                today - timedelta(days=self.critical))


def patient_clock_days(biopsy_date: date | None, today: date) -> int | None:
    return None if biopsy_date is None else (today - biopsy_date).days


def patient_clock_level(
    biopsy_date: date | None, today: date, thresholds: PatientClockThresholds | None = None
) -> PatientClockLevel:
    t = thresholds or PatientClockThresholds()
    days = patient_clock_days(biopsy_date, today)
    if days is None or days < t.amber:
        return PatientClockLevel.NONE
    if days >= t.critical:
        return PatientClockLevel.CRITICAL
    if days >= t.red:
        return PatientClockLevel.RED
    return PatientClockLevel.AMBER


# --- deadline risk ----------------------------------------------------------------------


def remaining_states(state: str) -> tuple[CaseState, ...]:
    """The funnel states a case in `state` still has to pass, its own included (`seen`
    runs until the outcome, which is what the patient needs before treatment)."""
    if state not in {s.value for s in FUNNEL}:
        return ()
    index = [s.value for s in FUNNEL].index(state)
    return FUNNEL[index:]


@dataclass(frozen=True)
class StageTime:
    n: int
    median: float | None


def stage_medians(session: Session, *, min_history: int = MIN_HISTORY) -> dict[str, StageTime]:
    """Median stored `days_in_from_state` per funnel state.

    SQLite has no percentile_cont, so the median is read off the
    (from_state, days_in_from_state) index: one grouped count, then one UNION ALL query
    with LIMIT/OFFSET at the middle row(s) of each state - two statements per scan, never
    one per case. States with fewer than `min_history` rows get `median=None`.
    """
    e = CaseEvent.__table__
    known = e.c.days_in_from_state.is_not(None)
    counts = dict(session.execute(
        sa_select(e.c.from_state, func.count()).where(e.c.from_state.in_(
            [s.value for s in FUNNEL]), known).group_by(e.c.from_state)
    ).all())
    result = {s.value: StageTime(counts.get(s.value, 0), None) for s in FUNNEL}
    parts = []
    for state, n in counts.items():
        if n < max(min_history, 1):
            continue
        # middle row for odd n, the two middle rows (averaged) for even n
        middle = (sa_select(e.c.days_in_from_state.label("d"))
                  .where(e.c.from_state == state, known)
                  .order_by(e.c.days_in_from_state)
                  .limit(2 - n % 2).offset((n - 1) // 2)
                  .subquery())
        parts.append(sa_select(literal(state).label("state"), func.avg(middle.c.d).label("m")))
    if parts:
        for state, median in session.execute(union_all(*parts)).all():
            result[state] = StageTime(counts[state], float(median))
    return result


def expected_remaining_days(
    medians: dict[str, StageTime], limits: dict[str, SlaLimit]
) -> dict[str, float]:
    """Per state, the days a case in it typically still needs to reach its outcome:
    the sum over the remaining states of the median (with enough history) else the limit.
    Rounded to a tenth of a day so a flag's stored shortfall does not churn on noise."""
    per_state: dict[str, float] = {}
    for s in FUNNEL:
        st = medians.get(s.value)
        if st is not None and st.median is not None:
            per_state[s.value] = st.median
        else:
            limit = limits.get(s.value) or SlaLimit(DEFAULT_SLA_DAYS[s])
            per_state[s.value] = limit.calendar_days
    return {s.value: round(sum(per_state[r.value] for r in remaining_states(s.value)), 1)
            for s in FUNNEL}


def risk_cutoff(today: date, remaining_days: float) -> date:
    """A planned start before this date cannot fit the remaining stages: for whole days
    d, d < r holds exactly when d < ceil(r)."""
    return today + timedelta(days=math.ceil(remaining_days))


def deadline_shortfall(
    planned_start: date | None, state: str, today: date, remaining: dict[str, float]
) -> float | None:
    """Days by which the remaining stages overrun the planned start; None when they fit
    or nothing is planned. The same rule the scan applies in SQL, for one case."""
    if planned_start is None or state not in remaining:
        return None
    shortfall = remaining[state] - (planned_start - today).days
    return shortfall if shortfall > 0 else None

