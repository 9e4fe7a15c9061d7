"""Time spent in each state: median and 90th percentile (issue 6, item 2).

Read from `case_event.days_in_from_state`, the time in the state a move left, stored when
the move was written; nothing here replays history (FIELD-NOTES.md: replaying took 16-27 s
at a million cases, the stored column 0.3-0.6 s). Only stays in funnel states count;
a reopened case's time spent closed is not a stage.

Splits:
- month: the UTC month in which the case *left* the state (when the stay became known);
- team, coordinator (the case's current assignee), insurer;
- facility: every facility the case has a record item from. A case with records from two
  facilities counts under both, so the facility split answers "how long do cases that
  need records from X wait", not a partition of all stays.
For the whole table `filt.state` picks the stage, not the case's current state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from sqlalchemy import func, literal
from sqlmodel import Session, select

from core.actor import Actor
from core.analytics.filters import CaseFilter, month_of
from core.analytics.stats import percentile_select
from core.models import Case, CaseEvent, RecordItem, SlaRule, Team, User
from core.permissions import Action
from core.vocab import FUNNEL, CaseState

if TYPE_CHECKING:
    import pandas as pd

Split = Literal["month", "team", "coordinator", "insurer", "facility"]
SPLITS: tuple[str, ...] = ("month", "team", "coordinator", "insurer", "facility")
COLUMNS = ["state", "label", "group", "n", "median_days", "p90_days", "sla_days"]
_ORDER = {s.value: i for i, s in enumerate(FUNNEL)}


def sla_limits(session: Session) -> dict[str, int]:
    return {r.state: r.limit_days for r in session.exec(select(SlaRule)).all()}


def stage_times(
    session: Session, actor: Actor, filt: CaseFilter, *, by: Split | None = None
) -> pd.DataFrame:
    """One row per (state, group): n stays, median and 90th percentile days, SLA limit."""
    import pandas as pd  # lazily: the exports share this package without it

    dialect = session.get_bind().dialect
    stage = CaseEvent.from_state
    if by is None:
        group = literal("all")
    elif by == "month":
        group = month_of(CaseEvent.at, dialect)
    elif by == "team":
        group = Team.name
    elif by == "coordinator":
        group = func.coalesce(User.full_name, "Unassigned")
    elif by == "insurer":
        group = func.coalesce(Case.insurer, "Unknown")
    elif by == "facility":
        facilities = select(RecordItem.case_id, RecordItem.facility).distinct().subquery("fac")
        group = facilities.c.facility
    else:
        raise ValueError(f"unknown split {by!r}")

    base = (
        select(stage.label("state"), group.label("grp"),
               CaseEvent.days_in_from_state.label("days"))
        .join(Case, Case.id == CaseEvent.case_id)
        .where(
            *filt.case_conditions(actor, Action.VIEW_ANALYTICS, with_state=False),
            stage.in_([s.value for s in FUNNEL]),
            CaseEvent.days_in_from_state.is_not(None),
        )
    )
    if filt.state is not None:
        base = base.where(stage == filt.state)
    if by == "team":
        base = base.join(Team, Team.id == Case.team_id)
    elif by == "coordinator":
        base = base.join(User, User.id == Case.assignee_id, isouter=True)
    elif by == "facility":
        base = base.join(facilities, facilities.c.case_id == Case.id)

    rows = session.exec(percentile_select(base, ["state", "grp"], "days", dialect)).all()
    limits = sla_limits(session)
    out = [
        {
            "state": r.state,
            "label": CaseState(r.state).label,
            "group": r.grp,
            "n": int(r.n),
            "median_days": float(r.p50),
            "p90_days": float(r.p90),
            "sla_days": limits.get(r.state),
        }
        for r in rows
    ]
    out.sort(key=lambda d: (_ORDER[d["state"]], str(d["group"])))
    return pd.DataFrame(out, columns=COLUMNS)
