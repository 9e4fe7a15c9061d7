"""The current level of a flag, derived when it is read (DESIGN.md sections 5 and 8).

Two kinds of flag get worse by the passing of time alone: SLA (due soon at 75 % of the
limit, stalled at 100 %, escalated at 150 %) and the patient clock (amber, red, critical
days since the biopsy). Their level is a pure function of stored case columns
(`due_soon_at`, `due_at`, `escalate_at`; `biopsy_date`) and of `now`, so it is not stored:
like healthchecks' `Check.get_status()`, it is computed from the stored fields and `now`
by whoever reads it. The scan only raises and resolves those flags (at a million cases
rewriting ~100,000 escalated flags a day was most of the scan's time).

What `case_flag.severity` means:
- SLA and patient clock: the level the flag had WHEN IT WAS RAISED (kept for the record
  and the audit). The level now is `current_severity` / `current_severity_sql`: the level
  the case's stored dates give at `now`. Where the case no longer gives one (the flag's
  cause is gone - state moved, hold started, outcome recorded - and the next scan will
  resolve it) the raised level stands in.
- deadline risk and unreachable: their only level (always "stalled"); time does not
  change it.

There is no `escalated_at`: when an SLA flag became escalated is its case's
`escalate_at`, when a patient-clock flag became critical is the biopsy date plus the
critical days.

Every reader of a flag's level goes through this module: SQL expressions for set-based
readers (`current_severity_sql`, `current_rank_sql`) and plain Python for a row in hand
(`current_severity`); both say the same as `clocks.sla_level` and
`clocks.patient_clock_level`, the rules the case page's clocks show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, null

from core.timeutil import as_utc
from core.vocab import FlagKind, FlagSeverity
from core.workflows import clocks

# Kinds whose level moves with time and is derived at read time (never stored).
TIME_DRIVEN = frozenset({FlagKind.SLA.value, FlagKind.PATIENT_CLOCK.value})


@dataclass(frozen=True)
class Moment:
    """When levels are read: `now` and the service's today with the patient-clock
    thresholds (settings), so SQL and Python agree."""

    now: datetime
    today: date
    thresholds: clocks.PatientClockThresholds

    @classmethod
    def at(cls, now: datetime, settings=None) -> Moment:  # noqa: ANN001
        if settings is None:
            from core.config import get_settings

            settings = get_settings()
        return cls(as_utc(now), clocks.local_today(now, settings.tz),
                   clocks.PatientClockThresholds.from_settings(settings))

    @property
    def patient_cutoffs(self) -> tuple[date, date, date]:
        """A biopsy on or before these dates is amber, red, critical."""
        return self.thresholds.cutoffs(self.today)


# --- SQL ------------------------------------------------------------------------------


def sla_level_sql(cases: Any, now: datetime) -> ColumnElement:
    """The SLA level of `cases` (the table or an alias) at `now`; NULL before due soon
    and while the clock is not running (the deadlines are NULL then)."""
    at = literal(as_utc(now), cases.c.due_at.type)
    return case(
        (cases.c.escalate_at <= at, FlagSeverity.ESCALATED.value),
        (cases.c.due_at <= at, FlagSeverity.STALLED.value),
        (cases.c.due_soon_at <= at, FlagSeverity.DUE_SOON.value),
        else_=null(),
    )


def patient_level_sql(cases: Any, cutoffs: tuple[date, date, date]) -> ColumnElement:
    """The patient-clock level of `cases` for the cutoff dates (amber, red, critical);
    NULL without a biopsy date or before amber."""
    amber, red, critical = (literal(d, cases.c.biopsy_date.type) for d in cutoffs)
    return case(
        (cases.c.biopsy_date <= critical, FlagSeverity.ESCALATED.value),
        (cases.c.biopsy_date <= red, FlagSeverity.STALLED.value),
        (cases.c.biopsy_date <= amber, FlagSeverity.DUE_SOON.value),
        else_=null(),
    )


def current_severity_sql(flags: Any, cases: Any, moment: Moment) -> ColumnElement[str]:
    """A flag's level now, for `flags` joined to its case `cases` (tables or aliases)."""
    derived = case(
        # an SLA flag belongs to the state it was raised in; the case's deadlines are
        # those of its current state
        (and_(flags.c.kind == FlagKind.SLA.value, flags.c.state == cases.c.state),
         sla_level_sql(cases, moment.now)),
        (flags.c.kind == FlagKind.PATIENT_CLOCK.value,
         patient_level_sql(cases, moment.patient_cutoffs)),
        else_=null(),
    )
    return func.coalesce(derived, flags.c.severity)


def rank_sql(severity: ColumnElement) -> ColumnElement[int]:
    """FlagSeverity.rank in SQL (0 for NULL)."""
    return case(*[(severity == s.value, s.rank) for s in FlagSeverity], else_=0)


def current_rank_sql(flags: Any, cases: Any, moment: Moment) -> ColumnElement[int]:
    return rank_sql(current_severity_sql(flags, cases, moment))


# --- Python ---------------------------------------------------------------------------


def current_severity(flag: Any, case_row: Any, moment: Moment) -> FlagSeverity:
    """A flag's level now, for a flag row (kind, severity, state) and its case row
    (state, due_soon_at, due_at, escalate_at, biopsy_date) in hand."""
    sla = None
    patient = None
    if flag.kind == FlagKind.SLA.value:
        sla = clocks.sla_level(case_row.due_soon_at, case_row.due_at, case_row.escalate_at,
                               moment.now)
    elif flag.kind == FlagKind.PATIENT_CLOCK.value:
        patient = clocks.patient_clock_level(case_row.biopsy_date, moment.today,
                                             moment.thresholds).severity
    return level_now(flag.kind, flag.severity, flag.state, case_row.state, sla, patient)


def level_now(kind: str, stored: str, raised_in: str, case_state: str,
              sla: FlagSeverity | None, patient: FlagSeverity | None) -> FlagSeverity:
    """The rule itself, given the levels the case's dates give now (`sla`, `patient`;
    None below the first threshold or when the clock does not run): an SLA flag of the
    case's current state and a patient-clock flag take the derived level; the fixed
    kinds, and a flag whose cause is gone (the next scan resolves it), keep the stored
    one. `current_severity_sql` is the same rule in SQL."""
    derived = None
    if kind == _SLA and raised_in == case_state:
        derived = sla
    elif kind == _PATIENT_CLOCK:
        derived = patient
    return derived or _SEVERITY.get(stored) or FlagSeverity(stored)  # (unknown: ValueError)


# Plain values and a dict, not Enum lookups: level_now runs for every flag of every
# queue row shown (an Enum member's `.value` is a property, `FlagSeverity(x)` a call).
_SLA, _PATIENT_CLOCK = FlagKind.SLA.value, FlagKind.PATIENT_CLOCK.value
_SEVERITY = {s.value: s for s in FlagSeverity}
