"""Who carries how much (issue 6, item 3): open cases per coordinator with stalled and
at-risk counts, the unassigned pile, and the open cases a manager may reassign."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import case, exists, func
from sqlmodel import Session, select

from core.actor import Actor
from core.analytics.filters import CaseFilter
from core.analytics.funnel import stalled_condition
from core.models import Case, CaseFlag, User
from core.permissions import Action, team_filter
from core.vocab import CaseState, FlagKind, Role

if TYPE_CHECKING:
    import pandas as pd

UNASSIGNED = "Unassigned"


def _at_risk():  # noqa: ANN202 - SQL boolean
    """An open deadline-risk flag: the remaining stages cannot fit before treatment."""
    return exists().where(
        CaseFlag.case_id == Case.id,
        CaseFlag.resolved_at.is_(None),
        CaseFlag.kind == FlagKind.DEADLINE_RISK.value,
    )


def workload(session: Session, actor: Actor, filt: CaseFilter, *, now: datetime) -> pd.DataFrame:
    """One row per coordinator in reach (also those with nothing open) plus one
    'Unassigned' row: open, stalled, at_risk. Sorted with the heaviest load first."""
    import pandas as pd  # lazily: the exports share this package without it

    conds = filt.case_conditions(actor, Action.VIEW_ANALYTICS, with_period=False,
                                 with_state=False)
    rows = session.exec(
        select(
            Case.assignee_id,
            func.count().label("open"),
            func.sum(case((stalled_condition(now), 1), else_=0)).label("stalled"),
            func.sum(case((_at_risk(), 1), else_=0)).label("at_risk"),
        )
        .where(*conds, Case.state != CaseState.CLOSED.value)
        .group_by(Case.assignee_id)
    ).all()
    counts = {r.assignee_id: (int(r.open), int(r.stalled or 0), int(r.at_risk or 0))
              for r in rows}

    user_conds = [team_filter(actor, Action.VIEW_ANALYTICS, User.team_id),
                  User.is_active.is_(True), User.role == Role.COORDINATOR.value]
    if filt.team_id is not None:
        user_conds.append(User.team_id == filt.team_id)
    people = {u.id: u for u in session.exec(select(User).where(*user_conds)).all()}
    # Someone outside the list (a manager, a deactivated user) may still hold cases.
    missing = [uid for uid in counts if uid is not None and uid not in people]
    if missing:
        people.update({u.id: u for u in session.exec(select(User).where(User.id.in_(missing)))})

    out = []
    for uid, user in people.items():
        o, s, r = counts.get(uid, (0, 0, 0))
        out.append({"assignee_id": uid, "coordinator": user.full_name,
                    "username": user.username, "open": o, "stalled": s, "at_risk": r})
    out.sort(key=lambda d: (-d["open"], d["coordinator"]))
    o, s, r = counts.get(None, (0, 0, 0))
    out.append({"assignee_id": None, "coordinator": UNASSIGNED, "username": None,
                "open": o, "stalled": s, "at_risk": r})
    return pd.DataFrame(
        out, columns=["assignee_id", "coordinator", "username", "open", "stalled", "at_risk"]
    )


def reassign_candidates(
    session: Session, actor: Actor, filt: CaseFilter, *, now: datetime,
    assignee_id: int | None = None, unassigned: bool = False, limit: int = 200,
) -> pd.DataFrame:
    """Open cases in the manager's reach that could be moved to someone else: most
    overdue first. Case ids and workflow facts only, no patient identity."""
    import pandas as pd  # lazily: the exports share this package without it

    stmt = (
        select(
            Case.id.label("case_id"),
            Case.state,
            Case.assignee_id,
            func.coalesce(User.full_name, UNASSIGNED).label("coordinator"),
            Case.due_at,
            case((stalled_condition(now), True), else_=False).label("stalled"),
            case((_at_risk(), True), else_=False).label("at_risk"),
            Case.version,
        )
        .join(User, User.id == Case.assignee_id, isouter=True)
        .where(
            *filt.case_conditions(actor, Action.REASSIGN, with_period=False),
            Case.state != CaseState.CLOSED.value,
        )
        .order_by(Case.due_at.is_(None), Case.due_at, Case.id)
        .limit(limit)
    )
    if unassigned:
        stmt = stmt.where(Case.assignee_id.is_(None))
    elif assignee_id is not None:
        stmt = stmt.where(Case.assignee_id == assignee_id)
    rows = session.exec(stmt).all()
    return pd.DataFrame(
        [dict(r._mapping) for r in rows],
        columns=["case_id", "state", "assignee_id", "coordinator", "due_at", "stalled",
                 "at_risk", "version"],
    )


def reassign_targets(session: Session, actor: Actor, team_id: int | None = None) -> pd.DataFrame:
    """Active coordinators a manager may hand cases to."""
    import pandas as pd  # lazily: the exports share this package without it

    conds = [team_filter(actor, Action.REASSIGN, User.team_id), User.is_active.is_(True),
             User.role == Role.COORDINATOR.value]
    if team_id is not None:
        conds.append(User.team_id == team_id)
    users = session.exec(select(User).where(*conds).order_by(User.full_name)).all()
    return pd.DataFrame(
        [{"user_id": u.id, "name": u.full_name, "username": u.username, "team_id": u.team_id}
         for u in users],
        columns=["user_id", "name", "username", "team_id"],
    )
