"""Admin: the SLA limit of each state. Saving recomputes every affected deadline."""

from __future__ import annotations

import streamlit as st

from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.permissions import Action
from core.sla_rules import MAX_LIMIT_DAYS, list_rules, update_rule
from core.timeutil import utcnow
from dashboard import ui
from dashboard.guard import require_page

actor = require_page(Action.MANAGE_SLA)
now = utcnow()
engine = get_engine()

ui.header("SLA limits", actor, subtitle="Time allowed in each state before a case is stalled")
st.caption("Due soon from 75 % of the limit, stalled at 100 %, escalated at 150 %. "
           "Business days skip weekends and the configured public holidays.")

with session_scope(engine, write=False) as session:
    rules = [(r.state, r.limit_days, r.business_days, r.updated_at) for r in list_rules(session)]

for state, days, business, updated in rules:
    with st.form(f"sla_{state}"):
        c1, c2, c3, c4 = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
        c1.markdown(f"**{ui.state_label(state)}**  \nchanged {ui.human(updated, now)}")
        # No min/max on the widget: out of range it only turns red and Save does nothing;
        # update_rule refuses the value with a message instead.
        new_days = c2.number_input(f"Limit (days, 1-{MAX_LIMIT_DAYS})", value=days, step=1,
                                   key=f"sla_days_{state}")
        new_business = c3.checkbox("Business days", value=business, key=f"sla_bd_{state}")
        if c4.form_submit_button("Save", key=f"sla_save_{state}"):
            try:
                with session_scope(engine) as session:
                    _, moved = update_rule(session, state=state, limit_days=int(new_days),
                                           business_days=new_business, actor=actor,
                                           now=utcnow())
                st.success(f"Saved. {moved:,} case deadlines recomputed.")
            except CaseDeskError as exc:
                ui.show_error(exc)
