"""Widgets shared by the analytics and export pages (issue 6): the one filter bar whose
`CaseFilter` the charts and the exports both use, so what is exported is what was shown."""

from __future__ import annotations

from datetime import date, timedelta

import streamlit as st

from core.actor import Actor
from core.analytics.filters import CaseFilter, teams_in_reach
from core.db import get_engine, session_scope
from core.errors import ValidationError
from core.permissions import Action, Scope, scope
from core.timeutil import utcnow
from core.vocab import CaseState
from dashboard import ui

DEFAULT_DAYS = 180


def filter_bar(actor: Actor, *, key: str, action: Action = Action.VIEW_ANALYTICS,
               period: bool = True, state: bool = False,
               state_label: str = "State") -> CaseFilter:
    """Period (cases assessed between two days), team (admins choose; a manager sees
    their own team) and, where it means something, a state."""
    # The cohort is in UTC days (CaseFilter): a local today would keep the evening's
    # newest cases (already tomorrow in UTC) out of reach in zones west of UTC.
    today = utcnow().date()
    cols = st.columns([3, 2, 2] if state else [3, 2])
    start = end = None
    if period:
        chosen = cols[0].date_input(
            "Cases assessed between", value=(today - timedelta(days=DEFAULT_DAYS), today),
            max_value=today, key=f"{key}_period", format="YYYY-MM-DD",
            help="The cohort: cases whose candidacy assessment falls in this period "
                 "(UTC days).")
        if isinstance(chosen, tuple | list) and len(chosen) == 2:
            start, end = chosen
        elif isinstance(chosen, tuple | list) and len(chosen) == 1:
            start = chosen[0]
        elif isinstance(chosen, date):
            start = chosen
    with session_scope(get_engine(), write=False) as session:
        teams = teams_in_reach(session, actor, action)
    team_id = None
    if scope(actor, action) is Scope.ALL:
        names = {None: "All teams", **dict(teams)}
        team_id = cols[1].selectbox("Team", list(names), key=f"{key}_team",
                                    format_func=lambda v: names[v])
    else:
        cols[1].markdown(f"**Team**  \n{ui.safe(dict(teams).get(actor.team_id, '-'))}")
    chosen_state = None
    if state:
        options = [None] + [s.value for s in CaseState]
        chosen_state = cols[2].selectbox(
            state_label, options, key=f"{key}_state",
            format_func=lambda v: "Any" if v is None else CaseState(v).label)
    try:
        return CaseFilter(start=start, end=end, team_id=team_id, state=chosen_state)
    except ValidationError as exc:
        ui.show_error(exc)
        st.stop()
        raise  # pragma: no cover - st.stop() raises


def caption(filt: CaseFilter) -> str:
    f = filt.describe()
    period = f"assessed {f['from'] or 'any time'} to {f['to'] or 'today'}"
    return f"Cohort: cases {period}. Times in days; months and days are UTC."
