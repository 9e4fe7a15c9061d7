"""Who carries how much, and moving cases between coordinators in bulk (item 3)."""

from __future__ import annotations

import streamlit as st

from core import analytics
from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.permissions import Action, can
from core.timeutil import utcnow
from core.workflows.case_ops import bulk_reassign
from dashboard import charts, insight, ui
from dashboard.guard import require_page

actor = require_page(Action.VIEW_ANALYTICS)
now = utcnow()
engine = get_engine()
ui.header("Workload", actor, subtitle="Open cases per coordinator, stalled and at risk.")

filt = insight.filter_bar(actor, key="load", period=False)
try:
    with session_scope(engine, write=False) as session:
        load = analytics.workload(session, actor, filt, now=now)
except CaseDeskError as exc:
    ui.show_error(exc)
    st.stop()

unassigned = load[load["assignee_id"].isna()]
m = st.columns(3)
m[0].metric("Open cases", f"{int(load['open'].sum()):,}")
m[1].metric("Unassigned", f"{int(unassigned['open'].sum()):,}")
m[2].metric("Stalled", f"{int(load['stalled'].sum()):,}",
            help="Past the time limit of their state, or flagged stalled by the scan")
st.plotly_chart(charts.workload(load), key="chart_workload")
st.dataframe(
    load[["coordinator", "open", "stalled", "at_risk"]], hide_index=True, key="load_table",
    column_config={"coordinator": "Coordinator",
                   "open": st.column_config.NumberColumn("Open", format="%d"),
                   "stalled": st.column_config.NumberColumn("Stalled", format="%d"),
                   "at_risk": st.column_config.NumberColumn(
                       "At risk", format="%d",
                       help="The remaining steps may not fit before the planned treatment")})

if not can(actor, Action.REASSIGN):
    st.stop()

st.subheader("Reassign cases")
# The result of the last click survives the rerun that refreshes the table.
outcome = st.session_state.pop("reassign_outcome", None)
if outcome:
    n_done, problems = outcome
    st.success(f"{n_done} cases reassigned.")
    for line in problems:
        st.warning(ui.safe(line))
holders = {"all": "Everyone", "none": "Unassigned"}
holders.update({int(r.assignee_id): r.coordinator for r in load.itertuples()
                if r.assignee_id == r.assignee_id and r.assignee_id is not None})
c1, c2 = st.columns(2)
source = c1.selectbox("Cases held by", list(holders), key="reassign_from",
                      format_func=lambda v: holders[v])
try:
    with session_scope(engine, write=False) as session:
        cases = analytics.reassign_candidates(
            session, actor, filt, now=now, unassigned=source == "none",
            assignee_id=source if isinstance(source, int) else None)
        targets = analytics.reassign_targets(session, actor, filt.team_id)
except CaseDeskError as exc:
    ui.show_error(exc)
    st.stop()

target_names = dict(zip(targets["user_id"].tolist(), targets["name"].tolist(), strict=True))
target = c2.selectbox("Give them to", list(target_names), key="reassign_to",
                      format_func=lambda v: target_names[v], index=None,
                      placeholder="Choose a coordinator")
if cases.empty:
    st.info("No open cases here.")
    st.stop()
view = cases.assign(state=[ui.state_label(s) for s in cases["state"]],
                    due=[ui.human(d, now) if d is not None and d == d else "-"
                         for d in cases["due_at"]])
# The table's selection is row positions in the table as it was shown, and Streamlit keeps
# it when the data changes. So the key changes with the source and after each reassign
# (a new, empty selection), and the positions are read against the cases shown last
# time, with the versions shown then: a case changed since is refused, not swapped for
# whichever case now sits in that row.
table_key = f"reassign_table_{source}_{st.session_state.get('reassign_round', 0)}"
shown_before: list[tuple[int, int]] = st.session_state.get(f"{table_key}_shown", [])
st.session_state[f"{table_key}_shown"] = list(zip(
    cases["case_id"].astype(int).tolist(), cases["version"].astype(int).tolist(),
    strict=True))
picked = st.dataframe(
    view[["case_id", "state", "coordinator", "due", "stalled", "at_risk"]],
    hide_index=True, key=table_key, on_select="rerun", selection_mode="multi-row",
    column_config={"case_id": st.column_config.NumberColumn("Case", format="%d"),
                   "state": "State", "coordinator": "Coordinator", "due": "Due",
                   "stalled": "Stalled", "at_risk": "At risk"},
)
rows = tuple(getattr(getattr(picked, "selection", None), "rows", []) or [])
# Read once, when the selection changes, against the table the click was made on; later
# reruns (the button's) keep those cases even if the rows now hold others.
held = st.session_state.get(f"{table_key}_chosen")
if held is None or held[0] != rows:
    held = (rows, dict(shown_before[r] for r in rows if 0 <= r < len(shown_before)))
    st.session_state[f"{table_key}_chosen"] = held
versions: dict[int, int] = held[1]
st.caption(f"{len(versions)} of {len(cases)} cases selected (most overdue first, "
           f"at most 200 shown)" + (": " + ", ".join(f"#{c}" for c in versions)
                                    if versions else "."))
if st.button(f"Reassign {len(versions)} cases", key="reassign_go", type="primary",
             disabled=not versions or target is None):
    try:
        with session_scope(engine) as session:
            results = bulk_reassign(session, case_ids=list(versions), assignee_id=target,
                                    actor=actor, now=utcnow(), expected_versions=versions)
    except CaseDeskError as exc:
        ui.show_error(exc)
        st.stop()
    done = [r for r in results if r.ok]
    st.session_state.pop(f"{table_key}_shown", None)
    st.session_state["reassign_round"] = st.session_state.get("reassign_round", 0) + 1
    st.session_state["reassign_outcome"] = (
        len(done), [f"Case {r.case_id}: {r.message}" for r in results if not r.ok])
    st.rerun()
