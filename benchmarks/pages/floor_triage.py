"""Benchmark page (the floor): the bare SQL's 50 rows in a table, nothing else."""

import os
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from benchmarks.context import Ctx  # noqa: E402

# The least a page of the queue can cost: one ordered, limited query over the same scope
# (no ranking, no why / next action), shown as a table.
_FLOOR_SELECT = (
    "SELECT c.id, c.version, c.state, c.due_at, c.biopsy_date, c.on_hold, p.first_name, "
    "p.last_name, p.mrn FROM cases c JOIN patient p ON p.id = c.patient_id "
    "WHERE c.state <> 'closed' AND c.due_at IS NOT NULL AND {scope}{after} "
    "ORDER BY c.due_at, c.id LIMIT 51"
)


# closed when the bench clears the cache, or the kept PostgreSQL server counts it as
# another user and is left running
@st.cache_resource(on_release=lambda held: held[1].close())
def connection(url: str, backend: str):  # noqa: ANN201
    ctx = Ctx(backend=backend, size=0, url=url, engine=None, runs=0,
              now=datetime.fromisoformat(os.environ["BENCH_NOW"]), log=print, out_dir=Path())
    return ctx, ctx.bare()


ctx, con = connection(os.environ["CASEDESK_DATABASE_URL"], os.environ["BENCH_BACKEND"])
sql = ctx.sql(_FLOOR_SELECT.format(scope="c.team_id = ? AND c.assignee_id = ?", after=""))
rows = con.execute(sql, (int(os.environ["BENCH_TEAM_ID"]),
                         int(os.environ["BENCH_USER_ID"]))).fetchall()
st.title("My day (floor)")
st.dataframe([tuple(r) for r in rows[:50]], hide_index=True)
