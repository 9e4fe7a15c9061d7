"""The manager's analytics: the funnel and the stage-time median and 90th percentile per
state (issue 6), for the demo manager's team, against replaying the events in pandas
(the naive way) and the floor: the very statements ours sent, replayed on a bare DBAPI
connection (what is left is the database's own work)."""

from __future__ import annotations

import pandas as pd

from benchmarks.common import actor, captured_run, replay
from benchmarks.context import Ctx
from benchmarks.report import Row, Target
from benchmarks.timing import Stat, measure
from core.db import session_scope
from core.vocab import FUNNEL, Role

_RANK = {s.value: i for i, s in enumerate(FUNNEL)}


def _ours(ctx: Ctx):  # noqa: ANN202
    from core.analytics.filters import CaseFilter
    from core.analytics.funnel import funnel
    from core.analytics.stage_times import stage_times

    manager = actor(ctx, Role.MANAGER)

    def run_funnel() -> None:
        with session_scope(ctx.engine, write=False) as session:
            funnel(session, manager, CaseFilter())

    def run_stages() -> None:
        with session_scope(ctx.engine, write=False) as session:
            stage_times(session, manager, CaseFilter())

    return run_funnel, run_stages


def _naive(ctx: Ctx, team_id: int):  # noqa: ANN202
    """Every event of the team's cases into pandas; the funnel from the furthest state
    each case reached, stage times by replaying each case's moves in order."""

    def replay() -> tuple[pd.Series, pd.DataFrame]:
        with ctx.bare_connection() as con:
            cur = con.cursor()
            cur.execute(ctx.sql(
                "SELECT e.id, e.case_id, e.to_state, e.at FROM case_event e "
                "JOIN cases c ON c.id = e.case_id WHERE c.team_id = ?"), (team_id,))
            events = pd.DataFrame(cur.fetchall(), columns=["id", "case_id", "to_state", "at"])
        events["at"] = pd.to_datetime(events["at"], utc=True, format="mixed")
        events = events.sort_values(["case_id", "at", "id"])
        furthest = events["to_state"].map(_RANK).groupby(events["case_id"]).max()
        reached = furthest.value_counts().sort_index(ascending=False).cumsum()
        nxt = events.groupby("case_id")["at"].shift(-1)
        events["days"] = (nxt - events["at"]).dt.total_seconds() / 86400.0
        stays = events.dropna(subset=["days"])
        stays = stays[stays["to_state"].isin(_RANK)]
        stats = stays.groupby("to_state")["days"].quantile([0.5, 0.9]).unstack()
        return reached, stats

    return replay


def _floor(ctx: Ctx):  # noqa: ANN202
    """Our funnel's and stage times' statements, captured once, replayed bare."""
    from core.analytics.filters import CaseFilter
    from core.analytics.funnel import funnel
    from core.analytics.stage_times import stage_times

    manager = actor(ctx, Role.MANAGER)
    _, funnel_sql = captured_run(ctx, lambda s: funnel(s, manager, CaseFilter()))
    _, stages_sql = captured_run(ctx, lambda s: stage_times(s, manager, CaseFilter()))

    def replayer(statements):  # noqa: ANN001, ANN202
        def go() -> None:
            with ctx.bare_connection() as con:
                replay(ctx, con, statements, write=False)
        return go

    return replayer(funnel_sql), replayer(stages_sql)


def _sum(a: Stat, b: Stat) -> Stat:
    return Stat([x + y for x, y in zip(a.values, b.values, strict=False)], a.unit,
                cpu=[x + y for x, y in zip(a.cpu, b.cpu, strict=False)])


def run(ctx: Ctx) -> list[Row]:
    manager = actor(ctx, Role.MANAGER)
    team_id = manager.team_id
    ours_funnel, ours_stages = _ours(ctx)
    floor_funnel, floor_stages = _floor(ctx)
    o_f = measure(ours_funnel, runs=ctx.runs, warmup=ctx.warmup)
    o_s = measure(ours_stages, runs=ctx.runs, warmup=ctx.warmup)
    f_f = measure(floor_funnel, runs=ctx.runs, warmup=ctx.warmup)
    f_s = measure(floor_stages, runs=ctx.runs, warmup=ctx.warmup)
    naive = measure(_naive(ctx, team_id), **ctx.naive_kw())
    note = "the demo manager's team"
    return [
        Row("analytics", "analytics: funnel", o_f, None, f_f, note=note),
        Row("analytics", "analytics: stage-time median + p90", o_s, None, f_s, note=note),
        Row("analytics", "analytics together (naive: replay events in pandas)",
            _sum(o_f, o_s), naive, _sum(f_f, f_s),
            targets=[Target("value", 1000, "≤ 1 s"), Target("vs_naive", 25, "≥ 25× naive")],
            note=note),
    ]
