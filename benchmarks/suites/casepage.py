"""The case page's queries (issue 5's `core.queries.case_detail.case_detail`: the case,
patient, team, clocks, flags, records, contacts, notes, history, possible moves, and the
audited view) for a case at the top of the coordinator's queue.

floor: the very statements `case_detail` sent, replayed on a bare DBAPI connection in
one transaction (rolled back: the view's audit row is a write). No naive way is named
for this page; one case is one case."""

from __future__ import annotations

from sqlalchemy import select

from benchmarks.common import actor, captured_run, replay
from benchmarks.context import Ctx
from benchmarks.report import Row
from benchmarks.timing import measure
from core.db import session_scope
from core.models import Case, CaseEvent
from core.vocab import Role


def _busy_case(ctx: Ctx, team_id: int, user_id: int) -> int:
    """An open case of the coordinator's with the longest history: the heaviest page."""
    with session_scope(ctx.engine, write=False) as session:
        ids = list(session.execute(
            select(Case.id).where(Case.team_id == team_id, Case.assignee_id == user_id,
                                  Case.state != "closed").order_by(Case.id).limit(200)
        ).scalars())
        if not ids:
            ids = list(session.execute(select(Case.id).where(Case.team_id == team_id)
                                       .limit(200)).scalars())
        from sqlalchemy import func

        row = session.execute(
            select(CaseEvent.case_id, func.count()).where(CaseEvent.case_id.in_(ids))
            .group_by(CaseEvent.case_id).order_by(func.count().desc(), CaseEvent.case_id)
            .limit(1)).first()
        return row[0] if row else ids[0]


def run(ctx: Ctx) -> list[Row]:
    from core.queries.case_detail import case_detail

    who = actor(ctx, Role.COORDINATOR)
    case_id = _busy_case(ctx, who.team_id, who.user_id)

    def ours() -> None:
        with session_scope(ctx.engine) as session:
            case_detail(session, case_id=case_id, actor=who, now=ctx.now)

    _, statements = captured_run(
        ctx, lambda s: case_detail(s, case_id=case_id, actor=who, now=ctx.now), write=True)

    def floor() -> None:
        with ctx.bare_connection() as con:
            replay(ctx, con, statements, write=True)

    o = measure(ours, runs=ctx.runs, warmup=ctx.warmup)
    f = measure(floor, runs=ctx.runs, warmup=ctx.warmup)
    return [Row("case page", "case page queries", o, None, f,
                note=f"case {case_id}: {len(statements)} statements")]
