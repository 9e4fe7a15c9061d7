"""Funnel of a cohort, the pipeline now, and closed cases by reason (issue 6, item 1).

"Reached a state" is read from the history (`case_event.to_state`): a case reached stage k
when any of its moves entered stage k *or a later one*. Counting the furthest stage makes
the funnel monotonic even when a case went backwards (a no-show returns a scheduled case
to records received) or entered the service part-way (imported cases).

The furthest stage is stored on the case (`cases.furthest_rank`, written with each history
row by the workflow engine), so the funnel is read from an index of the
case table instead of a pass over the whole history: (team_id, furthest_rank) for a team,
one range per stage; (team_id, assessed_at, furthest_rank) for a cohort.
A case with no funnel move has rank 0: every case of the cohort was assessed.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, bindparam, case, exists, func, or_, select
from sqlmodel import Session

from core import flag_levels
from core.actor import Actor
from core.analytics.filters import CaseFilter
from core.models import Case, CaseFlag
from core.permissions import Action, Scope, scope
from core.timeutil import as_utc
from core.vocab import FUNNEL, CaseState, FlagKind, FlagSeverity

if TYPE_CHECKING:
    import pandas as pd

STALLED_SEVERITIES = (FlagSeverity.STALLED.value, FlagSeverity.ESCALATED.value)


def funnel(session: Session, actor: Actor, filt: CaseFilter) -> pd.DataFrame:
    """One row per funnel state: `reached` (cases of the cohort that got at least this far),
    `conversion` from the previous state (None for the first) and `share` of the cohort."""
    import pandas as pd  # lazily: the exports share this package without it

    by_rank = _cases_by_furthest_rank(session, actor, filt)
    reached = []
    running = 0
    for rank_k in range(len(FUNNEL) - 1, -1, -1):
        running += by_rank.get(rank_k, 0)
        reached.append(running)
    reached.reverse()
    cohort = reached[0]
    out = []
    for k, state in enumerate(FUNNEL):
        prev = reached[k - 1] if k else None
        out.append({
            "state": state.value,
            "label": state.label,
            "reached": reached[k],
            "conversion": (reached[k] / prev) if prev else None,
            "share": (reached[k] / cohort) if cohort else None,
        })
    return pd.DataFrame(out, columns=["state", "label", "reached", "conversion", "share"])


def _cases_by_furthest_rank(session: Session, actor: Actor, filt: CaseFilter) -> dict[int, int]:
    # The current state is not a cohort criterion: the funnel is about how far cases got.
    conds = filt.case_conditions(actor, Action.VIEW_ANALYTICS, with_state=False)
    con = session.connection()  # Core execution: plain counts, no ORM entities
    one_team = filt.team_id is not None or scope(actor, Action.VIEW_ANALYTICS) is Scope.OWN_TEAM
    if one_team and filt.start is None and filt.end is None:
        # One range of ix_cases_team_furthest per stage: 7 ms for a team of 84k cases,
        # where grouping the whole team's entries took 13-31 ms.
        count = select(func.count()).where(*conds, Case.furthest_rank == bindparam("k"))
        return {k: con.execute(count, {"k": k}).scalar_one() for k in range(len(FUNNEL))}
    # Every team, or a cohort: grouped in the order of ix_cases_team_furthest (no sort
    # without a period), or of ix_cases_team_assessed_furthest for a period.
    rows = con.execute(
        select(Case.furthest_rank, func.count()).where(*conds)
        .group_by(Case.team_id, Case.furthest_rank)
    ).all()
    by_rank: dict[int, int] = {}
    for rank, n in rows:
        by_rank[int(rank)] = by_rank.get(int(rank), 0) + int(n)
    return by_rank


def stalled_condition(now: datetime):  # noqa: ANN201 - SQL boolean
    """A case is stalled when its stored deadline has passed or it has an open SLA flag
    at stalled or escalated now (a due-soon flag is a warning, not a stall; the flag's
    level is derived from the case at `now`, core.flag_levels)."""
    flag, case_ = CaseFlag.__table__, Case.__table__
    level = flag_levels.current_severity_sql(flag, case_, flag_levels.Moment.at(now))
    open_sla_flag = exists().where(
        flag.c.case_id == case_.c.id,
        flag.c.resolved_at.is_(None),
        flag.c.kind == FlagKind.SLA.value,
        level.in_(STALLED_SEVERITIES),
    )
    return or_(and_(Case.due_at.is_not(None), Case.due_at <= as_utc(now)), open_sla_flag)


def pipeline(session: Session, actor: Actor, filt: CaseFilter, *, now: datetime) -> pd.DataFrame:
    """Open cases per state right now, with how many of them are stalled. The period does
    not apply (this is a picture of today); the team does."""
    import pandas as pd  # lazily: the exports share this package without it

    stalled = func.sum(case((stalled_condition(now), 1), else_=0))
    rows = session.exec(
        select(Case.state, func.count().label("open"), stalled.label("stalled"))
        .where(
            *filt.case_conditions(actor, Action.VIEW_ANALYTICS, with_period=False,
                                  with_state=False),
            Case.state != CaseState.CLOSED.value,
        )
        .group_by(Case.state)
    ).all()
    got = {r.state: (int(r.open), int(r.stalled or 0)) for r in rows}
    return pd.DataFrame(
        [
            {"state": s.value, "label": s.label, "open": got.get(s.value, (0, 0))[0],
             "stalled": got.get(s.value, (0, 0))[1]}
            for s in FUNNEL
        ],
        columns=["state", "label", "open", "stalled"],
    )


def closed_by_reason(session: Session, actor: Actor, filt: CaseFilter) -> pd.DataFrame:
    """Cases of the cohort that are closed, by reason, most frequent first."""
    import pandas as pd  # lazily: the exports share this package without it

    rows = session.exec(
        select(Case.close_reason, func.count().label("n"))
        .where(*filt.case_conditions(actor, Action.VIEW_ANALYTICS, with_state=False),
               Case.state == CaseState.CLOSED.value)
        .group_by(Case.close_reason)
        .order_by(func.count().desc(), Case.close_reason)
    ).all()
    return pd.DataFrame(
        [{"reason": r.close_reason, "label": r.close_reason.replace("_", " ").capitalize(),
          "cases": int(r.n)} for r in rows],
        columns=["reason", "label", "cases"],
    )
