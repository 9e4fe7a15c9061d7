"""The triage queue and its headline numbers (DESIGN.md sections 1, 2 and 5): SQL only.

Order, most urgent first:
1. severity rank: the worst of the case's open flags other than SLA ones
   (`cases.flag_rank`, stored by the scan, the only writer of flags) and the SLA level
   its stored deadlines give at `now` (read here, not from the SLA flags, so a case is
   not ranked low just because the scan has not run since its deadline passed):
   escalated 3, stalled 2, due soon 1, none 0;
2. how far past the limit: the stored `due_at`, earliest first (on hold: last);
3. the patient clock: the biopsy date, oldest first; then the case id.

Paging is keyset on that key (never OFFSET), the team restriction is inside the SQL
(`core.permissions.team_filter`), and only one page of rows is ever loaded: the scope's
open cases are ranked and sorted from the covering index ix_cases_triage, then the wide
rows of that one page are read. The *why* and the *next action* are then written for
those rows with three small IN queries.

Search matches the patient's normalised name (`patient.search_name`, built with
`core.validation.search_key`) or record number; `%`, `_` and `\\` in the search text are
escaped and the text is a bound parameter, so quotes and wildcards are taken literally.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
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

# Core tables, not ORM entities: the queue runs on every rerun of My day, and building
# and executing ORM-enabled statements cost more than the SQL itself.
_cases = Case.__table__
_flags = CaseFlag.__table__
_patients = Patient.__table__
_records = RecordItem.__table__
_contacts = ContactAttempt.__table__
_users = User.__table__
_teams = Team.__table__

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


def _sla_rank_expr(now: ColumnElement[datetime]) -> ColumnElement[int]:
    return sql_case(
        (_cases.c.escalate_at <= now, FlagSeverity.ESCALATED.rank),
        (_cases.c.due_at <= now, FlagSeverity.STALLED.rank),
        (_cases.c.due_soon_at <= now, FlagSeverity.DUE_SOON.rank),
        else_=0,
    )


def _rank_expr(now: ColumnElement[datetime], dialect: str) -> ColumnElement[int]:
    """The stored worst open non-SLA flag (`cases.flag_rank`, kept by the scan) or the SLA
    level the stored deadlines give at `now`, whichever is worse: a deadline that passed
    since the last scan ranks the case up at once. Both read from ix_cases_triage."""
    greatest = func.max if dialect == "sqlite" else func.greatest  # scalar max on SQLite
    return greatest(_cases.c.flag_rank, _sla_rank_expr(now))


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards and the escape character itself taken literally."""
    escaped = (text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%")
               .replace("_", LIKE_ESCAPE + "_"))
    return f"%{escaped}%"


def clean_search(text: str | None) -> str | None:
    return clean_text(text, field="Search", max_length=SEARCH_MAX)


@dataclass(frozen=True)
class _Shape:
    """What decides the SQL text of a queue statement (the values are parameters)."""

    role: Role  # with team: the reach `team_filter` gives
    team: int | None
    team_filter: bool
    states: bool
    assignee: str | None  # "id", "unassigned" or None (anyone)
    flag: str | None  # None, "any" or a FlagKind value
    search: bool
    after: bool


def _filter_args(actor: Actor, filters: TriageFilters) -> tuple[_Shape, dict[str, Any]]:
    """Check the filters (refusing a team outside one's reach, an unknown state or flag
    kind) and split them into the statement's shape and its parameter values."""
    params: dict[str, Any] = {}
    if filters.team_id is not None:
        # A team outside one's reach is refused (and audited), not answered with an empty
        # queue that reads as "no work" (issue 7: forbidden cells are refused).
        require(actor, Action.VIEW_QUEUE, filters.team_id)
        params["team"] = filters.team_id
    if filters.states:
        bad = [s for s in filters.states if s not in {c.value for c in CaseState}]
        if bad:
            raise ValidationError(f"Unknown state: {', '.join(bad)}.")
        params["states"] = list(filters.states)
    assignee = None
    if filters.assignee == Assignee.ME:
        assignee, params["assignee"] = "id", actor.user_id
    elif filters.assignee == Assignee.UNASSIGNED:
        assignee = "unassigned"
    elif filters.assignee not in (Assignee.ANYONE, None):
        assignee, params["assignee"] = "id", int(filters.assignee)
    flag = None
    if filters.flag:
        flag = "any" if filters.flag == "any" else FlagKind(filters.flag).value
    term = clean_search(filters.search)
    if term:
        params["pattern_name"] = like_pattern(search_key(term))
        params["pattern_mrn"] = like_pattern(term.upper())
    shape = _Shape(role=actor.role, team=actor.team_id,
                   team_filter=filters.team_id is not None, states=bool(filters.states),
                   assignee=assignee, flag=flag, search=bool(term), after=False)
    return shape, params


def _where(shape: _Shape) -> list[ColumnElement]:
    """The WHERE of a shape, with bound parameters (`now` and the filter values)."""
    c = _cases.c
    now = bindparam("now", type_=c.due_at.type)
    # team_filter decides from the role and the actor's team alone, both in the shape.
    reach = Actor(user_id=None, username="", role=shape.role, team_id=shape.team)
    conds: list[ColumnElement] = [c.state != CaseState.CLOSED.value,
                                  team_filter(reach, Action.VIEW_QUEUE, c.team_id)]
    if shape.team_filter:
        conds.append(c.team_id == bindparam("team"))
    if shape.states:
        conds.append(c.state.in_(bindparam("states", expanding=True)))
    if shape.assignee == "id":
        conds.append(c.assignee_id == bindparam("assignee"))
    elif shape.assignee == "unassigned":
        conds.append(c.assignee_id.is_(None))
    if shape.flag:
        open_flag = and_(_flags.c.case_id == c.id, _flags.c.resolved_at.is_(None))
        if shape.flag == "any":
            conds.append(or_(select(literal(1)).where(open_flag).exists(), c.due_at <= now))
        else:
            cond = select(literal(1)).where(open_flag, _flags.c.kind == shape.flag).exists()
            if shape.flag == FlagKind.SLA.value:
                cond = or_(cond, c.due_at <= now)
            conds.append(cond)
    if shape.search:
        # The queue joins patient for a search.
        p = _patients.c
        conds.append(or_(p.search_name.like(bindparam("pattern_name"), escape=LIKE_ESCAPE),
                         func.upper(p.mrn).like(bindparam("pattern_mrn"), escape=LIKE_ESCAPE)))
    return conds


@lru_cache(maxsize=256)
def _queue_statement(dialect: str, shape: _Shape) -> Select:
    """The queue's statement for a shape, built once per process: building and keying a
    statement this size cost more CPU than running it. Only SQL text is cached here; every
    value (now, filters, cursor, page size) is a parameter."""
    c = _cases.c
    now = bindparam("now", type_=c.due_at.type)
    # One key, ascending in every part, so the keyset condition is one row-value
    # comparison: (-rank, deadline, biopsy date, id) > (the last row's).
    neg_rank = literal(0) - _rank_expr(now, dialect)
    due_key = func.coalesce(c.due_at, literal(FAR_FUTURE, c.due_at.type))
    bio_key = func.coalesce(c.biopsy_date, literal(FAR_DAY, c.biopsy_date.type))
    conds = _where(shape)
    if shape.after:
        conds.append(
            tuple_(neg_rank, due_key, bio_key, c.id)
            > tuple_(bindparam("after_rank"), bindparam("after_due", type_=c.due_at.type),
                     bindparam("after_bio", type_=c.biopsy_date.type), bindparam("after_id"))
        )
    # Rank and sort the scope's open cases from ix_cases_triage alone (every column of
    # the key is in it), then read the wide case row and the patient for one page only.
    page = select(c.id.label("id"), neg_rank.label("neg_rank"))
    if shape.search:
        page = page.join(_patients, _patients.c.id == c.patient_id)
    page = (page.where(*conds).order_by(neg_rank, due_key, bio_key, c.id)
            .limit(bindparam("page_limit")).subquery("page"))
    p = _patients.c
    return (
        select(c.id, c.version, c.state, c.due_at, c.biopsy_date, c.assignee_id, c.on_hold,
               c.hold_until, c.hold_reason, c.state_entered_at, c.paused_seconds,
               c.specialist_id, c.referral_required, c.referral_status, c.appointment_at,
               c.planned_treatment_start, page.c.neg_rank,
               p.first_name, p.last_name, p.mrn, _users.c.full_name.label("assignee_name"))
        .select_from(page)
        .join(_cases, c.id == page.c.id)
        .join(_patients, p.id == c.patient_id)
        .outerjoin(_users, _users.c.id == c.assignee_id)
        .order_by(page.c.neg_rank, due_key, bio_key, c.id)
    )


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
    team_filter(actor, Action.VIEW_QUEUE, _cases.c.team_id)  # refuses a role without reach
    shape, params = _filter_args(actor, filters)
    if after is not None:
        shape = replace(shape, after=True)
        params.update(after_rank=after.neg_rank, after_due=after.due_key,
                      after_bio=after.bio_key, after_id=after.case_id)
    conn = session.connection()
    stmt = _queue_statement(conn.dialect.name, shape)
    raw = conn.execute(stmt, {**params, "now": now, "page_limit": limit + 1}).all()
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
    if shape.search:
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
        patient_days=days, assignee=r.assignee_name, on_hold=bool(r.on_hold),
    )


def _days(value: float) -> str:
    n = int(value)
    return f"{n} day" if n == 1 else f"{n} days"


@lru_cache(maxsize=32)
def _detail_statements(n: int) -> tuple[Select, Select, Select]:
    """The page's open flags, outstanding required records and contact outcomes, for `n`
    cases `:id0`..: built once per page size. (An expanding IN parameter is rendered
    into the SQL again at every execution, which cost more than the three queries.)"""
    ids = [bindparam(f"id{i}") for i in range(n)]
    f, r, k = _flags.c, _records.c, _contacts.c
    flags = (select(f.case_id, f.kind, f.severity, f.acknowledged_at)
             .where(f.case_id.in_(ids), f.resolved_at.is_(None)))
    records = (select(r.case_id, r.kind, r.facility, r.status)
               .where(r.case_id.in_(ids), r.requirement == Requirement.REQUIRED.value,
                      r.status.in_([RecordStatus.NEEDED.value, RecordStatus.REQUESTED.value]))
               .order_by(r.requested_at, r.id))
    contacts = (select(k.case_id, k.outcome).where(k.case_id.in_(ids))
                .order_by(k.case_id, k.at.desc(), k.id.desc()))
    return flags, records, contacts


def _explain(session: Session, rows: list[QueueRow], raw: list[Any], now: datetime) -> None:
    """Write the *why* and the *next action* of each row, with a few IN queries for the
    page's cases only."""
    if not rows:
        return
    conn = session.connection()
    ids = {f"id{i}": r.case_id for i, r in enumerate(rows)}
    flags_of, records_of, contacts_of = _detail_statements(len(rows))
    limits = load_limits(session)  # never cached: an admin may have just edited one
    flags: dict[int, list[Any]] = {}
    for f in conn.execute(flags_of, ids):
        flags.setdefault(f.case_id, []).append(f)
    outstanding: dict[int, list[Any]] = {}
    for item in conn.execute(records_of, ids):
        outstanding.setdefault(item.case_id, []).append(item)
    contacts: dict[int, list[str]] = {}
    for case_id, outcome in conn.execute(contacts_of, ids):
        contacts.setdefault(case_id, []).append(outcome)
    for row, r in zip(rows, raw, strict=True):
        case_flags = sorted(flags.get(row.case_id, []),
                            key=lambda f: -FlagSeverity(f.severity).rank)
        row.flags = [_flag_text(f, row) for f in case_flags]
        row.why = _why(r, row, limits, outstanding.get(row.case_id, []),
                       contacts.get(row.case_id, []), case_flags, now)
        row.next_action = _next_action(r, outstanding.get(row.case_id, []),
                                       contacts.get(row.case_id, []), case_flags, now)


def _flag_text(flag: Any, row: QueueRow) -> str:
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


def _item_text(item: Any) -> str:
    return f"{RecordKind(item.kind).label} from {item.facility}"


def _why(r: Any, row: QueueRow, limits: dict, items: list[Any], outcomes: list[str],
         flags: list[Any], now: datetime) -> str:
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


def _next_action(r: Any, items: list[Any], outcomes: list[str], flags: list[Any],
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
    conds: list[ColumnElement] = [_cases.c.state != CaseState.CLOSED.value,
                                  team_filter(actor, Action.VIEW_QUEUE, _cases.c.team_id)]
    if mine:
        conds.append(_cases.c.assignee_id == actor.user_id)
    if team_id is not None:
        conds.append(_cases.c.team_id == team_id)
    week = now + timedelta(days=7)
    # Driven from the cases in reach (ix_cases_triage holds every case column counted
    # here) with EXISTS probes into their flags and records: joining from the records
    # side would walk every requested record of the service first. `SELECT 1`, not
    # `SELECT *`, so the records probe reads ix_record_item_requested_chase alone.
    overdue_record = select(literal(1)).where(
        _records.c.case_id == _cases.c.id, _records.c.status == RecordStatus.REQUESTED.value,
        _records.c.chase_on < now.date()).exists()
    at_risk = select(literal(1)).where(
        _flags.c.case_id == _cases.c.id, _flags.c.resolved_at.is_(None),
        _flags.c.kind == FlagKind.DEADLINE_RISK.value).exists()
    counts = session.connection().execute(
        select(
            func.count(),
            func.count().filter(_cases.c.due_at <= now),
            func.count().filter(_cases.c.escalate_at <= now),
            func.count().filter(_cases.c.state == CaseState.SCHEDULED.value,
                                _cases.c.appointment_at >= now, _cases.c.appointment_at < week),
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
        teams = session.execute(select(_teams.c.id, _teams.c.name).order_by(_teams.c.name)).all()
        team_cond = true()
    else:
        teams = session.execute(select(_teams.c.id, _teams.c.name)
                                .where(_teams.c.id == actor.team_id)).all()
        team_cond = _users.c.team_id == actor.team_id
    users = session.execute(
        select(_users.c.id, _users.c.full_name)
        .where(team_cond, _users.c.role != Role.ADMIN.value, _users.c.is_active)
        .order_by(_users.c.full_name)
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
