"""How second opinions turn out (item 4) and how soon patients get one (item 5)."""

from __future__ import annotations

import streamlit as st

from core import analytics
from core.config import get_settings
from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.permissions import Action
from core.timeutil import utcnow
from dashboard import charts, insight, ui
from dashboard.guard import require_page

actor = require_page(Action.VIEW_ANALYTICS)
now = utcnow()
ui.header("Outcomes and time to opinion", actor,
          subtitle="What second opinions change, and whether patients are seen in time.")

filt = insight.filter_bar(actor, key="outcomes")
try:
    with session_scope(get_engine(), write=False) as session:
        mix = analytics.outcomes(session, actor, filt)
        speed = analytics.time_to_opinion(session, actor, filt)
        soon = analytics.crossing_soon(session, actor, filt, now=now, tz=get_settings().tz)
except CaseDeskError as exc:
    ui.show_error(exc)
    st.stop()

st.caption(insight.caption(filt))
left, right = st.columns(2)
left.plotly_chart(charts.outcomes(mix, kind="diagnosis",
                                  benchmark_label=analytics.BENCHMARK_LABEL),
                  key="chart_outcome_diagnosis")
right.plotly_chart(charts.outcomes(mix, kind="plan"), key="chart_outcome_plan")
st.caption(
    "◆ Benchmark: " + analytics.BENCHMARK_LABEL + " - 12% confirmed, 66% refined, "
    "21% changed. It is a general-medicine benchmark, not a breast-cancer one: read it as "
    "context, not as a target. Bars show 95% Wilson confidence intervals.")

st.subheader("Time to opinion")
st.plotly_chart(charts.time_to_opinion(speed), key="chart_time_to_opinion")
st.dataframe(
    speed, hide_index=True, key="opinion_table",
    column_config={"month": "Month seen", "seen": st.column_config.NumberColumn("Seen"),
                   **{f"within_{d}": None for d in (30, 45, 60)},
                   **{f"share_{d}": st.column_config.NumberColumn(f"Within {d} days",
                                                                  format="percent")
                      for d in (30, 45, 60)}})

st.subheader("Crossing 45 days in the next week")
st.caption("Open cases not yet seen whose patient clock (days since biopsy) reaches 45 "
           "within 7 days. Surgery within about 6 to 8 weeks of diagnosis matters.")
if soon.empty:
    st.success("No open case crosses 45 days in the next week.")
else:
    st.dataframe(
        soon.assign(state=[ui.state_label(s) for s in soon["state"]],
                    appointment=[ui.exact(a) if a is not None and a == a else "-"
                                 for a in soon["appointment_at"]])
        [["case_id", "state", "coordinator", "days_since_biopsy", "crosses_on", "appointment"]],
        hide_index=True, key="crossing_table",
        column_config={"case_id": st.column_config.NumberColumn("Case", format="%d"),
                       "state": "State", "coordinator": "Coordinator",
                       "days_since_biopsy": st.column_config.NumberColumn("Days since biopsy"),
                       "crosses_on": st.column_config.DateColumn("Reaches 45 days"),
                       "appointment": "Appointment"})
