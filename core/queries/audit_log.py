"""The audit viewer's read model (admins only): filtered, newest first, keyset-paged on
the id, so a year of audit rows never comes into memory. Reading the log is itself
audited (`audit.view`, with the filter and the row count): who looked at what, and when,
is exactly what an audit log is for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta

from sqlmodel import Session, select

from core import audit
from core.actor import Actor
from core.errors import ValidationError
from core.models import AuditEntry, User
from core.permissions import Action, require
from core.timeutil import as_utc, start_of_day
from core.vocab import AuditOutcome

PAGE_MAX = 500


@dataclass(frozen=True)
class AuditFilter:
    start: date | None = None  # inclusive, UTC day
    end: date | None = None  # inclusive, UTC day
    user_id: int | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("case." = every case.*)
    case_id: int | None = None
    outcome: str | None = None

    def describe(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, date) else v)
                for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    user_id: int | None
    username: str | None
    role: str | None
    session_id: str | None
    action: str
    case_id: int | None
    outcome: str
    detail: dict | None


def _require_viewer(session: Session, actor: Actor, now: datetime) -> None:
    # A refusal is audited by the session_scope it leaves (core.db).
    require(actor, Action.VIEW_AUDIT)


def _validate(f: AuditFilter) -> None:
    if f.start and f.end and f.start > f.end:
        raise ValidationError("The start date is after the end date.")
    if f.outcome is not None:
        try:
            AuditOutcome(f.outcome)
        except ValueError:
            raise ValidationError(f"{f.outcome!r} is not an outcome.") from None
    if f.action is not None and len(f.action) > 64:
        raise ValidationError("Action filter is too long.")


def search_audit(session: Session, *, actor: Actor, now: datetime, filters: AuditFilter,
                 limit: int = 100, before_id: int | None = None,
                 record_view: bool = True, look_ahead: bool = False) -> list[AuditRow]:
    """One page of entries matching `filters`, newest first; pass the last row's id as
    `before_id` for the next page. Use a write session: the view is audited (a page may
    pass record_view=False when it merely redraws a view it already recorded).
    `look_ahead`: one more row than the page, to tell whether an older page exists; the
    caller shows `limit` rows and the audit row counts only those."""
    _require_viewer(session, actor, now)
    _validate(filters)
    limit = max(1, min(int(limit), PAGE_MAX))
    q = (select(AuditEntry, User.username)
         .outerjoin(User, User.id == AuditEntry.user_id)
         .order_by(AuditEntry.id.desc()).limit(limit + 1 if look_ahead else limit))
    if before_id is not None:
        q = q.where(AuditEntry.id < before_id)
    if filters.start:
        q = q.where(AuditEntry.at >= start_of_day(filters.start))
    if filters.end:
        q = q.where(AuditEntry.at < start_of_day(filters.end + timedelta(days=1)))
    if filters.user_id is not None:
        q = q.where(AuditEntry.user_id == filters.user_id)
    if filters.action:
        if filters.action.endswith("."):
            # startswith(autoescape) so "_" or "%" in a typed filter are not wildcards.
            q = q.where(AuditEntry.action.startswith(filters.action, autoescape=True))
        else:
            q = q.where(AuditEntry.action == filters.action)
    if filters.case_id is not None:
        q = q.where(AuditEntry.case_id == filters.case_id)
    if filters.outcome:
        q = q.where(AuditEntry.outcome == filters.outcome)
    rows = [
        AuditRow(id=e.id, at=as_utc(e.at), user_id=e.user_id, username=name, role=e.role,
                 session_id=e.session_id, action=e.action, case_id=e.case_id,
                 outcome=e.outcome, detail=_detail(e.detail))
        for e, name in session.exec(q).all()
    ]
    if record_view:
        audit.record(session, actor=actor, action="audit.view", now=now,
                     detail={"filter": filters.describe(), "rows": min(len(rows), limit),
                             "before_id": before_id})
    return rows


def _detail(text: str | None) -> dict | None:
    """A stored detail; text that is not a JSON object (rows written before details were
    always kept valid when cut) is shown as it is, not an error on every later view."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"unparsed": text}
    return value if isinstance(value, dict) else {"value": value}


def audit_choices(session: Session, *, actor: Actor, now: datetime) -> dict[str, list]:
    """Values for the filter widgets: the actions that occur and the accounts."""
    _require_viewer(session, actor, now)
    actions = sorted(session.exec(select(AuditEntry.action).distinct()).all())
    users = [(u.id, u.username) for u in session.exec(select(User).order_by(User.username))]
    return {"actions": actions, "users": users,
            "outcomes": [o.value for o in AuditOutcome]}


def verify(session: Session, *, actor: Actor, now: datetime) -> audit.ChainReport:
    """The chain check of `casedesk audit verify`, for the page's button."""
    _require_viewer(session, actor, now)
    return audit.verify_chain(session)


__all__ = ["AuditFilter", "AuditRow", "audit_choices", "search_audit", "verify"]
