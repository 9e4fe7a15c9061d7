"""My day: the headline numbers and the triage queue, most urgent first."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.permissions import Action, Scope, scope
from core.queries.triage import (
    Assignee,
    Cursor,
    TriageFilters,
    filter_choices,
    headline,
    last_scan_minutes,
    queue,
)
from core.timeutil import utcnow
from core.vocab import FUNNEL, FlagKind, Role
from dashboard import ui
from dashboard.guard import require_page

actor = require_page(Action.VIEW_QUEUE)
now = utcnow()
engine = get_engine()
page_size = ui.get_settings().page_size

ui.header("My day", actor)

# plain_reads: no BEGIN/COMMIT round trips around these few SELECTs on PostgreSQL.
with session_scope(engine, write=False, plain_reads=True) as session:
    choices = filter_choices(session, actor=actor)
    # Only the time of the last run: counting every open flag of the service on each
    # rerun would cost more than the queue itself at 100k cases.
    minutes = last_scan_minutes(session, now=now)
    scan_line = ("No stalled-case scan has run yet" if minutes is None
                 else f"Last stalled-case scan {round(minutes)} min ago")

# --- filters ------------------------------------------------------------------------------
all_teams = scope(actor, Action.VIEW_QUEUE) is Scope.ALL
assignee_options: list[str | int] = [Assignee.ME, Assignee.UNASSIGNED, Assignee.ANYONE]
assignee_names = {Assignee.ME: "My cases", Assignee.UNASSIGNED: "Unassigned",
                  Assignee.ANYONE: "Everyone"}
for uid, name in choices["assignees"]:
    if uid != actor.user_id:
        assignee_options.append(uid)
        assignee_names[uid] = name
default_assignee = Assignee.ME if actor.role is Role.COORDINATOR else Assignee.ANYONE
if actor.role is Role.ADMIN:
    assignee_options.remove(Assignee.ME)

flag_options = [None, "any"] + [k.value for k in FlagKind]
flag_names = {None: "Any case", "any": "Any flag or past the limit",
              **{k.value: ui.label(k.value).capitalize() for k in FlagKind}}

c1, c2, c3, c4 = st.columns([3, 3, 2, 2])
search = c1.text_input("Search name or record number", key="triage_search",
                       placeholder="e.g. O'Brien or MRN000123")
states = c2.multiselect("State", [s.value for s in FUNNEL], key="triage_states",
                        format_func=ui.state_label)
flag = c3.selectbox("Flag", flag_options, key="triage_flag",
                    format_func=lambda v: flag_names[v])
assignee = c4.selectbox("Assignee", assignee_options, key="triage_assignee",
                        index=assignee_options.index(default_assignee),
                        format_func=lambda v: assignee_names[v])
team_id = None
if all_teams and len(choices["teams"]) > 1:
    team_names = {**dict(choices["teams"]), None: "All teams"}
    # One team at a time by default: the whole service's queue is a rarer need and the
    # costliest view (every open case ranked).
    team_id = st.selectbox("Team", list(team_names), key="triage_team",
                           format_func=lambda v: team_names[v])

filters = TriageFilters(states=tuple(states), flag=flag, assignee=assignee, team_id=team_id,
                        search=search or None)

# Paging: a stack of cursors; any change of filters starts again at the first page.
if st.session_state.get("_triage_filters") != filters:
    st.session_state["_triage_filters"] = filters
    st.session_state["_triage_pages"] = []
pages: list[str] = st.session_state["_triage_pages"]
after = Cursor.decode(pages[-1]) if pages else None

try:
    # A search is audited, so it needs a write transaction; browsing does not.
    with session_scope(engine, write=bool(filters.search),
                       plain_reads=not filters.search) as session:
        numbers = headline(session, actor=actor, now=now, team_id=team_id)
        result = queue(session, actor=actor, now=now, filters=filters, after=after,
                       limit=page_size)
except CaseDeskError as exc:
    ui.show_error(exc)
    st.stop()

# --- headline -------------------------------------------------------------------------------
m = st.columns(6)
m[0].metric(numbers.scope_label, numbers.open_cases)
m[1].metric("Stalled", numbers.stalled, help="Past the time limit of their current step")
m[2].metric("Escalated", numbers.escalated, help="At 150 % of the time limit or more")
m[3].metric("At risk", numbers.at_risk,
            help="The remaining steps may not fit before the planned treatment start")
m[4].metric("Appointments this week", numbers.appointments_this_week)
m[5].metric("Records overdue", numbers.records_overdue,
            help="Cases with a requested record past its chase date")
if scan_line:
    st.caption(ui.safe(scan_line))

# --- the queue ------------------------------------------------------------------------------
rows = result.rows
first_row = len(pages) * page_size + 1
if not rows:
    st.info("Nothing in the queue for these filters.")
else:
    st.caption(f"Cases {first_row}-{first_row + len(rows) - 1}, most urgent first. "
               f"Times in {ui.get_settings().timezone}.")
    table = pd.DataFrame({
        "Case": [r.case_id for r in rows],
        "Urgency": [ui.label(r.severity.value if r.severity else "on track").capitalize()
                    if not r.on_hold else "On hold" for r in rows],
        "Patient": [r.patient_name for r in rows],
        "Record no.": [r.mrn for r in rows],
        "State": [ui.state_label(r.state) for r in rows],
        "Why": [r.why for r in rows],
        "Next action": [r.next_action for r in rows],
        "Due": [ui.human(r.due_at, now) if r.due_at else "-" for r in rows],
        "Patient clock": [f"{r.patient_days} d" if r.patient_days is not None else "-"
                          for r in rows],
        "Assignee": [r.assignee or "Unassigned" for r in rows],
    })
    picked = st.dataframe(
        table, hide_index=True, width="stretch", key="queue_table", on_select="rerun",
        selection_mode="single-row",
        column_config={
            "Case": st.column_config.NumberColumn("Case", format="%d", width="small"),
            "Why": st.column_config.TextColumn("Why", width="large"),
            "Next action": st.column_config.TextColumn("Next action", width="medium"),
            "Due": st.column_config.TextColumn(
                "Due", help="When the current step reaches its time limit"),
            "Patient clock": st.column_config.TextColumn(
                "Patient clock", help="Days since the diagnosing biopsy"),
        },
    )
    labels = {r.case_id: f"#{r.case_id} {r.patient_name} - {r.next_action}" for r in rows}
    selected_rows = list(getattr(getattr(picked, "selection", None), "rows", []) or [])
    oc1, oc2 = st.columns([4, 1])
    chosen = oc1.selectbox("Open a case", list(labels), key="open_case_choice",
                           format_func=lambda cid: labels[cid])
    if oc2.button("Open case", key="open_case", type="primary", icon=":material/open_in_new:"):
        ui.open_case(chosen)
    if selected_rows:
        ui.open_case(rows[selected_rows[0]].case_id)

p1, p2, _ = st.columns([1, 1, 6])
if p1.button("Previous page", key="prev_page", disabled=not pages):
    pages.pop()
    st.rerun()
if p2.button("Next page", key="next_page", disabled=result.next_cursor is None):
    pages.append(result.next_cursor.encode())
    st.rerun()
