"""The triage queue and its headline numbers (DESIGN.md sections 1, 2 and 5): SQL only.

Order, most urgent first:
1. severity rank: the worst open flag of the case, or the SLA level its stored deadlines
   give at `now` if that is worse (so a case is not ranked low just because the scan
   has not run since its deadline passed): escalated 3, stalled 2, due soon 1, none 0;
2. how far past the limit: the stored `due_at`, earliest first (on hold: last);
3. the patient clock: the biopsy date, oldest first; then the case id.

Paging is keyset on that key (never OFFSET), the team restriction is inside the SQL
(`core.permissions.team_filter`), and only one page of rows is ever loaded; the *why*
and the *next action* are then written for those rows with two small IN queries.

Search matches the patient's normalised name (`patient.search_name`, built with
`core.validation.search_key`) or record number; `%`, `_` and `\\` in the search text are
escaped and the text is a bound parameter, so quotes and wildcards are taken literally.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy import case as sql_case
from sqlmodel import Session

from core import audit
from core.actor import Actor
from core.errors import ValidationError
from core.models import (
    Case,
    CaseFlag,
    ContactAttempt,
    Patient,
    RecordItem,
    Team,
    User,
)
from core.permissions import Action, Scope, require, scope, team_filter
from core.timeutil import as_utc
from core.validation import clean_text, search_key
from core.vocab import (
    CaseState,
    ContactOutcome,
    FlagKind,
    FlagSeverity,
    RecordKind,
    RecordStatus,
    ReferralStatus,
    Requirement,
    Role,
)
from core.workflows.clocks import load_limits

# Sort keys for NULLs: a case with no deadline (on hold) or no biopsy date sorts last.
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
FAR_DAY = date(9999, 12, 31)
LIKE_ESCAPE = "\\"
SEARCH_MAX = 120

SEVERITY_BY_RANK = {s.rank: s for s in FlagSeverity}


class Assignee:
    """Assignee filter values besides a user id."""

    ME = "me"
    UNASSIGNED = "unassigned"
    ANYONE = "anyone"


@dataclass(frozen=True)
class TriageFilters:
    states: tuple[str, ...] = ()  # empty: every open state
    flag: str | None = None  # None: any case; "any": has an open flag; or a FlagKind value
    assignee: str | int = Assignee.ANYONE  # "me", "unassigned", "anyone" or a user id
    team_id: int | None = None  # narrows further; never widens past team_filter
    search: str | None = None

    @classmethod
    def default_for(cls, actor: Actor) -> TriageFilters:
        """A coordinator starts on their own cases; managers and admins on everyone's."""
        return cls(assignee=Assignee.ME if actor.role is Role.COORDINATOR else Assignee.ANYONE)


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: the sort key of the last row shown."""

    neg_rank: int
    due_key: datetime
    bio_key: date
    case_id: int

    def encode(self) -> str:
        raw = json.dumps([self.neg_rank, self.due_key.isoformat(), self.bio_key.isoformat(),
                          self.case_id])
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            neg, due, bio, cid = json.loads(base64.urlsafe_b64decode(token.encode()))
            return cls(int(neg), datetime.fromisoformat(due), date.fromisoformat(bio), int(cid))
        except (ValueError, TypeError) as exc:
            raise ValidationError("That page link is not valid; start from the first page.") \
                from exc


@dataclass
class QueueRow:
    case_id: int
    version: int
    patient_name: str
    mrn: str
    state: str
    severity: FlagSeverity | None
    due_at: datetime | None
    biopsy_date: date | None
    patient_days: int | None
    assignee: str | None
    on_hold: bool
    why: str = ""
    next_action: str = ""
    flags: list[str] = field(default_factory=list)


@dataclass
class QueuePage:
    rows: list[QueueRow]
    next_cursor: Cursor | None  # None: this is the last page


@dataclass(frozen=True)
class Headline:
    scope_label: str  # "My open cases" or "Open cases"
    open_cases: int
    stalled: int
    escalated: int
    at_risk: int
    appointments_this_week: int
    records_overdue: int  # cases with a requested record past its chase date


# --- SQL building blocks ------------------------------------------------------------------


def _flag_rank_expr() -> ColumnElement[int]:
    by_severity = sql_case(*[(CaseFlag.severity == s.value, s.rank) for s in FlagSeverity],
                           else_=0)
    worst = (select(func.max(by_severity))
             .where(CaseFlag.case_id == Case.id, CaseFlag.resolved_at.is_(None))
             .correlate(Case).scalar_subquery())
    return func.coalesce(worst, 0)


def _sla_rank_expr(now: datetime) -> ColumnElement[int]:
    return sql_case(
        (Case.escalate_at <= now, FlagSeverity.ESCALATED.rank),
        (Case.due_at <= now, FlagSeverity.STALLED.rank),
        (Case.due_soon_at <= now, FlagSeverity.DUE_SOON.rank),
        else_=0,
    )


def _rank_expr(now: datetime, dialect: str) -> ColumnElement[int]:
    # The two-argument scalar max (SQLite) / GREATEST (PostgreSQL) evaluates the flag
    # subquery once per row; a CASE comparing the two would run it twice.
    flag, sla = _flag_rank_expr(), _sla_rank_expr(now)
    if dialect == "sqlite":
        return func.max(flag, sla)
    return func.greatest(flag, sla)


def _team_column(by_person: bool) -> ColumnElement:
    """The team column for `team_filter`. When the query also picks one person's cases,
    `team_id + 0` keeps the planner off the team index (without statistics SQLite
    prefers it, and walks the whole team - 57 ms instead of 1 ms at 100k cases)."""
    return Case.team_id + 0 if by_person else Case.team_id


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards and the escape character itself taken literally."""
    escaped = (text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%")
               .replace("_", LIKE_ESCAPE + "_"))
    return f"%{escaped}%"


def clean_search(text: str | None) -> str | None:
    return clean_text(text, field="Search", max_length=SEARCH_MAX)


def _conditions(actor: Actor, filters: TriageFilters, now: datetime) -> list[ColumnElement]:
    by_person = filters.assignee not in (Assignee.ANYONE, Assignee.UNASSIGNED, None)
    conds: list[ColumnElement] = [
        Case.state != CaseState.CLOSED.value,
        team_filter(actor, Action.VIEW_QUEUE, _team_column(by_person)),
    ]
    if filters.team_id is not None:
        # A team outside one's reach is refused (and audited), not answered with an empty
        # queue that reads as "no work" (issue 7: forbidden cells are refused).
        require(actor, Action.VIEW_QUEUE, filters.team_id)
        conds.append(Case.team_id == filters.team_id)
    if filters.states:
        bad = [s for s in filters.states if s not in {c.value for c in CaseState}]
        if bad:
            raise ValidationError(f"Unknown state: {', '.join(bad)}.")
        conds.append(Case.state.in_(list(filters.states)))
    if filters.assignee == Assignee.ME:
        conds.append(Case.assignee_id == actor.user_id)
    elif filters.assignee == Assignee.UNASSIGNED:
        conds.append(Case.assignee_id.is_(None))
    elif filters.assignee not in (Assignee.ANYONE, None):
        conds.append(Case.assignee_id == int(filters.assignee))
    if filters.flag:
        open_flag = and_(CaseFlag.case_id == Case.id, CaseFlag.resolved_at.is_(None))
        if filters.flag == "any":
            conds.append(or_(exists().where(open_flag), Case.due_at <= now))
        else:
            kind = FlagKind(filters.flag)
            cond = exists().where(open_flag, CaseFlag.kind == kind.value)
            if kind is FlagKind.SLA:
                cond = or_(cond, Case.due_at <= now)
            conds.append(cond)
    term = clean_search(filters.search)
    if term:
        pattern_name = like_pattern(search_key(term))
        pattern_mrn = like_pattern(term.upper())
        # The queue joins patient already.
        conds.append(or_(Patient.search_name.like(pattern_name, escape=LIKE_ESCAPE),
                         func.upper(Patient.mrn).like(pattern_mrn, escape=LIKE_ESCAPE)))
    return conds


# --- the queue ----------------------------------------------------------------------------


def queue(
    session: Session,
    *,
    actor: Actor,
    now: datetime,
    filters: TriageFilters | None = None,
    after: Cursor | None = None,
    limit: int = 50,
) -> QueuePage:
    """One page of the queue, most urgent first. A search is audited (with its length
    and the filters, never the text: it may be a patient's name) - pass a write session
    when `filters.search` is set."""
    now = as_utc(now)
    filters = filters or TriageFilters.default_for(actor)
    limit = max(1, min(int(limit), 500))
    # One key, ascending in every part, so the keyset condition is one row-value
    # comparison: (-rank, deadline, biopsy date, id) > (the last row's).
    neg_rank = literal(0) - _rank_expr(now, session.get_bind().dialect.name)
    due_key = func.coalesce(Case.due_at, literal(FAR_FUTURE, Case.due_at.type))
    bio_key = func.coalesce(Case.biopsy_date, literal(FAR_DAY, Case.biopsy_date.type))
    ranked = neg_rank.label("neg_rank")
    conds = _conditions(actor, filters, now)
    if after is not None:
        conds.append(
            tuple_(neg_rank, due_key, bio_key, Case.id)
            > tuple_(literal(after.neg_rank), literal(after.due_key, Case.due_at.type),
                     literal(after.bio_key, Case.biopsy_date.type), literal(after.case_id))
        )
    stmt = (
        select(Case.id, Case.version, Case.state, Case.due_at, Case.biopsy_date,
               Case.assignee_id, Case.on_hold, Case.hold_until, Case.hold_reason,
               Case.state_entered_at, Case.paused_seconds, Case.specialist_id,
               Case.referral_required, Case.referral_status, Case.appointment_at,
               Case.planned_treatment_start, Case.hold_started_at, ranked,
               Patient.first_name, Patient.last_name, Patient.mrn)
        .join(Patient, Patient.id == Case.patient_id)
        .where(*conds)
        .order_by(ranked, due_key, bio_key, Case.id)
        .limit(limit + 1)
    )
    raw = session.execute(stmt).all()
    more = len(raw) > limit
    raw = raw[:limit]
    rows = [_row(r, now) for r in raw]
    _explain(session, rows, raw, now)
    next_cursor = None
    if more and raw:
        last = raw[-1]
        next_cursor = Cursor(
            neg_rank=int(last.neg_rank),
            due_key=as_utc(last.due_at) if last.due_at else FAR_FUTURE,
            bio_key=last.biopsy_date or FAR_DAY,
            case_id=last.id,
        )
    if filters.search and clean_search(filters.search):
        audit.record(session, actor=actor, action="search", now=now,
                     detail={"chars": len(filters.search.strip()), "results": len(rows),
                             "states": list(filters.states), "flag": filters.flag,
                             "assignee": str(filters.assignee), "team_id": filters.team_id})
    return QueuePage(rows=rows, next_cursor=next_cursor)


def _row(r: Any, now: datetime) -> QueueRow:
    days = (now.date() - r.biopsy_date).days if r.biopsy_date else None
    return QueueRow(
        case_id=r.id, version=r.version, patient_name=f"{r.first_name} {r.last_name}",
        mrn=r.mrn, state=r.state, severity=SEVERITY_BY_RANK.get(-int(r.neg_rank)),
        due_at=as_utc(r.due_at) if r.due_at else None, biopsy_date=r.biopsy_date,
        patient_days=days, assignee=None, on_hold=bool(r.on_hold),
    )


def _days(value: float) -> str:
    n = int(value)
    return f"{n} day" if n == 1 else f"{n} days"


def _explain(session: Session, rows: list[QueueRow], raw: list[Any], now: datetime) -> None:
    """Write the *why* and the *next action* of each row, with a few IN queries for the
    page's cases only."""
    if not rows:
        return
    ids = [r.case_id for r in rows]
    limits = load_limits(session)
    flags: dict[int, list[CaseFlag]] = {}
    for f in session.execute(select(CaseFlag).where(CaseFlag.case_id.in_(ids),
                                                    CaseFlag.resolved_at.is_(None))).scalars():
        flags.setdefault(f.case_id, []).append(f)
    outstanding: dict[int, list[RecordItem]] = {}
    for item in session.execute(
        select(RecordItem).where(
            RecordItem.case_id.in_(ids),
            RecordItem.requirement == Requirement.REQUIRED.value,
            RecordItem.status.in_([RecordStatus.NEEDED.value, RecordStatus.REQUESTED.value]),
        ).order_by(RecordItem.requested_at, RecordItem.id)
    ).scalars():
        outstanding.setdefault(item.case_id, []).append(item)
    contacts: dict[int, list[str]] = {}
    for case_id, outcome in session.execute(
        select(ContactAttempt.case_id, ContactAttempt.outcome)
        .where(ContactAttempt.case_id.in_(ids))
        .order_by(ContactAttempt.case_id, ContactAttempt.at.desc(), ContactAttempt.id.desc())
    ).all():
        contacts.setdefault(case_id, []).append(outcome)
    assignee_ids = {r.assignee_id for r in raw if r.assignee_id}
    names = dict(session.execute(select(User.id, User.full_name)
                                 .where(User.id.in_(assignee_ids))).all()) if assignee_ids else {}
    for row, r in zip(rows, raw, strict=True):
        row.assignee = names.get(r.assignee_id)
        case_flags = sorted(flags.get(row.case_id, []),
                            key=lambda f: -FlagSeverity(f.severity).rank)
        row.flags = [_flag_text(f, row) for f in case_flags]
        row.why = _why(r, row, limits, outstanding.get(row.case_id, []),
                       contacts.get(row.case_id, []), case_flags, now)
        row.next_action = _next_action(r, outstanding.get(row.case_id, []),
                                       contacts.get(row.case_id, []), case_flags, now)


def _flag_text(flag: CaseFlag, row: QueueRow) -> str:
    sev = flag.severity.replace("_", " ")
    kind = flag.kind.replace("_", " ")
    return f"{kind} ({sev})" + (" - acknowledged" if flag.acknowledged_at else "")


def _failed_in_a_row(outcomes: list[str]) -> int:
    n = 0
    for o in outcomes:
        if ContactOutcome(o).successful:
            break
        n += 1
    return n


def _item_text(item: RecordItem) -> str:
    return f"{RecordKind(item.kind).label} from {item.facility}"


def _why(r: Any, row: QueueRow, limits: dict, items: list[RecordItem], outcomes: list[str],
         flags: list[CaseFlag], now: datetime) -> str:
    state = CaseState(r.state)
    parts: list[str] = []
    if r.on_hold:
        until = f" until {r.hold_until.isoformat()}" if r.hold_until else ""
        parts.append(f"{state.label} - on hold{until}: {r.hold_reason or 'no reason given'}")
    else:
        held = timedelta(seconds=r.paused_seconds or 0)
        in_state = max(0.0, (now - as_utc(r.state_entered_at) - held).total_seconds() / 86400)
        limit = limits.get(r.state)
        head = f"{state.label} {_days(in_state)}"
        if limit is not None:
            head += f", limit {limit.days}" + (" business days" if limit.business_days else "")
        parts.append(head)
    detail = None
    if state is CaseState.RECORDS_REQUESTED and items:
        first = items[0]
        verb = "not received" if first.status == RecordStatus.REQUESTED else "not requested yet"
        detail = f"{_item_text(first)} {verb}"
        if len(items) > 1:
            detail += f" (+{len(items) - 1} more)"
    elif state is CaseState.ASSESSED:
        failed = _failed_in_a_row(outcomes)
        if not outcomes:
            detail = "no contact with the patient yet"
        elif failed:
            detail = f"{failed} failed contact attempt{'s' if failed != 1 else ''} in a row"
    elif state is CaseState.REFERRAL:
        if r.specialist_id is None:
            detail = "no specialist chosen"
        elif r.referral_required and r.referral_status != ReferralStatus.OBTAINED.value:
            detail = f"insurance referral {r.referral_status.replace('_', ' ')}"
    elif state is CaseState.SCHEDULED and r.appointment_at is not None:
        detail = f"appointment {as_utc(r.appointment_at):%d %b %H:%M} UTC"
    elif state is CaseState.SEEN:
        detail = "outcome not recorded"
    if detail:
        parts.append(detail)
    for f in flags:
        if f.kind == FlagKind.PATIENT_CLOCK and row.patient_days is not None:
            parts.append(f"patient clock {row.patient_days} days since biopsy")
        elif f.kind == FlagKind.DEADLINE_RISK and r.planned_treatment_start is not None:
            parts.append(f"treatment planned {r.planned_treatment_start.isoformat()}: "
                         "remaining stages may not fit")
        elif f.kind == FlagKind.UNREACHABLE and state is not CaseState.ASSESSED:
            parts.append("patient unreachable")
    return " - ".join(parts)


def _next_action(r: Any, items: list[RecordItem], outcomes: list[str], flags: list[CaseFlag],
                 now: datetime) -> str:
    state = CaseState(r.state)
    if r.on_hold:
        return "Resume when the hold is over"
    if any(f.kind == FlagKind.UNREACHABLE for f in flags) or _failed_in_a_row(outcomes) >= 3:
        return "Try another channel to reach the patient"
    if state is CaseState.ASSESSED:
        if r.assignee_id is None:
            return "Assign a coordinator"
        if not outcomes or _failed_in_a_row(outcomes):
            return "Call the patient"
        return "Start the referral"
    if state is CaseState.REFERRAL:
        if r.specialist_id is None:
            return "Choose a specialist"
        if r.referral_required and r.referral_status != ReferralStatus.OBTAINED.value:
            return "Obtain the insurance referral"
        return "Request records"
    if state is CaseState.RECORDS_REQUESTED:
        if not items:
            return "Mark records complete"
        first = items[0]
        if first.status == RecordStatus.NEEDED:
            return f"Request {_item_text(first)}"
        return f"Chase {first.facility} for the {RecordKind(first.kind).label}"
    if state is CaseState.RECORDS_RECEIVED:
        return "Schedule the visit"
    if state is CaseState.SCHEDULED:
        if r.appointment_at is not None and as_utc(r.appointment_at) <= now:
            return "Mark seen"
        return "Confirm the appointment with the patient"
    if state is CaseState.SEEN:
        return "Record the outcome"
    return ""


# --- headline numbers ---------------------------------------------------------------------


def headline(session: Session, *, actor: Actor, now: datetime,
             team_id: int | None = None) -> Headline:
    """The numbers at the top of My day: a coordinator's own cases, a manager's team, an
    admin's whole service (or one team). One aggregate query plus two EXISTS counts."""
    now = as_utc(now)
    mine = actor.role is Role.COORDINATOR
    conds: list[ColumnElement] = [Case.state != CaseState.CLOSED.value,
                                  team_filter(actor, Action.VIEW_QUEUE, _team_column(mine))]
    if mine:
        conds.append(Case.assignee_id == actor.user_id)
    if team_id is not None:
        conds.append(Case.team_id == team_id)
    week = now + timedelta(days=7)
    # Driven from the cases in reach (indexed by assignee or team) with EXISTS probes
    # into their flags and records: joining from the records side would walk every
    # requested record of the service first.
    overdue_record = exists().where(
        RecordItem.case_id == Case.id, RecordItem.status == RecordStatus.REQUESTED.value,
        RecordItem.chase_on < now.date())
    at_risk = exists().where(
        CaseFlag.case_id == Case.id, CaseFlag.resolved_at.is_(None),
        CaseFlag.kind == FlagKind.DEADLINE_RISK.value)
    counts = session.execute(
        select(
            func.count(),
            func.count().filter(Case.due_at <= now),
            func.count().filter(Case.escalate_at <= now),
            func.count().filter(Case.state == CaseState.SCHEDULED.value,
                                Case.appointment_at >= now, Case.appointment_at < week),
            func.count().filter(at_risk),
            func.count().filter(overdue_record),
        ).where(*conds)
    ).one()
    return Headline(
        scope_label="My open cases" if mine else "Open cases",
        open_cases=counts[0], stalled=counts[1], escalated=counts[2],
        appointments_this_week=counts[3], at_risk=counts[4], records_overdue=counts[5],
    )


# --- filter choices -------------------------------------------------------------------------


def filter_choices(session: Session, *, actor: Actor) -> dict[str, list[tuple[Any, str]]]:
    """Teams and assignees the actor may filter by (inside their reach only)."""
    if scope(actor, Action.VIEW_QUEUE) is Scope.ALL:
        teams = session.execute(select(Team.id, Team.name).order_by(Team.name)).all()
        team_cond = true()
    else:
        teams = session.execute(select(Team.id, Team.name)
                                .where(Team.id == actor.team_id)).all()
        team_cond = User.team_id == actor.team_id
    users = session.execute(
        select(User.id, User.full_name)
        .where(team_cond, User.role != Role.ADMIN.value, User.is_active)
        .order_by(User.full_name)
    ).all()
    return {"teams": [(t.id, t.name) for t in teams],
            "assignees": [(u.id, u.full_name) for u in users]}


def last_scan_minutes(session: Session, *, now: datetime) -> float | None:
    """Minutes since the newest stalled-case scan started (None: never ran)."""
    from core.models import JobRun

    started = session.execute(
        select(JobRun.started_at).where(JobRun.job == "scan")
        .order_by(JobRun.started_at.desc()).limit(1)
    ).scalar()
    if started is None:
        return None
    return (as_utc(now) - as_utc(started)).total_seconds() / 60
