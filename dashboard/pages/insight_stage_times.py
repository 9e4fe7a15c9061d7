"""Time spent in each state: median and 90th percentile against the SLA limit (item 2)."""

from __future__ import annotations

import streamlit as st

from core import analytics
from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.permissions import Action
from core.vocab import FUNNEL
from dashboard import charts, insight, ui
from dashboard.guard import require_page

actor = require_page(Action.VIEW_ANALYTICS)
ui.header("Stage times", actor,
          subtitle="How long cases stay in each state, from the stored time of every move.")

SPLIT_NAMES = {None: "No split", "month": "By month", "team": "By team",
               "coordinator": "By coordinator", "insurer": "By insurer",
               "facility": "By source facility"}
filt = insight.filter_bar(actor, key="stages", state=True, state_label="Stage")
by = st.segmented_control("Split", list(SPLIT_NAMES), key="stages_split",
                          format_func=lambda v: SPLIT_NAMES[v], default=None)
try:
    with session_scope(get_engine(), write=False) as session:
        table = analytics.stage_times(session, actor, filt, by=by)
except CaseDeskError as exc:
    ui.show_error(exc)
    st.stop()

st.caption(insight.caption(filt) + " A stay counts in the month the case moved on."
           + (" A case with records from several facilities counts under each."
              if by == "facility" else ""))
if by == "month":
    labels = [s.label for s in FUNNEL if s.label in set(table["label"])]
    if labels:
        pick = st.selectbox("State", labels, key="stages_trend_state")
        st.plotly_chart(charts.stage_trend(table, pick), key="chart_stage_trend")
    else:
        st.plotly_chart(charts.stage_trend(table, ""), key="chart_stage_trend")
else:
    st.plotly_chart(charts.stage_times(table, by=by), key="chart_stage_times")

st.dataframe(
    table[["label", "group", "n", "median_days", "p90_days", "sla_days"]],
    hide_index=True, key="stage_table",
    column_config={
        "label": "State",
        "group": SPLIT_NAMES[by] if by else None,
        "n": st.column_config.NumberColumn("Stays", format="%d"),
        "median_days": st.column_config.NumberColumn("Median (days)", format="%.1f"),
        "p90_days": st.column_config.NumberColumn("90th percentile (days)", format="%.1f"),
        "sla_days": st.column_config.NumberColumn("SLA limit (days)", format="%d"),
    },
)
