"""The stalled-case scan (DESIGN.md section 5): raise, escalate and resolve flags.

Set-based, per flag kind: one UPDATE ... FROM ... RETURNING visits only the open flags
that differ from what the rule wants now (a NOT EXISTS probing each flag's case by its
primary key) and resolves them (cause gone) or
moves their severity/shortfall; then one INSERT ... SELECT raises the missing flags,
skipped when a count shows none is missing. Every comparison is between stored columns
and bound values (`now`, cutoff dates), so the SQL is the same on SQLite and PostgreSQL
(the one exception, a date difference for the shortfall, is spelled per dialect) and no
Python loop ever visits a case.

The whole scan and its JobRun row are one transaction: a scan killed half-way leaves
nothing behind and the next one does the whole job. Scans are serialised (SQLite's
BEGIN IMMEDIATE; a transaction-scoped advisory lock on PostgreSQL), so a manual
`casedesk scan` beside the worker can never raise a flag twice; the partial unique index
(one open flag per case and kind) would refuse it anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    text,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Float
from sqlmodel import Session

from core.config import get_settings
from core.db import session_scope
from core.models import DETAIL_MAX, Case, CaseFlag, ContactAttempt, JobRun
from core.timeutil import as_utc
from core.vocab import (
    FUNNEL,
    CaseState,
    ContactOutcome,
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
_SQLITE_SCAN_CACHE = -65536  # KiB: 64 MB while a scan runs

cases = Case.__table__
flags = CaseFlag.__table__
attempts = ContactAttempt.__table__


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
    escalated: int = 0
    resolved: int = 0
    adjusted: int = 0  # severity lowered (limit raised) or shortfall changed
    examined: int = 0  # open cases looked at
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    job_run_id: int | None = None
    started_at: datetime | None = None
    seconds: float = 0.0
    skipped: bool = False  # not the leader any more: nothing was done

    @property
    def changed(self) -> int:
        return self.raised + self.escalated + self.resolved + self.adjusted

    def as_dict(self) -> dict:
        data = asdict(self)
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


@dataclass(frozen=True)
class Rule:
    kind: FlagKind
    applies: Callable[[ScanContext], ColumnElement[bool]]  # over `cases`
    severity: Callable[[ScanContext], ColumnElement[str]] | None = None
    fixed: FlagSeverity | None = None  # kinds with a single severity (at risk, unreachable)
    shortfall: Callable[[ScanContext], ColumnElement] | None = None
    # An SLA flag belongs to the state it was raised in: leaving the state resolves it
    # (a new flag is raised for the new state if that one is late too).
    per_state: bool = False


_OPEN_CASE = cases.c.state != CaseState.CLOSED.value
_OUTCOME_PENDING = cases.c.outcome_recorded_at.is_(None)


def _sla_applies(ctx: ScanContext) -> ColumnElement[bool]:
    # due_* are NULL while on hold, closed or seen-with-outcome; the explicit tests keep a
    # stray stored deadline from flagging a paused case.
    return and_(_OPEN_CASE, cases.c.on_hold.is_(False), cases.c.due_soon_at.is_not(None),
                cases.c.due_soon_at <= ctx.now)


def _sla_severity(ctx: ScanContext) -> ColumnElement[str]:
    return case(
        (cases.c.escalate_at <= ctx.now, FlagSeverity.ESCALATED.value),
        (cases.c.due_at <= ctx.now, FlagSeverity.STALLED.value),
        else_=FlagSeverity.DUE_SOON.value,
    )


def _patient_applies(ctx: ScanContext) -> ColumnElement[bool]:
    amber, _, _ = ctx.patient_cutoffs
    return and_(_OPEN_CASE, _OUTCOME_PENDING, cases.c.biopsy_date.is_not(None),
                cases.c.biopsy_date <= amber)


def _patient_severity(ctx: ScanContext) -> ColumnElement[str]:
    _, red, critical = ctx.patient_cutoffs
    return case(
        (cases.c.biopsy_date <= critical, FlagSeverity.ESCALATED.value),
        (cases.c.biopsy_date <= red, FlagSeverity.STALLED.value),
        else_=FlagSeverity.DUE_SOON.value,
    )


def _risk_cutoff(ctx: ScanContext) -> ColumnElement:
    return case(
        *[(cases.c.state == s.value, clocks.risk_cutoff(ctx.today, ctx.remaining[s.value]))
          for s in FUNNEL],
        else_=null(),
    )


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


# Cases with enough failed contact attempts in a row, worked out once per scan: the
# subquery walks every attempt, and each flag statement would otherwise repeat it.
_unreachable = Table("scan_unreachable", MetaData(), Column("case_id", Integer, primary_key=True),
                     prefixes=["TEMPORARY"])


def _fill_unreachable(session: Session, ctx: ScanContext) -> None:
    # Failed attempts with no successful one at or after them, counted per case
    # (measured: faster on SQLite than a LEFT JOIN to each case's last success or a
    # ROW_NUMBER() window).
    ok = ContactOutcome.REACHED.value
    later = attempts.alias("later")
    failed_since_success = (
        select(attempts.c.case_id)
        .where(attempts.c.outcome != ok,
               ~exists().where(later.c.case_id == attempts.c.case_id, later.c.outcome == ok,
                               later.c.at >= attempts.c.at))
        .group_by(attempts.c.case_id)
        .having(func.count() >= ctx.unreachable_attempts)
    )
    conn = session.connection()
    _unreachable.create(conn)
    conn.execute(insert(_unreachable).from_select(["case_id"], failed_since_success))


def _unreachable_applies(ctx: ScanContext) -> ColumnElement[bool]:
    return and_(_OPEN_CASE, cases.c.id.in_(select(_unreachable.c.case_id)))


RULES: tuple[Rule, ...] = (
    Rule(FlagKind.SLA, _sla_applies, _sla_severity, per_state=True),
    Rule(FlagKind.PATIENT_CLOCK, _patient_applies, _patient_severity),
    Rule(FlagKind.DEADLINE_RISK, _risk_applies, fixed=FlagSeverity.STALLED,
         shortfall=_risk_shortfall),
    Rule(FlagKind.UNREACHABLE, _unreachable_applies, fixed=FlagSeverity.STALLED),
)


def _rank(severity: ColumnElement[str]) -> ColumnElement[int]:
    return case(*[(severity == s.value, s.rank) for s in FlagSeverity], else_=0)


def _sweep_kind(session: Session, rule: Rule, ctx: ScanContext) -> dict[str, int]:
    kind = rule.kind.value
    now = literal(ctx.now, flags.c.raised_at.type)
    applies = rule.applies(ctx)
    severity = (literal(rule.fixed.value) if rule.fixed is not None
                else rule.severity(ctx))  # type: ignore[misc]
    open_of_kind = and_(flags.c.resolved_at.is_(None), flags.c.kind == kind)
    cause = [applies]
    if rule.per_state:
        cause.append(cases.c.state == flags.c.state)
    # CASE ... = 1 rather than the bare condition: a comparison with a NULL column is
    # NULL, and NOT NULL would leave a flag whose cause is gone unresolved.
    still = case((and_(*cause), 1), else_=0) == 1

    # 1. one pass over the open flags of this kind: resolve those whose cause is gone
    #    (state moved, hold started, record arrived, contact made, closed, outcome
    #    recorded...), move the severity (and shortfall) of the others where it changed.
    #    RETURNING tells the three apart without another pass; when nothing changed it
    #    returns nothing.
    values: dict = {"resolved_at": case((still, null()), else_=now)}
    if rule.fixed is None:
        values["severity"] = case((still, severity), else_=flags.c.severity)
        # escalated_at marks a move up; a move down (a limit was raised) keeps it
        values["escalated_at"] = case(
            (and_(still, _rank(severity) > _rank(flags.c.severity)), now),
            else_=flags.c.escalated_at)
    if rule.shortfall is not None:
        shortfall = rule.shortfall(ctx)
        values["shortfall_days"] = case((still, shortfall), else_=flags.c.shortfall_days)
    # Which open flags differ from what the rule wants now; only those join their case.
    f = flags.alias("f")
    want = [cases.c.id, severity]
    have = [f.c.case_id, f.c.severity]
    if rule.per_state:
        want.append(cases.c.state)
        have.append(f.c.state)
    if rule.shortfall is not None:
        want.append(rule.shortfall(ctx))
        have.append(f.c.shortfall_days)
    # NOT EXISTS, not a row-value NOT IN: SQLite cannot prove the CASE column non-NULL,
    # so NOT IN rescanned the whole list for every flag that missed - 15 s of CPU at
    # 100,000 cases, quadratic beyond (issue 8). Each flag now probes its own case by
    # primary key; correlate(f) keeps `cases` inside the subquery.
    differs = ~exists().where(applies, *[w == h for w, h in zip(want, have, strict=True)]) \
        .correlate(f)
    if rule.shortfall is not None:
        differs = differs | f.c.shortfall_days.is_(None)
    differing = select(f.c.id).where(f.c.resolved_at.is_(None), f.c.kind == kind, differs)
    rows = session.execute(
        update(flags)
        .where(flags.c.id.in_(differing), cases.c.id == flags.c.case_id)
        .values(**values)
        .returning(flags.c.resolved_at, flags.c.escalated_at)
    ).all()
    resolved = sum(1 for gone, _ in rows if gone is not None)
    escalated = sum(1 for gone, up in rows
                    if gone is None and up is not None and as_utc(up) == ctx.now)
    adjusted = len(rows) - resolved - escalated

    # 2. raise new flags where none is open. After step 1 every open flag of this kind
    #    belongs to a distinct case that qualifies, so when the counts agree there is
    #    nothing to raise - a count is much cheaper than the anti-join below.
    open_flags = session.execute(
        select(func.count()).select_from(flags).where(open_of_kind)).scalar_one()
    qualifying = session.execute(
        select(func.count()).select_from(cases).where(applies)).scalar_one()
    if qualifying <= open_flags:
        return {"raised": 0, "escalated": escalated, "resolved": resolved,
                "adjusted": adjusted}
    has_open = exists().where(flags.c.case_id == cases.c.id, flags.c.kind == kind,
                              flags.c.resolved_at.is_(None))
    columns = ["case_id", "kind", "severity", "state", "raised_at"]
    values_ = [cases.c.id, literal(kind), severity, cases.c.state, now]
    if rule.shortfall is not None:
        columns.append("shortfall_days")
        values_.append(rule.shortfall(ctx))
    raised = session.execute(
        insert(flags).from_select(columns, select(*values_).where(applies, ~has_open))
        # an INSERT's cursor is closed before .rowcount is read unless asked to keep it
        .execution_options(preserve_rowcount=True)
    ).rowcount or 0
    return {"raised": raised, "escalated": escalated, "resolved": resolved,
            "adjusted": adjusted}


def build_context(session: Session, *, now: datetime, settings=None) -> ScanContext:  # noqa: ANN001
    settings = settings or get_settings()
    today = clocks.local_today(now, settings.tz)
    thresholds = clocks.PatientClockThresholds.from_settings(settings)
    remaining = clocks.expected_remaining_days(clocks.stage_medians(session),
                                               clocks.load_limits(session))
    return ScanContext(now=as_utc(now), today=today,
                       patient_cutoffs=thresholds.cutoffs(today), remaining=remaining,
                       unreachable_attempts=settings.unreachable_attempts)


def scan_session(session: Session, *, now: datetime, settings=None) -> ScanResult:  # noqa: ANN001
    """The scan's statements inside the caller's transaction (tests and `run_scan`)."""
    ctx = build_context(session, now=now, settings=settings)
    result = ScanResult(started_at=ctx.now)
    _fill_unreachable(session, ctx)
    for rule in RULES:
        counts = _sweep_kind(session, rule, ctx)
        result.by_kind[rule.kind.value] = counts
        result.raised += counts["raised"]
        result.escalated += counts["escalated"]
        result.resolved += counts["resolved"]
        result.adjusted += counts["adjusted"]
    result.examined = session.execute(
        select(func.count()).select_from(cases).where(_OPEN_CASE)
    ).scalar_one()
    _unreachable.drop(session.connection())  # a rollback drops it too (transactional DDL)
    return result


def run_scan(
    engine: Engine,
    *,
    now: datetime,
    worker: str | None = None,
    still_leader: Callable[[Session, datetime], bool] | None = None,
    settings=None,  # noqa: ANN001
) -> ScanResult:
    """One complete scan in one transaction, recorded as a JobRun row.

    `still_leader` (the worker's lease check) runs inside the transaction, after the
    lock is taken: a worker that lost its lease while paused does nothing. On error the
    transaction rolls back and a failed JobRun is written on its own, then the error is
    raised again.
    """
    started = time.perf_counter()
    now = as_utc(now)
    try:
        with session_scope(engine) as session:
            if engine.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCAN_LOCK})
            else:
                # The scan revisits every open flag's case several times: a bigger page
                # cache for this transaction keeps those pages in memory (reset below).
                session.connection().exec_driver_sql(f"PRAGMA cache_size={_SQLITE_SCAN_CACHE}")
            if still_leader is not None and not still_leader(session, now):
                return ScanResult(started_at=now, skipped=True)
            run = JobRun(job=SCAN_JOB, status=JobStatus.RUNNING.value, started_at=now,
                         worker=worker)
            session.add(run)
            session.flush()
            result = scan_session(session, now=now, settings=settings)
            result.seconds = time.perf_counter() - started
            run.status = JobStatus.OK.value
            run.finished_at = _finished(now, result.seconds)
            run.raised, run.escalated = result.raised, result.escalated
            run.resolved, run.examined = result.resolved, result.examined
            session.flush()
            result.job_run_id = run.id
            if engine.dialect.name == "sqlite":
                session.connection().exec_driver_sql("PRAGMA cache_size=-2000")
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
    (`examined` = cases whose deadlines changed). None when not the leader."""
    started = time.perf_counter()
    now = as_utc(now)
    try:
        with session_scope(engine) as session:
            if still_leader is not None and not still_leader(session, now):
                return None
            changed = clocks.recompute_all_deadlines(session, now=now)
            session.add(JobRun(job=RECOMPUTE_JOB, status=JobStatus.OK.value, started_at=now,
                               finished_at=_finished(now, time.perf_counter() - started),
                               examined=changed, worker=worker))
            return changed
    except Exception as exc:
        _record_failure(engine, RECOMPUTE_JOB, now=now, worker=worker, exc=exc,
                        seconds=time.perf_counter() - started)
        raise

