"""The compare-and-set write every change of a case goes through.

A page loads a case at version v and later asks for a change. The change is written with
`UPDATE cases ... WHERE id = :id AND version = :v`; 0 rows means someone else changed the
case in between (healthchecks' sweeper does the same), and we refuse with the name of
who did it and when, writing nothing. On PostgreSQL (READ COMMITTED) a concurrent UPDATE
of the same row waits for the first to commit and then finds the version moved on; on
SQLite the write transaction (BEGIN IMMEDIATE) waits for the lock and then reads the new
version. Either way the loser gets StaleCaseError.

Every public operation runs inside `atomic(session)`: a savepoint, so a refused or failed
operation leaves nothing behind even if the caller catches the error and carries on with
the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from core.actor import Actor
from core.config import get_settings
from core.errors import NotFoundError, PermissionDenied, StaleCaseError, ValidationError
from core.models import Case, User
from core.permissions import Action, require
from core.timeutil import as_utc
from core.vocab import CaseState
from core.workflows import clocks


@contextmanager
def atomic(session: Session) -> Iterator[None]:
    with session.begin_nested():
        yield


def utc(value: datetime, *, field: str = "time") -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(f"{field} must be a date and time.")
    return as_utc(value)


def load_case(session: Session, case_id: int) -> Case:
    """The case as it is in the database now (not a copy cached in the session), locked
    for the rest of the transaction."""
    if isinstance(case_id, bool) or not isinstance(case_id, int):
        try:
            case_id = int(str(case_id).strip())
        except ValueError:
            raise NotFoundError(f"There is no case {case_id!r}.") from None
    # FOR UPDATE (PostgreSQL; SQLite's write transactions already hold the database lock):
    # a writer that did not bring a page version waits for a concurrent writer instead of
    # reading a version that is about to go stale and failing its compare-and-set.
    case = session.get(Case, case_id, populate_existing=True, with_for_update=True)
    if case is None:
        raise NotFoundError(f"There is no case {case_id}.")
    return case


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
    session: Session, case: Case, *, actor: Actor, now: datetime, changes: dict[str, Any]
) -> Case:
    """Write `changes` if the case is still at the version it was loaded with; bump the
    version; refresh `case`. Raises StaleCaseError (nothing written) otherwise."""
    version = case.version
    values = dict(changes)
    values.update(version=version + 1, updated_at=now, updated_by_id=actor.user_id)
    result = session.execute(
        update(Case)
        .where(Case.id == case.id, Case.version == version)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise _describe_change(session, case.id)
    session.refresh(case)
    return case


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
) -> dict[str, datetime | None]:
    """The three stored deadlines for a case that will have these fields."""
    d = clocks.sla_deadlines(
        state=state,
        state_entered_at=state_entered_at,
        paused_seconds=paused_seconds,
        on_hold=on_hold,
        outcome_recorded=outcome_recorded,
        limits=clocks.load_limits(session),
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
    "atomic",
    "check_version",
    "compare_and_set",
    "deadline_fields",
    "deadlines_after",
    "load_case",
    "require_case_right",
    "require_open",
    "require_team_access",
    "utc",
]
