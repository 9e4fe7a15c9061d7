"""Funnel of a cohort, the pipeline now, and closed cases by reason (issue 6, item 1)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import analytics
from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.permissions import Action
from core.timeutil import utcnow
from dashboard import charts, insight, ui
from dashboard.guard import require_page

actor = require_page(Action.VIEW_ANALYTICS)
now = utcnow()
ui.header("Funnel and pipeline", actor,
          subtitle="How far the cases of a period got, and where open cases wait now.")

filt = insight.filter_bar(actor, key="flow")
try:
    with session_scope(get_engine(), write=False) as session:
        funnel = analytics.funnel(session, actor, filt)
        pipeline = analytics.pipeline(session, actor, filt, now=now)
        closed = analytics.closed_by_reason(session, actor, filt)
except CaseDeskError as exc:
    ui.show_error(exc)
    st.stop()

st.caption(insight.caption(filt))
m = st.columns(4)
cohort = int(funnel["reached"].iloc[0])
seen = int(funnel["reached"].iloc[-1])
m[0].metric("Cases in the cohort", f"{cohort:,}")
m[1].metric("Reached 'seen'", f"{seen:,}", help="Seen by the specialist, or further")
m[2].metric("Open now", f"{int(pipeline['open'].sum()):,}")
m[3].metric("Stalled now", f"{int(pipeline['stalled'].sum()):,}",
            help="Past the time limit of their state, or flagged stalled by the scan")

left, right = st.columns(2)
left.plotly_chart(charts.funnel(funnel), key="chart_funnel")
right.plotly_chart(charts.pipeline(pipeline), key="chart_pipeline")

# The first step has no step before it: show a dash, not "None".
table = funnel.assign(conversion=[
    "—" if pd.isna(c) else f"{float(c):.0%}" for c in funnel["conversion"]])
st.dataframe(
    table[["label", "reached", "conversion", "share"]], hide_index=True, key="funnel_table",
    column_config={
        "label": "State",
        "reached": st.column_config.NumberColumn("Reached", format="%d"),
        "conversion": st.column_config.TextColumn("From previous"),
        "share": st.column_config.NumberColumn("Of cohort", format="percent"),
    },
)
st.plotly_chart(charts.closed_by_reason(closed), key="chart_closed")
