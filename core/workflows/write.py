"""The compare-and-set write every change of a case goes through.

A page loads a case at version v and later asks for a change. The change is written with
`UPDATE cases ... WHERE id = :id AND version = :v`; 0 rows means someone else changed the
case in between (healthchecks' sweeper does the same), and we refuse with the name of
who did it and when, writing nothing. On PostgreSQL (READ COMMITTED) a concurrent UPDATE
of the same row waits for the first to commit and then finds the version moved on; on
SQLite the write transaction (BEGIN IMMEDIATE) waits for the lock and then reads the new
version. Either way the loser gets StaleCaseError.

Every public operation runs inside `atomic(session)` (or `savepoint(session)`): a savepoint,
so a refused or failed operation leaves nothing behind even if the caller catches the
error and carries on with the same transaction.

The case row is read and written with Core statements built once, not through the ORM's
identity map and unit of work: at a million cases the ORM's bookkeeping cost three times
the database's own work per move (issue 8). The `Case` handed back is an ordinary model
instance filled from the row; if the session already holds that case, that instance is
brought up to date instead, so nothing in the session is left stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy import case as sql_case
from sqlalchemy.orm import configure_mappers, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlmodel import Session

from core import driver_sql
from core.actor import Actor
from core.config import get_settings
from core.errors import NotFoundError, PermissionDenied, StaleCaseError, ValidationError
from core.models import Case, CaseEvent, User
from core.permissions import Action, require
from core.timeutil import as_utc
from core.validation import case_number
from core.vocab import CaseState
from core.workflows import clocks


@contextmanager
def atomic(session: Session) -> Iterator[None]:
    with session.begin_nested():
        yield


_SAVEPOINT = "casedesk_write"


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """`atomic` for operations that write only with Core statements: a plain SAVEPOINT on
    the session's connection (the ORM's nested transaction cost five times as much, and
    there is no ORM state to roll back here). Objects the caller left pending are flushed
    first, outside it, as the ORM's autoflush would have."""
    flush_pending(session)
    conn = session.connection()  # begins the transaction (BEGIN IMMEDIATE on SQLite)
    driver_sql.execute_sql(conn, f"SAVEPOINT {_SAVEPOINT}")
    try:
        yield
    except BaseException:
        driver_sql.execute_sql(conn, f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        driver_sql.execute_sql(conn, f"RELEASE SAVEPOINT {_SAVEPOINT}")
        raise
    driver_sql.execute_sql(conn, f"RELEASE SAVEPOINT {_SAVEPOINT}")


def flush_pending(session: Session) -> None:
    if session.new or session.dirty or session.deleted:
        session.flush()


def utc(value: datetime, *, field: str = "time") -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(f"{field} must be a date and time.")
    return as_utc(value)


_CASES = Case.__table__
_LIMITS = "_sla_limits"
# FOR UPDATE (PostgreSQL; SQLite's write transactions already hold the database lock):
# a writer that did not bring a page version waits for a concurrent writer instead of
# reading a version that is about to go stale and failing its compare-and-set.
_LOAD = select(_CASES).where(_CASES.c.id == bindparam("b_id")).with_for_update(of=_CASES)
# ... and with the SLA limits read in the same statement (a move stores new deadlines).
_LOAD_WITH_LIMITS = (
    select(_CASES, clocks.limits_column().label(_LIMITS))
    .where(_CASES.c.id == bindparam("b_id")).with_for_update(of=_CASES)
)
# The SET clause comes from the parameters given; b_* name the WHERE's values.
_CAS = update(_CASES).where(_CASES.c.id == bindparam("b_id"),
                            _CASES.c.version == bindparam("b_version"))
# A move also keeps `furthest_rank` (the funnel's "reached"), in the same statement:
# raised to the rank of the state entered, never lowered.
_CAS_REACHED = _CAS.values(furthest_rank=sql_case(
    (_CASES.c.furthest_rank < bindparam("b_reached"), bindparam("b_reached")),
    else_=_CASES.c.furthest_rank,
)).returning(_CASES.c.furthest_rank)
_INSERT_EVENT = insert(CaseEvent.__table__)


def _case_id(case_id: object) -> int:
    number = case_number(case_id)
    if number is None:
        raise NotFoundError(f"There is no case {str(case_id)[:40]!r}.")
    return number


def _as_case(session: Session, values: dict[str, Any]) -> Case:
    """A `Case` holding `values` (a full row): the session's own instance refreshed if it
    has one, else a new detached instance, as if loaded (no change pending on it)."""
    held = session.identity_map.get((Case, (values["id"],), None))
    if held is not None:
        _store(held, values)
        return held
    case = _NEW_CASE()
    case.__dict__.update(values)
    make_transient_to_detached(case)
    return case


_NEW_CASE = Case._sa_class_manager.new_instance  # what the ORM's loader calls
configure_mappers()  # make_transient_to_detached needs the mapper set up


def _store(case: Case, values: dict[str, Any]) -> None:
    """Put values the database now holds on `case` as loaded values, not as changes."""
    state = instance_state(case)
    if state.session_id is None and not state.committed_state:
        # Ours (see _as_case): nothing tracks it, so this is what the ORM's loader does.
        case.__dict__.update(values)
        return
    for name, value in values.items():
        set_committed_value(case, name, value)


def load_case(session: Session, case_id: int) -> Case:
    """The case as it is in the database now (not a copy cached in the session), locked
    for the rest of the transaction."""
    return load_case_and_limits(session, case_id, limits=False)[0]


def load_case_and_limits(
    session: Session, case_id: int, *, limits: bool = True
) -> tuple[Case, dict[str, clocks.SlaLimit] | None]:
    """`load_case`, and the SLA limits in force, in one statement."""
    case_id = _case_id(case_id)
    flush_pending(session)
    # on the driver's cursor, as the writes (core.driver_sql)
    values = driver_sql.fetch_first(session.connection(),
                                    _LOAD_WITH_LIMITS if limits else _LOAD, {"b_id": case_id})
    if values is None:
        raise NotFoundError(f"There is no case {case_id}.")
    found = clocks.limits_from_text(values.pop(_LIMITS)) if limits else None
    return _as_case(session, values), found


def require_case_right(actor: Actor, action: Action, case: Case) -> None:
    """Permission for `action` on this case's team. The worker and maintenance commands
    (Actor.system) act for the service itself and are not limited by the matrix."""
    if actor.is_system:
        return
    require(actor, action, case.team_id, case_id=case.id)


def require_team_access(actor: Actor, case: Case) -> None:
    """Checked before anything else, so someone outside the team learns nothing about the
    case (not even its state) from a refusal message."""
    if actor.is_system:
        return
    require(actor, Action.VIEW_CASE, case.team_id, case_id=case.id)


def require_open(case: Case, what: str) -> None:
    if case.state == CaseState.CLOSED:
        raise ValidationError(f"Case {case.id} is closed; reopen it before you {what}.")


def _describe_change(session: Session, case_id: int) -> StaleCaseError:
    row = session.execute(
        select(Case.updated_by_id, Case.updated_at).where(Case.id == case_id)
    ).first()
    if row is None:
        return StaleCaseError(case_id, "someone else (the case no longer exists)")
    by_id, at = row
    who = None
    if by_id is not None:
        user = session.get(User, by_id)
        who = user.full_name if user else f"user {by_id}"
    # In the service's own time zone: that is the clock on the coordinator's wall.
    when = as_utc(at).astimezone(get_settings().tz).strftime("%Y-%m-%d %H:%M %Z") if at else None
    return StaleCaseError(case_id, who, when)


def check_version(session: Session, case: Case, expected_version: int | None) -> None:
    """The page's copy is older than the database's: refuse before checking anything."""
    if expected_version is not None and case.version != expected_version:
        raise _describe_change(session, case.id)


def compare_and_set(
    session: Session, case: Case, *, actor: Actor, now: datetime, changes: dict[str, Any],
    reached: int | None = None,
) -> Case:
    """Write `changes` if the case is still at the version it was loaded with; bump the
    version; update `case`. Raises StaleCaseError (nothing written) otherwise.

    `reached`: the funnel rank of a state a move enters; `furthest_rank` is raised to it
    in the same statement. Not even named in the UPDATE when the case is known to be there
    already (the rank only ever rises): SQLite rewrites the entries of every index on a
    column the SET names, changed or not, and two indexes lead to furthest_rank.

    The statement runs on the driver's cursor (core.driver_sql): same SQL, same
    transaction, without SQLAlchemy's cost per execution."""
    version = case.version
    values = dict(changes)
    values.update(version=version + 1, updated_at=now, updated_by_id=actor.user_id,
                  # Marked for the next scan here, in the same UPDATE: migration 0005's
                  # trigger would mark it anyway, but on SQLite with a second UPDATE of
                  # the row (its WHEN clause skips rows already marked).
                  scan_dirty=True)
    params = {**values, "b_id": case.id, "b_version": version}
    conn = session.connection()
    if reached is None or reached <= (case.furthest_rank or 0):
        written = driver_sql.execute(conn, _CAS, params).rowcount == 1
    else:
        params["b_reached"] = reached
        row = driver_sql.execute(conn, _CAS_REACHED, params).row
        written = row is not None
        if written:
            values["furthest_rank"] = row[0]
    if not written:
        raise _describe_change(session, case.id)
    _store(case, values)
    return case


def add_event(
    session: Session, *, case: Case, from_state: str | None, at: datetime,
    actor: Actor, reason: str | None = None, days_in_from_state: float | None = None,
) -> None:
    """The history row of the move that just brought `case` to its current state and
    version (the team is copied onto it: a case never changes team)."""
    driver_sql.execute(session.connection(), _INSERT_EVENT, {
        "case_id": case.id, "team_id": case.team_id, "from_state": from_state,
        "to_state": case.state, "at": at, "actor_id": actor.user_id, "reason": reason,
        "days_in_from_state": days_in_from_state, "version": case.version,
    })


def holiday_country() -> str:
    return get_settings().holiday_country


def deadline_fields(
    session: Session,
    *,
    state: str,
    state_entered_at: datetime,
    paused_seconds: int,
    on_hold: bool,
    outcome_recorded: bool,
    limits: dict[str, clocks.SlaLimit] | None = None,
) -> dict[str, datetime | None]:
    """The three stored deadlines for a case that will have these fields (`limits`: as
    read in this transaction, else read now)."""
    d = clocks.sla_deadlines(
        state=state,
        state_entered_at=state_entered_at,
        paused_seconds=paused_seconds,
        on_hold=on_hold,
        outcome_recorded=outcome_recorded,
        limits=clocks.load_limits(session) if limits is None else limits,
        holiday_country=holiday_country(),
    )
    return {"due_soon_at": d.due_soon_at, "due_at": d.due_at, "escalate_at": d.escalate_at}


def deadlines_after(session: Session, case: Case, **overrides: Any) -> dict[str, datetime | None]:
    """Deadlines for `case` with some fields about to change."""
    fields = {
        "state": case.state,
        "state_entered_at": case.state_entered_at,
        "paused_seconds": case.paused_seconds,
        "on_hold": case.on_hold,
        "outcome_recorded": case.outcome_recorded_at is not None,
    }
    fields.update(overrides)
    return deadline_fields(session, **fields)


def load_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id) if isinstance(user_id, int) else None
    if user is None:
        raise NotFoundError(f"There is no user {user_id!r}.")
    return user


__all__ = [
    "PermissionDenied",
    "add_event",
    "atomic",
    "check_version",
    "compare_and_set",
    "deadline_fields",
    "deadlines_after",
    "load_case",
    "load_case_and_limits",
    "require_case_right",
    "require_open",
    "require_team_access",
    "savepoint",
    "utc",
]
