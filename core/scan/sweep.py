"""The stalled-case scan (DESIGN.md section 5): raise and resolve flags.

Set-based, per flag kind: one UPDATE resolves the open flags whose cause is gone (a NOT
EXISTS probing each flag's case by its primary key); then one INSERT ... SELECT raises the
missing flags. Every comparison is between stored columns and bound values (`now`, cutoff
dates), so the SQL is the same on SQLite and PostgreSQL and no Python loop ever visits a
case.

The scan never escalates a flag. The level of an SLA or patient-clock flag moves with
time alone, so it is not stored: a flag records its raise (with the level it had then),
its resolve and its acknowledgement, and readers derive the level now from the case's
stored dates (`core.flag_levels`, healthchecks' `Check.get_status()`). Rewriting the
escalated flags was most of a day's scan at a million cases (~145,000 rows a day).

Incremental (issue 8). A rule's outcome for a case is a function of a few stored case
columns and of the scan's context (`now`, the patient-clock cutoff dates, each state's
deadline-risk cutoff date, the unreachable threshold). After a scan every case's open
flags are what the rules want, so the next scan only has to look at the cases for which
one of the two sides moved:

a. the case's columns: every write of a rule input (state, hold, deadlines, outcome,
   biopsy date, planned treatment, treatment status, failed contacts) or a new case sets
   `cases.scan_dirty` - in the database, by triggers (migration 0005), so no write path
   (workflows, nightly deadline recompute, demo loader, a hand-made fix) can forget it.
   The scan claims the marks in its own transaction (PostgreSQL: one UPDATE ... RETURNING
   inside the INSERT that fills the work list, which waits for a writer holding the row
   and then sees its commit; a write committed after the claim marks the case again for
   the next scan; SQLite: the scan holds the write lock throughout);
b. the context: the previous successful scan stores its context on its JobRun
   (`job_run.context`). A stored threshold can only change its comparison if it lies
   between the old and the new value of what it is compared with, and only the
   thresholds that raise a flag count (the later levels are derived, not stored): SLA
   `due_soon_at` between the two `now`s; `biopsy_date` between the two amber cutoff
   dates; `planned_treatment_start` between a state's two risk cutoffs (which move with
   today and with the expected remaining days). Each is one index range over the open
   cases, unioned into a temporary work list with (a) - except where time moved forward
   across an SLA or patient-clock threshold: for such a case (not written since) the
   rule can only have turned true, so its flag is raised by one INSERT over the range,
   with nothing to resolve and no list entry (_Moved.only_raises);
c. a full scan - every open flag and every open case, the statements above without the
   work list - when there is no usable previous context: the first scan, an older
   context format, or a changed unreachable threshold (no index on the count).

Facts that change every day are not stored: a deadline-risk flag keeps the shortfall it
had when it was raised (today's is `clocks.deadline_shortfall` from the case). The stage
medians behind the expected remaining days come from the nightly recompute job (stored
on its JobRun and carried forward on each scan's); a scan computes them from history only
when none are stored or they are over a week old. `cases.flag_rank` (the worst open flag's
rank among the kinds whose level does not move with time - deadline risk, unreachable -
for the triage queue) is set for every case written since the last scan or moved across a
risk cutoff. SLA and patient-clock flags are left out of it on purpose: the queue derives
their levels from the stored deadlines and biopsy date at its own `now`, and keeping their
escalations in the rank rewrote ~100,000 wide case rows (and the triage index) per day at
a million cases.

The whole scan and its JobRun row are one transaction: a scan killed half-way leaves
nothing behind (its claims included) and the next one does the whole job. Scans are
serialised (SQLite's BEGIN IMMEDIATE; a transaction-scoped advisory lock on PostgreSQL),
so a manual `casedesk scan` beside the worker can never raise a flag twice; the partial
unique index (one open flag per case and kind) would refuse it anyway.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    and_,
    any_,
    case,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Float
from sqlmodel import Session

from core import flag_levels
from core.config import get_settings
from core.db import session_scope, sqlite_page_cache
from core.models import CASE_IS_OPEN, DETAIL_MAX, Case, CaseFlag, JobRun
from core.timeutil import as_utc
from core.vocab import (
    FUNNEL,
    FlagKind,
    FlagSeverity,
    JobStatus,
    TreatmentStatus,
)
from core.workflows import clocks

log = logging.getLogger(__name__)

SCAN_JOB = "scan"
RECOMPUTE_JOB = "recompute_deadlines"
_PG_SCAN_LOCK = 4_242_004  # transaction-scoped advisory lock serialising scans
# KiB: 256 MB while a scan runs: a day of changes at 1,000,000 cases (~150,000 flags and
# case rows) stays in memory instead of spilling to the WAL mid-transaction.
_SQLITE_SCAN_CACHE_KIB = 262_144
# Of the JSON on job_run.context; another version means a full scan. 2: flag_rank leaves
# the patient clock out (a full scan rewrites every case's rank once).
CONTEXT_VERSION = 2
# PostgreSQL: a scan that changed more than this share of case_flag's rows refreshes its
# planner statistics (_keep_flag_statistics).
STALE_FLAG_STATISTICS = 0.2
# Dirty cases one scan must clear before it refreshes the dirty index's statistics.
DIRTY_STATISTICS_CLEARED = 1_000
# Stage medians move slowly (a day adds a few thousandths of the history); the nightly job
# refreshes them, and a scan recomputes them itself only when that has not happened for
# this long.
MEDIANS_MAX_AGE = timedelta(days=7)

cases = Case.__table__
flags = CaseFlag.__table__


class days_between(FunctionElement):  # noqa: N801 - reads as a SQL function
    """Whole days from date `a` to date `b` - the only date arithmetic the scan needs
    (the deadline-risk shortfall); SQLite and PostgreSQL spell it differently."""

    type = Float()
    inherit_cache = True


@compiles(days_between, "sqlite")
def _days_between_sqlite(element, compiler, **kw):  # noqa: ANN001, ANN202
    a, b = list(element.clauses)
    return f"(julianday({compiler.process(b, **kw)}) - julianday({compiler.process(a, **kw)}))"


@compiles(days_between)
def _days_between_pg(element, compiler, **kw):  # noqa: ANN001, ANN202
    a, b = list(element.clauses)
    return f"({compiler.process(b, **kw)} - {compiler.process(a, **kw)})"


@dataclass
class ScanResult:
    raised: int = 0
    resolved: int = 0
    # Cases looked at one by one: every open case on a full scan; else the work list
    # (written since the last scan, or moved across a deadline-risk cutoff or, with time
    # going back, an SLA or patient-clock threshold). The cases raised straight from an
    # index range (_Moved.only_raises) are counted in `raised` only.
    examined: int = 0
    full: bool = False  # no usable previous context: every open case and flag visited
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    job_run_id: int | None = None
    started_at: datetime | None = None
    seconds: float = 0.0
    skipped: bool = False  # not the leader any more: nothing was done
    context: str | None = None  # JSON, stored on the JobRun for the next scan

    @property
    def changed(self) -> int:
        return self.raised + self.resolved

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("context")
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        return data


@dataclass(frozen=True)
class ScanContext:
    """Everything the rules compare with, computed once per scan in Python."""

    now: datetime
    today: date
    patient_cutoffs: tuple[date, date, date]  # amber, red, critical
    remaining: dict[str, float]  # expected days to the outcome, per state
    unreachable_attempts: int
    medians: dict[str, clocks.StageTime] = field(default_factory=dict)
    medians_at: datetime | None = None
    incremental: bool = False  # the rules look only at the cases on the work list

    @property
    def risk_cutoffs(self) -> dict[str, date]:
        return {s: clocks.risk_cutoff(self.today, r) for s, r in self.remaining.items()}

    def to_json(self) -> str:
        return json.dumps({
            "v": CONTEXT_VERSION,
            "now": self.now.isoformat(),
            "patient_cutoffs": [d.isoformat() for d in self.patient_cutoffs],
            "risk_cutoffs": {s: d.isoformat() for s, d in self.risk_cutoffs.items()},
            "unreachable_attempts": self.unreachable_attempts,
            **_medians_json(self.medians, self.medians_at),
        }, sort_keys=True)


@dataclass(frozen=True)
class PreviousScan:
    """The part of the previous successful scan's context the next one compares with."""

    now: datetime
    patient_cutoffs: tuple[date, date, date]
    risk_cutoffs: dict[str, date]
    unreachable_attempts: int

    @classmethod
    def from_json(cls, raw: str | None) -> PreviousScan | None:
        try:
            data = json.loads(raw or "null")
            if not isinstance(data, dict) or data.get("v") != CONTEXT_VERSION:
                return None
            return cls(
                now=as_utc(datetime.fromisoformat(data["now"])),
                patient_cutoffs=tuple(date.fromisoformat(d)
                                      for d in data["patient_cutoffs"]),  # type: ignore[arg-type]
                risk_cutoffs={s: date.fromisoformat(d) for s, d in data["risk_cutoffs"].items()},
                unreachable_attempts=int(data["unreachable_attempts"]),
            )
        except (ValueError, KeyError, TypeError):  # unreadable: a full scan is always right
            return None


def _medians_json(medians: dict[str, clocks.StageTime], at: datetime | None) -> dict:
    if at is None:
        return {}
    return {"medians": {s: [m.n, m.median] for s, m in medians.items()},
            "medians_at": as_utc(at).isoformat()}


def _medians_from_json(raw: str | None) -> tuple[dict[str, clocks.StageTime], datetime] | None:
    try:
        data = json.loads(raw or "null")
        medians = {s: clocks.StageTime(int(n), None if m is None else float(m))
                   for s, (n, m) in data["medians"].items()}
        return medians, as_utc(datetime.fromisoformat(data["medians_at"]))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Rule:
    kind: FlagKind
    applies: Callable[[ScanContext], ColumnElement[bool]]  # over `cases`
    # The level stored on a new flag: the level when raised (`core.flag_levels` derives
    # the level now of the kinds whose level moves with time).
    severity: Callable[[ScanContext], ColumnElement[str]]
    # Stored on the flag when it is raised (and not kept up to date afterwards).
    shortfall: Callable[[ScanContext], ColumnElement] | None = None
    # An SLA flag belongs to the state it was raised in: leaving the state resolves it
    # (a new flag is raised for the new state if that one is late too).
    per_state: bool = False
    # The work list's column for cases time moved across this rule's thresholds (None:
    # time alone never changes it).
    moved: str | None = None


_OPEN_CASE = CASE_IS_OPEN  # 'closed' written into the SQL: see models.sql_constant
_OUTCOME_PENDING = cases.c.outcome_recorded_at.is_(None)


def _sla_applies(ctx: ScanContext) -> ColumnElement[bool]:
    # due_* are NULL while on hold, closed or seen-with-outcome; the explicit tests keep a
    # stray stored deadline from flagging a paused case.
    return and_(_OPEN_CASE, cases.c.on_hold.is_(False), cases.c.due_soon_at.is_not(None),
                cases.c.due_soon_at <= ctx.now)


def _sla_severity(ctx: ScanContext) -> ColumnElement[str]:
    return flag_levels.sla_level_sql(cases, ctx.now)  # never NULL where _sla_applies


def _patient_applies(ctx: ScanContext) -> ColumnElement[bool]:
    amber, _, _ = ctx.patient_cutoffs
    return and_(_OPEN_CASE, _OUTCOME_PENDING, cases.c.biopsy_date.is_not(None),
                cases.c.biopsy_date <= amber)


def _patient_severity(ctx: ScanContext) -> ColumnElement[str]:
    return flag_levels.patient_level_sql(cases, ctx.patient_cutoffs)  # as above


def _risk_cutoff(ctx: ScanContext) -> ColumnElement:
    cutoffs = ctx.risk_cutoffs
    return case(*[(cases.c.state == s.value, cutoffs[s.value]) for s in FUNNEL],
                else_=null())


def _risk_applies(ctx: ScanContext) -> ColumnElement[bool]:
    # Once treatment has started the planned date is history, not a deadline.
    return and_(_OPEN_CASE, _OUTCOME_PENDING, cases.c.planned_treatment_start.is_not(None),
                cases.c.treatment_status != TreatmentStatus.TREATMENT_STARTED.value,
                cases.c.planned_treatment_start < _risk_cutoff(ctx))


def _risk_shortfall(ctx: ScanContext) -> ColumnElement:
    remaining = case(*[(cases.c.state == s.value, ctx.remaining[s.value]) for s in FUNNEL],
                     else_=null())
    return remaining - days_between(literal(ctx.today, cases.c.planned_treatment_start.type),
                                    cases.c.planned_treatment_start)


def _unreachable_applies(ctx: ScanContext) -> ColumnElement[bool]:
    # failed_contacts is kept by triggers on contact_attempt (migration 0005).
    return and_(_OPEN_CASE, cases.c.failed_contacts >= ctx.unreachable_attempts)


def _stalled(ctx: ScanContext) -> ColumnElement[str]:
    return literal(FlagSeverity.STALLED.value)


RULES: tuple[Rule, ...] = (
    Rule(FlagKind.SLA, _sla_applies, _sla_severity, per_state=True, moved="sla"),
    Rule(FlagKind.PATIENT_CLOCK, _patient_applies, _patient_severity, moved="patient"),
    Rule(FlagKind.DEADLINE_RISK, _risk_applies, _stalled, shortfall=_risk_shortfall,
         moved="risk"),
    Rule(FlagKind.UNREACHABLE, _unreachable_applies, _stalled),
)
# The kinds cases.flag_rank is kept for: their level never moves with time.
_RANKED_KINDS = [k.value for k in FlagKind if k.value not in flag_levels.TIME_DRIVEN]


# --- the work list of an incremental scan ----------------------------------------------

# One row per case to look at, with why: written since the last scan (every rule), or
# moved across a threshold of one rule by time (that rule only).
_REASONS = ("dirty", "sla", "patient", "risk")
_touched = Table("scan_touched", MetaData(), Column("case_id", Integer, primary_key=True),
                 *[Column(r, Integer, nullable=False) for r in _REASONS],
                 prefixes=["TEMPORARY"])
# The worst open flag's rank of each case whose flags the scan may have changed.
_ranks = Table("scan_ranks", MetaData(), Column("case_id", Integer, primary_key=True),
               Column("r", Integer, nullable=False), prefixes=["TEMPORARY"])
_DIRTY = cases.c.scan_dirty == true()  # spelled as the partial index's predicate


def _between(column: ColumnElement, a, b, *, upper: bool = True) -> ColumnElement[bool]:  # noqa: ANN001
    """The values whose comparison with a cutoff differs between cutoffs a and b:
    (lo, hi] for `column <= cutoff` (upper), [lo, hi) for `column < cutoff`."""
    lo, hi = min(a, b), max(a, b)
    return and_(column > lo, column <= hi) if upper else and_(column >= lo, column < hi)


def _because(case_id: ColumnElement, reason: str) -> list:
    return [case_id.label("case_id"),
            *[literal(int(r == reason)).label(r) for r in _REASONS]]


@dataclass(frozen=True)
class _Moved:
    """The open cases whose stored threshold of one rule the clock moved across since
    the previous scan: an index range over `cases` (its WHERE repeats the partial
    index's)."""

    reason: str  # the rule's `moved`
    where: tuple[ColumnElement[bool], ...]
    # The rule's comparison can only have turned true for these cases: not written since
    # (their columns are as the previous scan saw them) and the threshold moved forward
    # (`due_soon_at <= now` with a later now; `biopsy_date <= amber` with a later amber).
    # Nothing of theirs to resolve then, so they skip the work list: one INSERT over the
    # range raises their flags (_sweep_kind), reading each case once instead of three
    # times (the list's fill, the resolve's probe, the raise's probe) - ~37,000 cases a
    # day at a million.
    only_raises: bool = False

    def cases(self) -> Select:
        return select(*_because(cases.c.id, self.reason)).where(*self.where)


def _moved_by_time(ctx: ScanContext, prev: PreviousScan) -> list[_Moved]:
    """One range per stored threshold the context moved across."""
    moved = []
    # Only the first level of each time-driven kind raises a flag (or, with time going
    # back, resolves one); the later levels are derived when read, nothing to write.
    if prev.now != ctx.now:  # ix_cases_scan_sla
        moved.append(_Moved("sla", (_OPEN_CASE, cases.c.due_soon_at.is_not(None),
                                    _between(cases.c.due_soon_at, prev.now, ctx.now)),
                            only_raises=ctx.now > prev.now))
    old, new = prev.patient_cutoffs[0], ctx.patient_cutoffs[0]  # amber
    if old != new:  # ix_cases_scan_patient
        moved.append(_Moved("patient", (_OPEN_CASE, _OUTCOME_PENDING,
                                        cases.c.biopsy_date.is_not(None),
                                        _between(cases.c.biopsy_date, old, new)),
                            only_raises=new > old))
    # Deadline risk stays on the list whichever way its cutoffs moved: its new flags
    # change cases.flag_rank, which is rewritten for the listed cases only.
    for state, new in ctx.risk_cutoffs.items():
        old = prev.risk_cutoffs.get(state)
        if old is None:
            old = date.min  # a state the previous scan did not know: all of it
        if old != new:  # ix_cases_scan_risk
            moved.append(_Moved("risk", (
                _OPEN_CASE, _OUTCOME_PENDING, cases.c.planned_treatment_start.is_not(None),
                cases.c.state == state,
                _between(cases.c.planned_treatment_start, old, new, upper=False))))
    return moved


def _fill_work_list(session: Session, moved: list[_Moved]) -> int:
    """Claim the dirty cases and add the ones time moved across a threshold (but those
    raised straight from their range); returns how many cases are on the list."""
    conn = session.connection()
    _touched.create(conn)
    moved = [m.cases() for m in moved if not m.only_raises]

    def listed(dirty: list) -> Select:
        rows = union_all(select(*dirty), *moved).subquery()
        return (select(rows.c.case_id, *[func.max(rows.c[r]) for r in _REASONS])
                .group_by(rows.c.case_id))

    columns = ["case_id", *_REASONS]
    if conn.dialect.name == "postgresql":
        # Claim and list in one statement: a concurrent writer's row is waited for, then
        # claimed with its committed values, which the later statements see.
        claimed = (update(cases).where(_DIRTY).values(scan_dirty=False)
                   .returning(cases.c.id).cte("claimed"))
        conn.execute(insert(_touched).from_select(
            columns, listed(_because(claimed.c.id, "dirty"))))
        # autovacuum never analyzes a temporary table: without statistics the planner
        # guesses its size and can pick a plan that visits every open flag per listed
        # case (the deadline-risk UPDATE ran for minutes at 1M, issue 8).
        conn.exec_driver_sql(f"ANALYZE {_touched.name}")
    else:
        # SQLite: this transaction holds the write lock, nobody writes in between.
        dirty = select(*_because(cases.c.id, "dirty")).where(_DIRTY).subquery()
        conn.execute(insert(_touched).from_select(columns, listed(list(dirty.c))))
        _clear_dirty(conn)
    return conn.execute(select(func.count()).select_from(_touched)).scalar_one()


def _clear_dirty(conn: Connection) -> None:
    """Every dirty mark cleared (SQLite, and a full scan on either database: nobody else
    writes meanwhile, or the scan will look at every case anyway)."""
    _keep_dirty_statistics(conn, conn.execute(
        update(cases).where(_DIRTY).values(scan_dirty=False)).rowcount)


def _keep_dirty_statistics(conn: Connection, cleared: int) -> None:
    """SQLite: ANALYZE the dirty-case index once a scan has emptied it of many entries.
    Statistics taken while most cases were dirty (the demo's bulk load, a bulk copy) say
    the partial index holds every case, and SQLite then walked the whole table for the
    next scans' `scan_dirty = 1` instead of the index (an unchanged scan took 1.3 s at a
    million cases, not 10 ms) until the nightly ANALYZE. Analyzing the index just
    emptied costs next to nothing and drops its stale row. (PostgreSQL's planner reads
    the index's current size itself.)"""
    if conn.dialect.name == "sqlite" and cleared > DIRTY_STATISTICS_CLEARED:
        conn.exec_driver_sql("ANALYZE ix_cases_scan_dirty")


# --- one rule ---------------------------------------------------------------------------


def _sweep_kind(session: Session, rule: Rule, ctx: ScanContext,
                direct: tuple[_Moved, ...] = ()) -> dict[str, int]:
    """Bring one kind's open flags in line with the rule: for the cases on the work list
    and in the `direct` ranges (incremental), or for every case (a full scan). Raises
    and resolves only: a flag's level is never rewritten (see the module docstring)."""
    only = None
    if ctx.incremental:
        why = _touched.c.dirty == 1
        if rule.moved is not None:
            why = or_(why, _touched.c[rule.moved] == 1)
        only = select(_touched.c.case_id).where(why)
    kind = rule.kind.value
    now = literal(ctx.now, flags.c.raised_at.type)
    applies = rule.applies(ctx)
    open_of_kind = and_(flags.c.resolved_at.is_(None), flags.c.kind == kind)

    # 1. resolve the open flags whose cause is gone (state moved, hold started, record
    #    arrived, contact made, closed, outcome recorded...): each flag probes its own
    #    case by primary key (NOT EXISTS; a row-value NOT IN rescanned a whole list per
    #    flag on SQLite, issue 8). No join in the UPDATE itself: nothing is copied from
    #    the case, so both databases plan it as a scan of the open flags of the kind (on
    #    the work list's cases) with one probe each.
    cause = [applies, cases.c.id == flags.c.case_id]
    if rule.per_state:  # an SLA flag belongs to the state it was raised in
        cause.append(cases.c.state == flags.c.state)
    scope = [] if only is None else [_listed(session, flags.c.case_id, only)]
    resolved = session.execute(
        update(flags)
        .where(open_of_kind, *scope, ~exists().where(*cause).correlate(flags))
        .values(resolved_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount or 0

    # 2. raise new flags where none is open.
    open_flags = None  # not counted on an incremental scan
    if only is None:
        # After step 1 every open flag of this kind belongs to a distinct case that
        # qualifies, so when the counts agree there is nothing to raise - a count is much
        # cheaper than the anti-join below over every case.
        open_flags = session.execute(
            select(func.count()).select_from(flags).where(open_of_kind)).scalar_one()
        qualifying = session.execute(
            select(func.count()).select_from(cases).where(applies)).scalar_one()
        if qualifying <= open_flags:
            return {"raised": 0, "resolved": resolved}
    has_open = exists().where(flags.c.case_id == cases.c.id, flags.c.kind == kind,
                              flags.c.resolved_at.is_(None))
    where = [applies]
    # With no open flag of the kind (a full scan of a new database) there is nothing to
    # skip: no anti-join, which PostgreSQL planned as a scan of case_flag - growing with
    # the rows being inserted, invisible to the statement - for every case (quadratic).
    if open_flags != 0:
        where.append(~has_open)
    columns = ["case_id", "kind", "severity", "state", "raised_at"]
    values_ = [cases.c.id, literal(kind), rule.severity(ctx), cases.c.state, now]
    if rule.shortfall is not None:
        columns.append("shortfall_days")
        values_.append(rule.shortfall(ctx))

    def raise_where(*scope: ColumnElement[bool]) -> int:
        return session.execute(
            insert(flags).from_select(columns, select(*values_).where(*where, *scope))
            # an INSERT's cursor is closed before .rowcount is read unless asked to keep it
            .execution_options(preserve_rowcount=True)
        ).rowcount or 0

    if only is None:
        return {"raised": raise_where(), "resolved": resolved}
    raised = raise_where(_listed(session, cases.c.id, only))
    # A case both written and in a range was raised just above: the anti-join skips it.
    for moved in direct:
        raised += raise_where(*moved.where)
    return {"raised": raised, "resolved": resolved}


def _listed(session: Session, column: ColumnElement, only: Select) -> ColumnElement[bool]:
    """`column` is one of the work list's cases. SQLite: IN (subquery), which it plans as
    one probe per listed case. PostgreSQL: = ANY(ARRAY(subquery)) - the list is read
    once and each case probed by its key; with IN, PostgreSQL hash-joined the list
    against every case already past the rule's threshold (363,000 rows read for 29,000
    listed at 1M cases: 0.67 s of the SLA raise, and as much for the patient clock)."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(only)
    return column == any_(func.array(only.scalar_subquery()))


def _keep_flag_statistics(session: Session, changed: int) -> None:
    """PostgreSQL: ANALYZE case_flag when one rule's raises and resolves changed more than
    STALE_FLAG_STATISTICS of its rows (the first scan of a loaded database, every flag
    raised at once). The scan is the only writer of flags, and its anti-joins are
    planned from case_flag's statistics: with the table still known as empty the planner
    probed every open flag of a kind for each listed case (a nested loop over a
    materialised index scan: 6 s for 1,245 raises at 100k cases; the 1M deadline-risk
    statement ran for minutes, issue 8). Autovacuum would catch up, but not before the
    next scan. Inside the scan's transaction: ANALYZE counts its own new rows."""
    conn = session.connection()
    if conn.dialect.name != "postgresql" or not changed:
        return
    known = conn.exec_driver_sql(
        "SELECT reltuples FROM pg_class WHERE oid = 'case_flag'::regclass").scalar_one()
    if changed > STALE_FLAG_STATISTICS * max(float(known), 0.0):  # -1: never analyzed
        conn.exec_driver_sql("ANALYZE case_flag")


def _update_flag_rank(session: Session, only: Table | None) -> None:
    """cases.flag_rank = the worst open flag's rank among _RANKED_KINDS (0 without one),
    written only where it differs: for the work list's cases written since the last scan
    or moved across a risk cutoff (the only ones whose such flags can have changed), or
    for every case on a full scan."""
    open_flag = and_(flags.c.resolved_at.is_(None), flags.c.kind.in_(_RANKED_KINDS))
    rank = func.max(flag_levels.rank_sql(flags.c.severity))
    if only is not None:
        # The ranks that moved first (one probe of the open-flag index and one of the
        # case per listed case), then those case rows rewritten by primary key. (An
        # UPDATE ... FROM joining the list walked all of `cases` on SQLite: 1.7 s at 1M.)
        conn = session.connection()
        _ranks.create(conn)
        listed = select(only.c.case_id).where(or_(only.c.dirty == 1, only.c.risk == 1)) \
            .subquery()
        new_rank = func.coalesce(rank, 0)
        conn.execute(insert(_ranks).from_select(["case_id", "r"], select(
            listed.c.case_id, new_rank)
            .select_from(listed.join(cases, cases.c.id == listed.c.case_id)
                         .outerjoin(flags, and_(flags.c.case_id == listed.c.case_id,
                                                open_flag)))
            .group_by(listed.c.case_id, cases.c.flag_rank)
            .having(new_rank != cases.c.flag_rank)))
        moved = select(_ranks.c.r).where(_ranks.c.case_id == cases.c.id).scalar_subquery()
        session.execute(update(cases)
                        .where(_listed(session, cases.c.id, select(_ranks.c.case_id)))
                        .values(flag_rank=moved))
        _ranks.drop(conn)
        return
    w = (select(flags.c.case_id, rank.label("r"))
         .where(open_flag).group_by(flags.c.case_id).subquery())
    session.execute(update(cases).where(cases.c.id == w.c.case_id, cases.c.flag_rank != w.c.r)
                    .values(flag_rank=w.c.r))
    if session.get_bind().dialect.name == "postgresql":
        # The ranked cases without such a flag as a set difference (hashed or sorted,
        # never a loop per case): as an anti-join, with statistics from before the
        # ranks were written, PostgreSQL probed each case against every open flag of
        # those kinds through ix_case_flag_open_kind - 364 s of a second full scan at a
        # million cases.
        gone = (select(cases.c.id).where(cases.c.flag_rank != 0)
                .except_(select(flags.c.case_id).where(open_flag)).subquery())
        session.execute(update(cases).where(cases.c.id == gone.c.id).values(flag_rank=0))
        return
    session.execute(update(cases)
                    .where(cases.c.flag_rank != 0,
                           ~exists().where(flags.c.case_id == cases.c.id, open_flag))
                    .values(flag_rank=0))


# --- context ----------------------------------------------------------------------------


def _latest_context(session: Session, jobs: tuple[str, ...]) -> str | None:
    # Newest by id: scans are serialised, so the id order is the commit order.
    return session.execute(
        select(JobRun.context).where(JobRun.job.in_(jobs),
                                     JobRun.status == JobStatus.OK.value)
        .order_by(JobRun.id.desc()).limit(1)
    ).scalar_one_or_none()


def stored_medians(session: Session, *, now: datetime) -> tuple[dict, datetime]:
    """The stage medians of the newest scan or nightly job that stored some, unless
    missing or older than MEDIANS_MAX_AGE: then computed from history (seconds at a
    million cases)."""
    raw = session.execute(
        select(JobRun.context).where(JobRun.job.in_((SCAN_JOB, RECOMPUTE_JOB)),
                                     JobRun.status == JobStatus.OK.value,
                                     JobRun.context.is_not(None))
        .order_by(JobRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    found = _medians_from_json(raw)
    if found is not None and found[1] >= as_utc(now) - MEDIANS_MAX_AGE:
        return found
    return clocks.stage_medians(session), as_utc(now)


def build_context(session: Session, *, now: datetime, settings=None) -> ScanContext:  # noqa: ANN001
    settings = settings or get_settings()
    today = clocks.local_today(now, settings.tz)
    thresholds = clocks.PatientClockThresholds.from_settings(settings)
    medians, medians_at = stored_medians(session, now=now)
    remaining = clocks.expected_remaining_days(medians, clocks.load_limits(session))
    return ScanContext(now=as_utc(now), today=today,
                       patient_cutoffs=thresholds.cutoffs(today), remaining=remaining,
                       unreachable_attempts=settings.unreachable_attempts,
                       medians=medians, medians_at=medians_at)


def previous_scan(session: Session) -> PreviousScan | None:
    return PreviousScan.from_json(_latest_context(session, (SCAN_JOB,)))


# --- the scan ---------------------------------------------------------------------------


def scan_session(session: Session, *, now: datetime, settings=None,  # noqa: ANN001
                 full: bool = False) -> ScanResult:
    """The scan's statements inside the caller's transaction (tests and `run_scan`):
    incremental after a scan with a usable context, else (or with `full`) full."""
    ctx = build_context(session, now=now, settings=settings)
    prev = None if full else previous_scan(session)
    if prev is not None and prev.unreachable_attempts != ctx.unreachable_attempts:
        prev = None
    result = ScanResult(started_at=ctx.now, full=prev is None, context=ctx.to_json())
    only = None if prev is None else _touched
    ctx = replace(ctx, incremental=only is not None)
    direct: list[_Moved] = []
    if prev is None:
        _clear_dirty(session.connection())
        result.examined = session.execute(
            select(func.count()).select_from(cases).where(_OPEN_CASE)).scalar_one()
    else:
        moved = _moved_by_time(ctx, prev)
        direct = [m for m in moved if m.only_raises]
        result.examined = _fill_work_list(session, moved)
    if only is None or result.examined or direct:
        for rule in RULES:
            counts = _sweep_kind(session, rule, ctx,
                                 tuple(m for m in direct if m.reason == rule.moved))
            _keep_flag_statistics(session, counts["raised"] + counts["resolved"])
            result.by_kind[rule.kind.value] = counts
            result.raised += counts["raised"]
            result.resolved += counts["resolved"]
        _update_flag_rank(session, only)
    if only is not None:
        _touched.drop(session.connection())  # a rollback drops it too (transactional DDL)
    return result


def run_scan(
    engine: Engine,
    *,
    now: datetime,
    worker: str | None = None,
    still_leader: Callable[[Session, datetime], bool] | None = None,
    settings=None,  # noqa: ANN001
    full: bool = False,
) -> ScanResult:
    """One complete scan in one transaction, recorded as a JobRun row (with the context
    the next scan starts from).

    `still_leader` (the worker's lease check) runs inside the transaction, after the
    lock is taken: a worker that lost its lease while paused does nothing. On error the
    transaction rolls back and a failed JobRun is written on its own, then the error is
    raised again.
    """
    started = time.perf_counter()
    now = as_utc(now)
    try:
        with session_scope(engine) as session:
            conn = session.connection()
            if engine.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCAN_LOCK})
            # SQLite: a scan revisits the same case and flag pages several times, so a
            # bigger page cache while it runs keeps those pages in memory.
            with sqlite_page_cache(conn, _SQLITE_SCAN_CACHE_KIB):
                if still_leader is not None and not still_leader(session, now):
                    return ScanResult(started_at=now, skipped=True)
                run = JobRun(job=SCAN_JOB, status=JobStatus.RUNNING.value, started_at=now,
                             worker=worker)
                session.add(run)
                session.flush()
                result = scan_session(session, now=now, settings=settings, full=full)
                result.seconds = time.perf_counter() - started
                run.status = JobStatus.OK.value
                run.finished_at = _finished(now, result.seconds)
                run.raised = result.raised
                run.resolved, run.examined = result.resolved, result.examined
                run.context = result.context
                session.flush()
                result.job_run_id = run.id
                return result
    except Exception as exc:
        _record_failure(engine, SCAN_JOB, now=now, worker=worker, exc=exc,
                        seconds=time.perf_counter() - started)
        raise


def _finished(now: datetime, seconds: float) -> datetime:
    # `now` is the scan's logical time; the finish is that plus the measured duration,
    # so a test's frozen `now` still gives consistent, ordered rows.
    return now + timedelta(seconds=seconds)


def _record_failure(engine: Engine, job: str, *, now: datetime, worker: str | None,
                    exc: BaseException, seconds: float) -> None:
    try:
        with session_scope(engine) as session:
            session.add(JobRun(job=job, status=JobStatus.FAILED.value, started_at=now,
                               finished_at=_finished(now, seconds), worker=worker,
                               error=f"{type(exc).__name__}: {exc}"[:DETAIL_MAX]))
    except Exception:  # the database itself may be what failed; the caller logs the error
        log.exception("could not record the failed %s run", job)


def run_recompute(engine: Engine, *, now: datetime, worker: str | None = None,
                  still_leader: Callable[[Session, datetime], bool] | None = None) -> int | None:
    """The nightly full recompute of stored deadlines, recorded as a JobRun
    (`examined` = cases whose deadlines changed), which also stores fresh stage medians
    for the scans (the only place they are read from the whole history). None when not
    the leader."""
    started = time.perf_counter()
    now = as_utc(now)
    try:
        with session_scope(engine) as session:
            if still_leader is not None and not still_leader(session, now):
                return None
            changed = clocks.recompute_all_deadlines(session, now=now)
            medians = json.dumps({"v": CONTEXT_VERSION,
                                  **_medians_json(clocks.stage_medians(session), now)})
            session.add(JobRun(job=RECOMPUTE_JOB, status=JobStatus.OK.value, started_at=now,
                               finished_at=_finished(now, time.perf_counter() - started),
                               examined=changed, worker=worker, context=medians))
            return changed
    except Exception as exc:
        _record_failure(engine, RECOMPUTE_JOB, now=now, worker=worker, exc=exc,
                        seconds=time.perf_counter() - started)
        raise
