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

Without a period or a split (the page's first view, and the scan's medians), and for the
split by team without a period (once per team), the numbers come from the stay counts
(`stage_stay_count`, kept by triggers) and the one or two index entries at each needed
rank (`stay_percentiles`), never reading every stay. A period (a cohort of cases) or a
split needs the case's other columns, so those take the general path, which ranks the
stays in SQL; both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from sqlalchemy import func, literal
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import custom_op
from sqlmodel import Session, select

from core.actor import Actor
from core.analytics.filters import CaseFilter, month_of
from core.analytics.stats import percentile_select
from core.analytics.stay_percentiles import Percentiles, stay_percentiles
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
    rule = SlaRule.__table__.c  # two plain columns: no ORM objects to build
    return dict(session.connection().execute(select(rule.state, rule.limit_days)).all())


def stage_times(
    session: Session, actor: Actor, filt: CaseFilter, *, by: Split | None = None
) -> pd.DataFrame:
    """One row per (state, group): n stays, median and 90th percentile days, SLA limit."""
    import pandas as pd  # lazily: the exports share this package without it

    no_period = filt.start is None and filt.end is None
    if by is None and no_period:
        rows = _from_counts(session, actor, filt)
    elif by == "team" and no_period:
        rows = _teams_from_counts(session, actor, filt)
    else:
        rows = _ranked(session, actor, filt, by)
    limits = sla_limits(session)
    out = [
        {
            "state": state,
            "label": CaseState(state).label,
            "group": grp,
            "n": n,
            "median_days": p50,
            "p90_days": p90,
            "sla_days": limits.get(state),
        }
        for state, grp, n, p50, p90 in rows
    ]
    out.sort(key=lambda d: (_ORDER[d["state"]], str(d["group"])))
    return pd.DataFrame(out, columns=COLUMNS)


def stage_percentiles(
    session: Session, *, team_id: int | None = None, fractions: Sequence[float] = (0.5, 0.9),
) -> dict[str, Percentiles]:
    """Per funnel state with history: the number of stays and their percentiles, for one
    team or (None) across every team - the service-wide numbers, not a mean of teams.

    No actor: this is for the system's own jobs (the scan's expected remaining days);
    pages go through `stage_times`, which applies the user's reach."""
    return stay_percentiles(session, team_id=team_id, states=[s.value for s in FUNNEL],
                            fractions=fractions)


def _from_counts(session: Session, actor: Actor, filt: CaseFilter) -> list[tuple]:
    """No period, no split: the stay counts of the team in view (or of every team)."""
    team_id = filt.reach_team(actor, Action.VIEW_ANALYTICS)
    states = [s.value for s in FUNNEL if filt.state in (None, s.value)]
    got = stay_percentiles(session, team_id=team_id, states=states)
    return [(state, "all", p.n, p.values[0], p.values[1]) for state, p in got.items()]


def _teams_from_counts(session: Session, actor: Actor, filt: CaseFilter) -> list[tuple]:
    """The split by team without a period: the stay counts once per team in reach.
    Ranking every stay of the service instead took about 40 s of CPU at a million
    cases."""
    states = [s.value for s in FUNNEL if filt.state in (None, s.value)]
    team = Team.__table__.c
    teams = session.connection().execute(
        select(team.id, team.name).where(*filt.team_conditions(
            actor, Action.VIEW_ANALYTICS, team.id))).all()
    rows = []
    for team_id, name in teams:
        got = stay_percentiles(session, team_id=team_id, states=states)
        rows += [(state, name, p.n, p.values[0], p.values[1]) for state, p in got.items()]
    return rows


def _ranked(session: Session, actor: Actor, filt: CaseFilter, by: Split | None) -> list[tuple]:
    """The general path: every stay of the cohort ranked in SQL (percentile_select)."""
    dialect = session.get_bind().dialect
    stage = CaseEvent.from_state
    # SQLite's planner would start from the stage indexes of case_event and look up one
    # history row and one case row per stay (47 s at a million cases, month split);
    # starting from the cohort's cases and reading each one's history, which lies
    # together, is 4x cheaper. A unary + keeps the stage test off those indexes
    # (sqlite.org/optoverview.html, "disqualifying WHERE clause terms").
    picked = stage if dialect.name != "sqlite" else UnaryExpression(
        stage, operator=custom_op("+"), type_=stage.type)
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
            picked.in_([s.value for s in FUNNEL]),
            CaseEvent.days_in_from_state.is_not(None),
        )
    )
    if filt.state is not None:
        base = base.where(picked == filt.state)
    if by == "team":
        base = base.join(Team, Team.id == Case.team_id)
    elif by == "coordinator":
        base = base.join(User, User.id == Case.assignee_id, isouter=True)
    elif by == "facility":
        base = base.join(facilities, facilities.c.case_id == Case.id)

    rows = session.exec(percentile_select(base, ["state", "grp"], "days", dialect)).all()
    return [(r.state, r.grp, int(r.n), float(r.p50), float(r.p90)) for r in rows]
