"""The triage queue and its headline numbers (DESIGN.md sections 1, 2 and 5): SQL only.

Order, most urgent first:
1. severity rank, the worst of: the case's open flags whose level does not move with
   time (deadline risk, unreachable: `cases.flag_rank`, stored by the scan, the only
   writer of flags); the SLA level its stored deadlines give at `now`; the patient-clock
   level its biopsy date gives today (while the outcome is not recorded). The two
   time-driven levels are derived here, never read from their flag rows (which keep the
   level they were raised at, `core.flag_levels`), so a case is not ranked low just
   because the scan has not run since a threshold passed: escalated 3, stalled 2, due
   soon 1, none 0. The flags listed on a row show the same current levels;
2. how far past the limit: the stored `due_at`, earliest first (on hold: last);
3. the patient clock: the biopsy date, oldest first; then the case id.

Paging is keyset on that key (never OFFSET), the team restriction is inside the SQL
(`core.permissions.team_filter`), and only one page of rows is ever loaded: the scope's
open cases are ranked and sorted from the covering index ix_cases_triage, then the wide
rows of that one page are read, in the same statement with what the *why* and the *next
action* need (correlated subqueries for those rows only). The statement is compiled once
per shape and run on the driver's cursor (`core.driver_sql.fetch_all`): at a million
cases SQLAlchemy's per-execution work and its Row objects cost more than the SQL.

Search matches the patient's normalised name (`patient.search_name`, built with
`core.validation.search_key`) or record number; `%`, `_` and `\\` in the search text are
escaped and the text is a bound parameter, so quotes and wildcards are taken literally.
"""

from __future__ import annotations

import base64
import json
from collections import namedtuple
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy import case as sql_case
from sqlmodel import Session

from core import audit, driver_sql
from core.actor import Actor
from core.errors import ValidationError
from core.flag_levels import Moment, level_now
from core.models import (
    CASE_IS_OPEN,
    RECORD_IS_REQUESTED,
    Case,
    CaseFlag,
    ContactAttempt,
    Patient,
    RecordItem,
    Team,
    User,
    sql_constant,
)
from core.permissions import Action, Scope, require, scope, team_filter
from core.timeutil import as_utc
from core.validation import clean_text, search_key
from core.vocab import (
    CaseState,
    FlagKind,
    FlagSeverity,
    RecordKind,
    RecordStatus,
    ReferralStatus,
    Requirement,
    Role,
)
from core.workflows.clocks import limits_column, limits_from_text, local_today, local_zone

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
# Plain dict lookups: calling an Enum costs more, and the queue does it for every row.
_RANK = {s: s.rank for s in FlagSeverity}
_STATE = {s.value: s for s in CaseState}
_STATE_LABEL = {s: s.label for s in CaseState}
_RECORD_LABEL = {k.value: k.label for k in RecordKind}
# Module constants, not Enum attributes: read for every row (an Enum member's `.value`
# is a property).
_ASSESSED, _REFERRAL = CaseState.ASSESSED, CaseState.REFERRAL
_RECORDS_REQUESTED, _SCHEDULED, _SEEN = (CaseState.RECORDS_REQUESTED, CaseState.SCHEDULED,
                                         CaseState.SEEN)
_PATIENT_CLOCK = FlagKind.PATIENT_CLOCK.value
_DEADLINE_RISK, _UNREACHABLE = FlagKind.DEADLINE_RISK.value, FlagKind.UNREACHABLE.value
_NEEDED, _REQUESTED = RecordStatus.NEEDED.value, RecordStatus.REQUESTED.value
_OBTAINED = ReferralStatus.OBTAINED.value


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


def _int(value: int) -> ColumnElement[int]:
    """A constant of our own written into the SQL, not bound. The queue's statement binds
    only what varies, which keeps it under psycopg's limits for caching its conversion to
    PostgreSQL's placeholders (4096 bytes, 50 parameters; past them it is redone at every
    run) and spares the driver and the server a few dozen parameters per run."""
    return literal_column(str(int(value)), Integer)


def _sla_rank_expr(now: ColumnElement[datetime]) -> ColumnElement[int]:
    """The SLA level's rank its stored deadlines give at `now` (0 before due soon, and
    while the clock is not running: the deadlines are NULL then)."""
    return sql_case(
        (_cases.c.escalate_at <= now, _int(FlagSeverity.ESCALATED.rank)),
        (_cases.c.due_at <= now, _int(FlagSeverity.STALLED.rank)),
        (_cases.c.due_soon_at <= now, _int(FlagSeverity.DUE_SOON.rank)),
        else_=_int(0),
    )


def _patient_rank_expr() -> ColumnElement[int]:
    """The patient clock's rank at today's cutoff dates (bound as `amber`, `red` and
    `critical`: a biopsy on or before them), where the clock applies: an open case (the
    queue reads no other) whose outcome is not recorded, with a biopsy date (NULL compares
    false). The same rule as `clocks.patient_clock_level` and the scan's."""
    c = _cases.c
    day = c.biopsy_date.type
    return sql_case(
        (c.outcome_recorded_at.is_not(None), _int(0)),
        (c.biopsy_date <= bindparam("critical", type_=day), _int(FlagSeverity.ESCALATED.rank)),
        (c.biopsy_date <= bindparam("red", type_=day), _int(FlagSeverity.STALLED.rank)),
        (c.biopsy_date <= bindparam("amber", type_=day), _int(FlagSeverity.DUE_SOON.rank)),
        else_=_int(0),
    )


def _rank_expr(now: ColumnElement[datetime], dialect: str) -> ColumnElement[int]:
    """The worst of: the stored rank of the open flags whose level does not move with time
    (`cases.flag_rank`, kept by the scan), the SLA level the stored deadlines give at
    `now` and the patient-clock level the biopsy date gives today. The two time-driven
    levels are derived here, never read from their flags, so a deadline or a patient-clock
    threshold passed since the last scan ranks the case up at once. Every input is in
    ix_cases_triage."""
    greatest = func.max if dialect == "sqlite" else func.greatest  # scalar max on SQLite
    return greatest(_cases.c.flag_rank, _sla_rank_expr(now), _patient_rank_expr())


def _patient_cutoffs(now: datetime) -> dict[str, date]:
    """The `amber`, `red` and `critical` parameters: the service's today minus the
    configured days, as the scan and the case page compute them."""
    amber, red, critical = Moment.at(now).patient_cutoffs
    return {"amber": amber, "red": red, "critical": critical}


def _require_reach(actor: Actor) -> None:
    """Refuse a role without reach, as `team_filter` would (it raises the denial), without
    building its SQL at every rerun: the statements themselves are built once per shape."""
    reach = scope(actor, Action.VIEW_QUEUE)
    if reach is Scope.NONE or (reach is not Scope.ALL and actor.team_id is None):
        team_filter(actor, Action.VIEW_QUEUE, _cases.c.team_id)


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
    states: int  # how many states the filter names (0: every open state)
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
    states = list(dict.fromkeys(filters.states))
    bad = [s for s in states if s not in {c.value for c in CaseState}]
    if bad:
        raise ValidationError(f"Unknown state: {', '.join(bad)}.")
    # One parameter per state named, not an expanding IN: the statement is compiled once.
    params.update({f"state{i}": s for i, s in enumerate(states)})
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
                   team_filter=filters.team_id is not None, states=len(states),
                   assignee=assignee, flag=flag, search=bool(term), after=False)
    return shape, params


def _open_in_reach(role: Role, team: int | None) -> list[ColumnElement]:
    """Open cases the role may see: team_filter decides from the role and the actor's
    team alone, both part of a statement's shape, so the statement can be cached."""
    reach = Actor(user_id=None, username="", role=role, team_id=team)
    return [CASE_IS_OPEN, team_filter(reach, Action.VIEW_QUEUE, _cases.c.team_id)]


def _where(shape: _Shape) -> list[ColumnElement]:
    """The WHERE of a shape, with bound parameters (`now`, the patient-clock cutoffs and
    the filter values)."""
    c = _cases.c
    now = bindparam("now", type_=c.due_at.type)
    conds = _open_in_reach(shape.role, shape.team)
    if shape.team_filter:
        conds.append(c.team_id == bindparam("team"))
    if shape.states:
        conds.append(c.state.in_([bindparam(f"state{i}") for i in range(shape.states)]))
    if shape.assignee == "id":
        conds.append(c.assignee_id == bindparam("assignee"))
    elif shape.assignee == "unassigned":
        conds.append(c.assignee_id.is_(None))
    if shape.flag:
        # An SLA or patient-clock flag is there as soon as the case's dates say so, even
        # before the scan has raised its row.
        open_flag = and_(_flags.c.case_id == c.id, _flags.c.resolved_at.is_(None))
        sla_now = c.due_soon_at <= now
        patient_now = _patient_rank_expr() > 0
        if shape.flag == "any":
            conds.append(or_(select(_int(1)).where(open_flag).exists(), sla_now,
                             patient_now))
        else:
            cond = select(_int(1)).where(open_flag, _flags.c.kind == shape.flag).exists()
            if shape.flag == FlagKind.SLA.value:
                cond = or_(cond, sla_now)
            elif shape.flag == FlagKind.PATIENT_CLOCK.value:
                cond = or_(cond, patient_now)
            conds.append(cond)
    if shape.search:
        # The queue joins patient for a search.
        p = _patients.c
        conds.append(or_(p.search_name.like(bindparam("pattern_name"), escape=LIKE_ESCAPE),
                         func.upper(p.mrn).like(bindparam("pattern_mrn"), escape=LIKE_ESCAPE)))
    return conds


def _joined(text: ColumnElement[str], dialect: str) -> ColumnElement[str]:
    """The aggregate joining text values with commas."""
    if dialect == "postgresql":
        return func.string_agg(text, literal_column("','"))
    return func.group_concat(text)


def _details(dialect: str) -> list[ColumnElement]:
    """What the *why* and the *next action* need besides the case row, as correlated
    subqueries run for the page's rows only:
    - `flags`: the case's open flags, "kind:severity:state:acknowledged" comma-joined;
    - `first_record`: how many outstanding required records there are and the first
      of them, "count|kind|status|facility" (records_requested cases only). One
      subquery for both, its count a window over the same rows: as two subqueries
      PostgreSQL read the case's records twice (0.5 ms of the 1M coordinator's page);
    - `contacted`: whether the patient was ever tried (assessed cases with no failed
      attempt in a row only: `cases.failed_contacts`, kept by triggers, says the rest);
    - `limits`: the SLA limits as `clocks.limits_column` gives them (read at every page:
      an admin may have just changed one)."""
    c, f, r, k = _cases.c, _flags.c, _records.c, _contacts.c
    colon, bar = literal_column("':'"), literal_column("'|'")
    acknowledged = sql_case((f.acknowledged_at.is_(None), literal_column("'0'")),
                            else_=literal_column("'1'"))
    flags = (select(_joined(f.kind + colon + f.severity + colon + f.state + colon
                            + acknowledged, dialect))
             .where(f.case_id == c.id, f.resolved_at.is_(None)).scalar_subquery())
    # `status IN` two constants, not an OR of two bound values: PostgreSQL reads the
    # case's entries of ix_record_item_case_status in one index scan instead of OR-ing two
    # bitmap index scans.
    outstanding = (r.case_id == c.id, r.requirement == sql_constant(Requirement.REQUIRED.value),
                   r.status.in_([sql_constant(RecordStatus.NEEDED.value),
                                 sql_constant(RecordStatus.REQUESTED.value)]))
    in_records = c.state == sql_constant(CaseState.RECORDS_REQUESTED.value)
    # The window is computed before ORDER BY and LIMIT: it counts every outstanding record.
    # First a record not requested yet (nothing arrives before it is asked for), then the
    # oldest request. NULLS FIRST said outright: SQLite sorts NULL first, PostgreSQL last.
    first_record = (select(func.count().over().cast(String) + bar + r.kind + bar + r.status
                           + bar + r.facility)
                    .where(*outstanding).order_by(r.requested_at.nulls_first(), r.id)
                    .limit(_int(1)).scalar_subquery())
    tried = select(_int(1)).where(k.case_id == c.id).exists()
    first_call = and_(c.state == sql_constant(CaseState.ASSESSED.value),
                      c.failed_contacts == _int(0))
    return [flags.label("flags"),
            sql_case((in_records, first_record), else_=null()).label("first_record"),
            sql_case((first_call, tried), else_=null()).label("contacted"),
            limits_column().label("limits")]


def _queue_statement(dialect: str, shape: _Shape) -> Select:
    """The queue's statement for a shape: one page of rows with everything the page
    shows. Every value (now, cutoffs, filters, cursor, page size) is a parameter."""
    c = _cases.c
    now = bindparam("now", type_=c.due_at.type)
    # One key, ascending in every part, so the keyset condition is one row-value
    # comparison: (-rank, deadline, biopsy date, id) > (the last row's).
    neg_rank = -_rank_expr(now, dialect)
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
    # Sorted by the label, not the expression: written twice, the expression would be
    # computed twice per case (its parameters are distinct `?`s to SQLite, so it cannot
    # tell the two are the same).
    # The page also gives its whole sort key, and the outer query sorts by those columns:
    # PostgreSQL then sees that the joined rows already come in that order (a nested
    # loop keeps its outer side's order) instead of sorting the page again by the key
    # recomputed from the wide case row.
    ranked = neg_rank.label("neg_rank")
    page = select(c.id.label("id"), ranked, due_key.label("due_key"), bio_key.label("bio_key"))
    if shape.search:
        page = page.join(_patients, _patients.c.id == c.patient_id)
    page = (page.where(*conds).order_by(ranked, "due_key", "bio_key", c.id)
            .limit(bindparam("page_limit")).subquery("page"))
    p = _patients.c
    return (
        select(c.id, c.version, c.state, c.due_at, c.biopsy_date, c.assignee_id, c.on_hold,
               c.hold_until, c.hold_reason, c.state_entered_at, c.paused_seconds,
               c.specialist_id, c.referral_required, c.referral_status, c.appointment_at,
               c.planned_treatment_start, c.failed_contacts, page.c.neg_rank,
               _sla_rank_expr(now).label("sla_rank"),
               _patient_rank_expr().label("patient_rank"),
               p.first_name, p.last_name, p.mrn, _users.c.full_name.label("assignee_name"),
               *_details(dialect))
        .select_from(page)
        .join(_cases, c.id == page.c.id)
        .join(_patients, p.id == c.patient_id)
        .outerjoin(_users, _users.c.id == c.assignee_id)
        .order_by(page.c.neg_rank, page.c.due_key, page.c.bio_key, page.c.id)
    )


@dataclass(frozen=True)
class _Compiled:
    """A statement compiled once, run on the driver's cursor (`driver_sql.fetch_all`):
    SQLAlchemy's execute would build the statement's cache key and process every value
    at every rerun, and even exec_driver_sql's execution context and result object cost
    about 0.7 ms of the PostgreSQL 1M coordinator's page. Rows come back as named tuples
    of the values as the driver gives them (on SQLite, dates and times as ISO text:
    `_when` and `_day` read them); a Row's attribute lookups alone cost a third of a
    page's Python."""

    sql: str
    order: tuple[str, ...] | None  # positional drivers (SQLite): parameter names in order
    fixed: dict[str, Any]  # the statement's own constants, converted for the driver
    convert: dict[str, Any]  # the caller's parameters: the type's conversion, if any
    row: Any  # a namedtuple class of the selected columns, in order

    @classmethod
    def of(cls, stmt: Select, dialect: Dialect) -> _Compiled:
        compiled = stmt.compile(dialect=dialect)
        fixed, convert = {}, {}
        # By the names written in the SQL only (`binds` also holds each anonymous
        # parameter under its internal key): psycopg caches its conversion of a statement
        # to PostgreSQL's $n placeholders only up to 50 parameters (and 4096 bytes; see
        # `_int`), and redid it at every run when handed the queue's 66.
        for bind, name in compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                convert[name] = process
            else:
                fixed[name] = process(bind.value) if process else bind.value
        order = tuple(compiled.positiontup) if compiled.positional else None
        row = namedtuple("QueueSqlRow", [c.key for c in stmt.selected_columns])
        return cls(compiled.string, order, fixed, convert, row)

    def run(self, conn: Connection, values: dict[str, Any]) -> list[Any]:
        args = dict(self.fixed)
        for name, process in self.convert.items():
            value = values[name]
            args[name] = process(value) if process else value
        if self.order is not None:
            args = tuple(args[n] for n in self.order)
        return list(map(self.row._make,
                        driver_sql.fetch_all(conn, self.sql, args, prepare=True)))


@lru_cache(maxsize=256)
def _compiled_queue(dialect: Dialect, shape: _Shape) -> _Compiled:
    """Built and compiled once per process, engine and shape."""
    return _Compiled.of(_queue_statement(dialect.name, shape), dialect)


def _when(value: Any) -> datetime | None:
    """A stored time as the driver returns it (SQLite: ISO text), aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):  # stored as UTC without an offset
        try:
            # parsed with the offset appended: a sixth of the time of parsing, then
            # .replace() (a date alone still parses naive, and is handled below)
            value = datetime.fromisoformat(value + "+00:00")
        except ValueError:  # a value with an offset of its own
            value = datetime.fromisoformat(value)
    # as_utc, inline: called for several values of every row
    if value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _day(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


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
    _require_reach(actor)
    shape, params = _filter_args(actor, filters)
    if after is not None:
        shape = replace(shape, after=True)
        params.update(after_rank=after.neg_rank, after_due=after.due_key,
                      after_bio=after.bio_key, after_id=after.case_id)
    params.update(_patient_cutoffs(now), now=now, page_limit=limit + 1)
    conn = session.connection()
    raw = _compiled_queue(conn.dialect, shape).run(conn, params)
    more = len(raw) > limit
    raw = raw[:limit]
    limits = limits_from_text(raw[0].limits) if raw else {}
    rows = [_queue_row(r, limits, now) for r in raw]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = Cursor(neg_rank=int(raw[-1].neg_rank), due_key=last.due_at or FAR_FUTURE,
                             bio_key=last.biopsy_date or FAR_DAY, case_id=last.case_id)
    if shape.search:
        audit.record(session, actor=actor, action="search", now=now,
                     detail={"chars": len(filters.search.strip()), "results": len(rows),
                             "states": list(filters.states), "flag": filters.flag,
                             "assignee": str(filters.assignee), "team_id": filters.team_id})
    return QueuePage(rows=rows, next_cursor=next_cursor)


class _Flag(NamedTuple):
    # a named tuple, not a frozen dataclass: built for every flag of every row shown
    kind: str
    level: FlagSeverity  # now: see `_flags_of`
    acknowledged: bool

    @property
    def text(self) -> str:
        return _flag_text(self.kind, self.level, self.acknowledged)


@cache
def _flag_text(kind: str, level: FlagSeverity, acknowledged: bool) -> str:
    # A few dozen combinations, each spelled once per process instead of once per flag
    # of every row shown.
    return (f"{kind.replace('_', ' ')} ({level.value.replace('_', ' ')})"
            + (" - acknowledged" if acknowledged else ""))


def _flags_of(r: Any) -> tuple[tuple[_Flag, ...], tuple[str, ...]]:
    """The case's open flags at their level now, worst first, and their texts. An SLA
    flag of the case's current state and a patient-clock flag take the level the case's
    dates give now (the row's `sla_rank` and `patient_rank`, the very expressions the
    queue ranks by); the level stored on the flag stands only for the fixed kinds
    (deadline risk, unreachable) and for a flag whose cause is already gone (the next
    scan resolves it) - `core.flag_levels.level_now`, from the values this statement
    already has."""
    if not r.flags:
        return (), ()
    return _parsed_flags(r.flags, r.sla_rank, r.patient_rank, r.state)


@lru_cache(maxsize=4096)
def _parsed_flags(flags: str, sla_rank: int, patient_rank: int,
                  state: str) -> tuple[tuple[_Flag, ...], tuple[str, ...]]:
    # Cached: the result depends on these four values only, and the urgent rows at the
    # top of a queue share a handful of combinations ("SLA escalated and patient clock
    # critical in records requested"). Parsing, levelling and sorting each row's flags
    # for every row took a page's build from 0.5 to 0.7 ms at 100,000 cases after a
    # scan, every row flagged. Bounded: kinds, levels, states and the acknowledged bit
    # are few, and an LRU drops what a long-running process stops seeing.
    sla, patient = SEVERITY_BY_RANK.get(sla_rank), SEVERITY_BY_RANK.get(patient_rank)
    found = []
    for item in flags.split(","):
        kind, stored, raised_in, acknowledged = item.split(":")
        level = level_now(kind, stored, raised_in, state, sla, patient)
        found.append(_Flag(kind, level, acknowledged == "1"))
    found.sort(key=lambda f: (-_RANK[f.level], f.kind))
    return tuple(found), tuple(f.text for f in found)


class _Record(NamedTuple):
    kind: str
    status: str
    facility: str

    @property
    def text(self) -> str:
        return f"{_RECORD_LABEL[self.kind]} from {self.facility}"


def _queue_row(r: Any, limits: dict, now: datetime) -> QueueRow:
    """One row of the page. Written for the queue's speed (it runs for every row shown
    at every rerun): plain dict lookups instead of Enum calls, and no work for what a row
    does not have (no flags, no pause)."""
    biopsy = _day(r.biopsy_date)
    patient_days = (now.date() - biopsy).days if biopsy else None
    flags, flag_texts = _flags_of(r)
    if r.first_record:
        records, kind, status, facility = r.first_record.split("|", 3)
        first, records = _Record(kind, status, facility), int(records)
    else:
        first, records = None, 0
    return QueueRow(
        case_id=r.id, version=r.version, patient_name=f"{r.first_name} {r.last_name}",
        mrn=r.mrn, state=r.state, severity=SEVERITY_BY_RANK.get(-int(r.neg_rank)),
        due_at=_when(r.due_at), biopsy_date=biopsy, patient_days=patient_days,
        assignee=r.assignee_name, on_hold=bool(r.on_hold),
        why=_why(r, patient_days, limits, first, records, flags, now),
        next_action=_next_action(r, first, flags, now),
        flags=list(flag_texts),
    )


def _days(value: float) -> str:
    n = int(value)
    return f"{n} day" if n == 1 else f"{n} days"


def _why(r: Any, patient_days: int | None, limits: dict, first: _Record | None,
         records: int, flags: tuple[_Flag, ...], now: datetime) -> str:
    state = _STATE[r.state]
    parts: list[str] = []
    if r.on_hold:
        until = f" until {_day(r.hold_until).isoformat()}" if r.hold_until else ""
        parts.append(f"{_STATE_LABEL[state]} - on hold{until}: "
                     f"{r.hold_reason or 'no reason given'}")
    else:
        since = now - _when(r.state_entered_at)
        if r.paused_seconds:
            since -= timedelta(seconds=r.paused_seconds)
        in_state = max(0.0, since.total_seconds() / 86400)
        limit = limits.get(r.state)
        head = f"{_STATE_LABEL[state]} {_days(in_state)}"
        if limit is not None:
            head += f", limit {limit.days}" + (" business days" if limit.business_days else "")
        parts.append(head)
    detail = None
    if state is _RECORDS_REQUESTED:
        if first is not None:
            verb = "not received" if first.status == _REQUESTED else "not requested yet"
            detail = f"{first.text} {verb}"
            if records > 1:
                detail += f" (+{records - 1} more)"
    elif state is _ASSESSED:
        failed = r.failed_contacts or 0
        if failed:
            detail = f"{failed} failed contact attempt{'s' if failed != 1 else ''} in a row"
        elif not r.contacted:
            detail = "no contact with the patient yet"
    elif state is _REFERRAL:
        if r.specialist_id is None:
            detail = "no specialist chosen"
        elif r.referral_required and r.referral_status != _OBTAINED:
            detail = f"insurance referral {r.referral_status.replace('_', ' ')}"
    elif state is _SCHEDULED:
        if r.appointment_at is not None:
            # in the service's time zone, as the page's caption says every time is
            detail = f"appointment {_when(r.appointment_at).astimezone(local_zone()):%d %b %H:%M}"
    elif state is _SEEN:
        detail = "outcome not recorded"
    if detail:
        parts.append(detail)
    # The patient clock is told as soon as its level applies, before the scan raises
    # its flag (it ranks the case from then on), in its place by level.
    if not flags:  # the usual row: at most the patient clock to tell
        if r.patient_rank and patient_days is not None:
            parts.append(f"patient clock {patient_days} days since biopsy")
        return " - ".join(parts)
    signals = flags
    if r.patient_rank and all(f.kind != _PATIENT_CLOCK for f in flags):
        signals = sorted([*flags, _Flag(_PATIENT_CLOCK, SEVERITY_BY_RANK[r.patient_rank],
                                        False)],
                         key=lambda f: (-_RANK[f.level], f.kind))
    for f in signals:
        if f.kind == _PATIENT_CLOCK and patient_days is not None:
            parts.append(f"patient clock {patient_days} days since biopsy")
        elif f.kind == _DEADLINE_RISK and r.planned_treatment_start is not None:
            parts.append(f"treatment planned {_day(r.planned_treatment_start).isoformat()}: "
                         "remaining stages may not fit")
        elif f.kind == _UNREACHABLE and state is not _ASSESSED:
            parts.append("patient unreachable")
    return " - ".join(parts)


def _next_action(r: Any, first: _Record | None, flags: tuple[_Flag, ...],
                 now: datetime) -> str:
    state = _STATE[r.state]
    failed = r.failed_contacts or 0
    if r.on_hold:
        return "Resume when the hold is over"
    if failed >= 3 or (flags and any(f.kind == _UNREACHABLE for f in flags)):
        return "Try another channel to reach the patient"
    if state is _ASSESSED:
        if r.assignee_id is None:
            return "Assign a coordinator"
        if failed or not r.contacted:
            return "Call the patient"
        return "Start the referral"
    if state is _REFERRAL:
        if r.specialist_id is None:
            return "Choose a specialist"
        if r.referral_required and r.referral_status != _OBTAINED:
            return "Obtain the insurance referral"
        return "Request records"
    if state is _RECORDS_REQUESTED:
        if first is None:
            return "Mark records complete"
        if first.status == _NEEDED:
            return f"Request {first.text}"
        return f"Chase {first.facility} for the {_RECORD_LABEL[first.kind]}"
    if state is CaseState.RECORDS_RECEIVED:
        return "Schedule the visit"
    if state is _SCHEDULED:
        if r.appointment_at is not None and _when(r.appointment_at) <= now:
            return "Mark seen"
        return "Confirm the appointment with the patient"
    if state is _SEEN:
        return "Record the outcome"
    return ""


# --- headline numbers ---------------------------------------------------------------------


@dataclass(frozen=True)
class _HeadlineShape:
    role: Role  # with team: the reach `team_filter` gives
    team: int | None
    mine: bool  # a coordinator's own cases
    team_filter: bool


@lru_cache(maxsize=64)
def _compiled_headline(dialect: Dialect, shape: _HeadlineShape) -> _Compiled:
    """One aggregate over the cases in reach, built and compiled once per shape."""
    c = _cases.c
    now = bindparam("now", type_=c.due_at.type)
    week = bindparam("week", type_=c.due_at.type)
    conds = _open_in_reach(shape.role, shape.team)
    if shape.mine:
        conds.append(c.assignee_id == bindparam("me"))
    if shape.team_filter:
        conds.append(c.team_id == bindparam("team"))
    # Driven from the cases in reach (ix_cases_triage holds every case column counted
    # here) with EXISTS probes into their flags and records: joining from the records
    # side would walk every requested record of the service first. `SELECT 1`, not
    # `SELECT *`, so the records probe reads ix_record_item_requested_chase alone.
    overdue_record = select(literal(1)).where(
        _records.c.case_id == c.id, RECORD_IS_REQUESTED,
        _records.c.chase_on < bindparam("today", type_=_records.c.chase_on.type)).exists()
    # A deadline-risk flag is "stalled" and the scan keeps `flag_rank` at the worst open
    # flag of a fixed level, with the flag: only a case ranked that high can have one,
    # so the other cases are never probed (at a million cases, 42,000 -> 18,000 probes
    # for a manager).
    at_risk = and_(c.flag_rank >= FlagSeverity.STALLED.rank, select(literal(1)).where(
        _flags.c.case_id == c.id, _flags.c.resolved_at.is_(None),
        _flags.c.kind == FlagKind.DEADLINE_RISK.value).exists())
    stmt = select(
        func.count().label("open_cases"),
        func.count().filter(c.due_at <= now).label("stalled"),
        func.count().filter(c.escalate_at <= now).label("escalated"),
        func.count().filter(c.state == CaseState.SCHEDULED.value, c.appointment_at >= now,
                            c.appointment_at < week).label("appointments_this_week"),
        func.count().filter(at_risk).label("at_risk"),
        func.count().filter(overdue_record).label("records_overdue"),
    ).where(*conds)
    return _Compiled.of(stmt, dialect)


def headline(session: Session, *, actor: Actor, now: datetime,
             team_id: int | None = None) -> Headline:
    """The numbers at the top of My day: a coordinator's own cases, a manager's team, an
    admin's whole service (or one team). One aggregate query with two EXISTS counts.
    "Stalled" and "escalated" are the SLA levels the stored deadlines give at `now`."""
    now = as_utc(now)
    mine = actor.role is Role.COORDINATOR
    _require_reach(actor)
    shape = _HeadlineShape(role=actor.role, team=actor.team_id, mine=mine,
                           team_filter=team_id is not None)
    conn = session.connection()
    counts = _compiled_headline(conn.dialect, shape).run(conn, {
        "now": now, "week": now + timedelta(days=7), "today": local_today(now),
        "me": actor.user_id, "team": team_id})[0]
    return Headline(
        scope_label="My open cases" if mine else "Open cases",
        open_cases=counts.open_cases, stalled=counts.stalled, escalated=counts.escalated,
        appointments_this_week=counts.appointments_this_week, at_risk=counts.at_risk,
        records_overdue=counts.records_overdue,
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
