"""Admin: the audit log. Filters, newest first, 100 rows a page; a button that checks the
hash chain like `casedesk audit verify`.

Every value is shown as plain text in st.dataframe: a detail can hold text a user typed,
and st.table would render its cells as Markdown (links, images). There is no download
here, and the table's own download and copy are off (`client.disableDataExport`) - a copy
of the log would leave the audit trail; operators use the database backup instead. Each
query is audited (`audit.view`) once per distinct filter and page.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import streamlit as st

from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.permissions import Action
from core.queries.audit_log import AuditFilter, audit_choices, search_audit, verify
from core.timeutil import utcnow
from dashboard import ui
from dashboard.guard import require_page

PAGE = 100

actor = require_page(Action.VIEW_AUDIT)
engine = get_engine()
now = utcnow()

ui.header("Audit log", actor, subtitle="Sign-ins, denials, views, searches, changes and "
          "exports. Case ids, never names.")

with session_scope(engine, write=False) as session:
    choices = audit_choices(session, actor=actor, now=now)

# UTC days, as AuditFilter reads them: with the service's local today, in the evening west
# of UTC the newest entries (already tomorrow in UTC) fell outside the default period.
today = now.date()
c1, c2, c3, c4, c5 = st.columns([3, 2, 3, 2, 2])
period = c1.date_input("Period (UTC days)", value=(today - timedelta(days=7), today),
                       key="al_period", max_value=today)
user_names = {None: "Anyone", **dict(choices["users"])}
user_id = c2.selectbox("User", list(user_names), format_func=lambda u: user_names[u],
                       key="al_user")
action_options = [None] + sorted({a.split(".")[0] + "." for a in choices["actions"]
                                  if "." in a} | set(choices["actions"]))
action = c3.selectbox("Action", action_options,
                      format_func=lambda a: "Any action" if a is None else
                      (f"{a}* (all)" if a.endswith(".") else a), key="al_action")
case_id = c4.number_input("Case id", min_value=0, step=1, value=0, key="al_case",
                          help="0: any case")
outcome = c5.selectbox("Outcome", [None, *choices["outcomes"]],
                       format_func=lambda o: "Any" if o is None else o, key="al_outcome")

start, end = (period if isinstance(period, tuple) and len(period) == 2
              else (period[0], period[0]) if isinstance(period, tuple) and period
              else (None, None))
filters = AuditFilter(start=start, end=end, user_id=user_id, action=action,
                      case_id=int(case_id) or None, outcome=outcome)

# Keyset paging: a stack of "before" ids, reset whenever the filter changes.
key = json.dumps(filters.describe(), sort_keys=True)
if st.session_state.get("al_filter_key") != key:
    st.session_state["al_filter_key"] = key
    st.session_state["al_pages"] = [None]
pages: list = st.session_state["al_pages"]

view = f"{key}|{pages[-1]}"
try:
    with session_scope(engine) as session:  # a write: the view itself is audited
        # one row more than a page: whether there is an older page, without offering
        # one that turns out empty
        rows = search_audit(session, actor=actor, now=now, filters=filters, limit=PAGE,
                            look_ahead=True, before_id=pages[-1],
                            record_view=st.session_state.get("al_recorded") != view)
    st.session_state["al_recorded"] = view
except CaseDeskError as exc:
    ui.show_error(exc)
    st.stop()
has_older = len(rows) > PAGE
rows = rows[:PAGE]

if not rows:
    st.info("No audit entries match these filters.")
else:
    table = pd.DataFrame([{
        "id": r.id,
        "time": ui.exact(r.at),
        "user": r.username or ("system" if r.user_id is None else f"#{r.user_id}"),
        "role": r.role or "",
        "session": r.session_id or "",
        "action": r.action,
        "case": "" if r.case_id is None else str(r.case_id),
        "outcome": r.outcome,
        "detail": json.dumps(r.detail, ensure_ascii=False, sort_keys=True) if r.detail
        else "",
    } for r in rows])
    st.dataframe(table, hide_index=True, key="al_table")

prev_col, info_col, next_col = st.columns([1, 4, 1])
if len(pages) > 1 and prev_col.button("Newer", key="al_newer", icon=":material/arrow_back:"):
    pages.pop()
    st.rerun()
info_col.caption(f"Page {len(pages)} · {len(rows)} entries shown, newest first")
if has_older and next_col.button("Older", key="al_older",
                                         icon=":material/arrow_forward:"):
    pages.append(rows[-1].id)
    st.rerun()

st.divider()
if st.button("Verify the hash chain", key="al_verify", icon=":material/verified:"):
    with session_scope(engine, write=False) as session:
        report = verify(session, actor=actor, now=utcnow())
    if report.ok:
        st.success(f"Audit chain OK: {report.rows:,} rows checked.")
    else:
        st.error(f"Audit chain BROKEN at row {report.first_bad_id}: {report.problem}")
