"""The triage queue (issue 5's `core.queries.triage.queue`): the first page and a page deep
in the queue (keyset cursors walked there untimed), for the demo coordinator (their own
cases: the page's default) and the demo manager (everyone in the team), and the page's
AppTest rerun (benchmarks/apptest.py).

naive: every open case (and every open flag) into pandas, the same urgency order computed
there, sorted, sliced, then the 50 patients read. floor: the very statements `queue` sent
for that page (the ranked page, then its flags, records, contacts and SLA limits),
replayed on a bare DBAPI connection - what is left is the database's own work, so
`ours ÷ floor` is the cost of the Python around it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from benchmarks.common import actor, captured_run, replay
from benchmarks.context import Ctx
from benchmarks.report import Row, Target
from benchmarks.timing import Stat, measure
from core.actor import Actor
from core.db import session_scope
from core.flag_levels import Moment
from core.vocab import FlagSeverity, Role

PAGE = 50
# Untimed runs before the page's figures: PostgreSQL plans a prepared statement afresh at
# each of its first five runs on a connection and only then keeps its generic plan, and
# planning the page costs about as much as running it. The app's pooled connections are
# past that after a few reruns of My day, so the figures are that steady state; the
# first runs on a new connection have a row of their own (`_new_connection`).
SETTLE = 6

DEEP_OFFSET = 4950  # page 100, as in FIELD-NOTES.md; the last page if there are fewer
SMOKE_PAGE = 10  # a smoke database's coordinator has a few dozen cases: still two pages
_RANK = {s.value: s.rank for s in FlagSeverity}
FAR = pd.Timestamp("9999-12-31", tz="UTC")


def warmup_text(warmup: int) -> str:
    """How many untimed runs this suite's figures had, for the README's run lines."""
    return (f"{max(warmup, SETTLE)} warm-up runs for the queue's pages and "
            f"{warmup} for the AppTest rerun")


def _page(ctx: Ctx) -> int:
    return SMOKE_PAGE if ctx.smoke else PAGE


def _ours(ctx: Ctx, who: Actor, after=None):  # noqa: ANN001, ANN202
    from core.queries.triage import TriageFilters, queue

    filters = TriageFilters.default_for(who)

    def first() -> object:
        # As My day reads it (dashboard/pages/my_day.py).
        with session_scope(ctx.engine, write=False, plain_reads=True) as session:
            return queue(session, actor=who, now=ctx.now, filters=filters, after=after,
                         limit=_page(ctx))

    return first


def _deep_cursor(ctx: Ctx, who: Actor) -> tuple[object, int]:
    """Walk the cursors to the deep page (untimed); returns (cursor, offset reached)."""
    from core.queries.triage import TriageFilters, queue

    filters = TriageFilters.default_for(who)
    size = _page(ctx)
    after, offset, cursors = None, 0, []
    with session_scope(ctx.engine, write=False) as session:
        while offset < DEEP_OFFSET:
            page = queue(session, actor=who, now=ctx.now, filters=filters, after=after,
                         limit=size)
            if page.next_cursor is None:
                break
            cursors.append(page.next_cursor)
            after = page.next_cursor
            offset += size
    if not cursors:
        return None, 0
    # the last full page before the end
    if offset < DEEP_OFFSET and len(cursors) > 1:
        return cursors[-2], offset - size
    return cursors[-1], offset


def naive_page(ctx: Ctx, who: Actor, offset: int, size: int = PAGE) -> pd.DataFrame:
    cases = pd.read_sql("SELECT * FROM cases WHERE state <> 'closed'", ctx.engine)
    # Only the kinds whose level is stored; SLA and patient-clock levels are derived from
    # the case's dates at `now`, as ours does (core.flag_levels).
    flags = pd.read_sql("SELECT case_id, severity FROM case_flag WHERE resolved_at IS NULL "
                        "AND kind IN ('deadline_risk', 'unreachable')", ctx.engine)
    cases = cases[cases["team_id"] == who.team_id]
    if who.role is Role.COORDINATOR:
        cases = cases[cases["assignee_id"] == who.user_id]
    worst = flags["severity"].map(_RANK).groupby(flags["case_id"]).max()
    flag_rank = cases["id"].map(worst).fillna(0)
    now = pd.Timestamp(ctx.now)
    due = pd.to_datetime(cases["due_at"], utc=True, format="mixed")
    soon = pd.to_datetime(cases["due_soon_at"], utc=True, format="mixed")
    esc = pd.to_datetime(cases["escalate_at"], utc=True, format="mixed")
    sla_rank = np.select([esc <= now, due <= now, soon <= now], [3, 2, 1], 0)
    amber, red, critical = (pd.Timestamp(d) for d in Moment.at(ctx.now).patient_cutoffs)
    bio = pd.to_datetime(cases["biopsy_date"])
    clock = cases["outcome_recorded_at"].isna() & bio.notna()
    patient_rank = np.select([clock & (bio <= critical), clock & (bio <= red),
                              clock & (bio <= amber)], [3, 2, 1], 0)
    rank = np.maximum(np.maximum(flag_rank, sla_rank), patient_rank)
    frame = cases.assign(rank=rank, due_key=due.fillna(FAR),
                         bio_key=bio.fillna(pd.Timestamp("9999-12-31")))
    frame = frame.sort_values(["rank", "due_key", "bio_key", "id"],
                              ascending=[False, True, True, True])
    page = frame.iloc[offset:offset + size]
    ids = ",".join(str(int(i)) for i in page["patient_id"]) or "0"
    patients = pd.read_sql(f"SELECT id, first_name, last_name, mrn FROM patient "  # noqa: S608
                           f"WHERE id IN ({ids})", ctx.engine)
    return page.merge(patients, left_on="patient_id", right_on="id", how="left")


def floor_page(ctx: Ctx, who: Actor, after=None):  # noqa: ANN001, ANN201
    """The statements `queue` sends for this page, captured once, replayed bare."""
    from core.queries.triage import TriageFilters, queue

    filters = TriageFilters.default_for(who)
    _, statements = captured_run(ctx, lambda s: queue(s, actor=who, now=ctx.now,
                                                      filters=filters, after=after,
                                                      limit=_page(ctx)))

    def go() -> None:
        with ctx.bare_connection() as con:
            replay(ctx, con, statements, write=False, prepare=True)

    return go


def _new_connection(ctx: Ctx, who: Actor) -> Stat:
    """The first page's first SETTLE runs on an engine of its own: connecting, then the
    runs PostgreSQL plans afresh - what the first reruns after a restart cost."""
    from core.db import create_db_engine

    engine = create_db_engine(ctx.url)
    try:
        return measure(_ours(replace(ctx, engine=engine, cache={}), who), runs=SETTLE,
                       warmup=0)
    finally:
        engine.dispose()


def _same_order(ctx: Ctx, who: Actor) -> None:
    """The naive way must compute the queue ours does, or `naive ÷ ours` compares
    different work: its first page must hold the same cases in the same order."""
    got = [r.case_id for r in _ours(ctx, who)().rows]
    want = [int(i) for i in naive_page(ctx, who, 0, _page(ctx))["id_x"]]
    if got != want:
        raise AssertionError(f"naive queue differs from ours: {want[:8]} vs {got[:8]}")


def run(ctx: Ctx) -> list[Row]:
    from benchmarks import apptest

    rows: list[Row] = []
    for role, label in ((Role.COORDINATOR, "the coordinator's own cases"),
                        (Role.MANAGER, "the manager's whole team")):
        who = actor(ctx, role)
        _same_order(ctx, who)
        settle = max(ctx.warmup, SETTLE)
        ours = measure(_ours(ctx, who), runs=ctx.runs, warmup=settle)
        naive = measure(lambda w=who: naive_page(ctx, w, 0, _page(ctx)), **ctx.naive_kw())
        floor = measure(floor_page(ctx, who), runs=ctx.runs, warmup=settle)
        main = role is Role.COORDINATOR
        targets = [Target("value", 5, "≤ 5 ms"), Target("vs_naive", 200, "≥ 200× naive")]
        rows.append(Row("triage", "triage: first page" if main else
                        "triage: first page, whole team", ours, naive, floor,
                        targets=targets if main else [], note=label))
        if main:
            rows.append(Row("triage", "triage: first page, a new connection",
                            _new_connection(ctx, who),
                            note=f"{label}: connecting, then the first {SETTLE} runs"))

        cursor, offset = _deep_cursor(ctx, who)
        if cursor is None:
            continue
        ours = measure(_ours(ctx, who, cursor), runs=ctx.runs, warmup=settle)
        naive = measure(lambda w=who, o=offset: naive_page(ctx, w, o, _page(ctx)),
                        **ctx.naive_kw())
        floor = measure(floor_page(ctx, who, cursor), runs=ctx.runs, warmup=settle)
        rows.append(Row("triage", "triage: a deep page" if main else
                        "triage: a deep page, whole team", ours, naive, floor,
                        note=f"{label}, rows {offset + 1}-{offset + _page(ctx)}"))
    rows.append(apptest.run(ctx))
    return rows
