"""Admin: accounts. Add a user, disable one; roles and teams shown. Passwords are set
here once and never shown again; a disabled account's sessions end at once."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlmodel import select

from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.models import Team
from core.permissions import Action
from core.timeutil import utcnow
from core.users import create_user, disable_user, list_users
from core.vocab import Role
from dashboard import ui
from dashboard.guard import require_page

actor = require_page(Action.MANAGE_USERS)
engine = get_engine()
now = utcnow()

ui.header("Users", actor, subtitle="Accounts, roles and teams")

with session_scope(engine, write=False) as session:
    users = list_users(session)
    teams = [t.name for t in session.exec(select(Team).order_by(Team.name))]

table = pd.DataFrame(
    [{"username": u.username, "name": u.full_name, "role": u.role, "team": team or "",
      "active": u.is_active,
      "locked": bool(u.locked_until and ui.local(u.locked_until) > ui.local(now)),
      "last sign-in": ui.exact(u.last_login_at) if u.last_login_at else ""}
     for u, team in users])
# st.dataframe shows names as plain text (st.table renders Markdown); its download and
# copy are off for every table (`client.disableDataExport`).
st.dataframe(table, hide_index=True, key="users_table")

left, right = st.columns(2)
with left, st.form("add_user", clear_on_submit=True):
    st.subheader("Add a user")
    username = st.text_input("Username", key="au_username")
    full_name = st.text_input("Full name", key="au_full_name")
    email = st.text_input("E-mail (for single sign-on, optional)", key="au_email")
    role = st.selectbox("Role", [r.value for r in Role], key="au_role")
    team = st.selectbox("Team", [""] + teams, key="au_team",
                        help="Coordinators and managers work inside one team.")
    new_team = st.text_input("…or a new team", key="au_new_team")
    password = st.text_input("Initial password (12+ characters)", type="password",
                             key="au_password")
    if st.form_submit_button("Add user"):
        try:
            with session_scope(engine) as session:
                user = create_user(session, username=username, full_name=full_name,
                                   role=role, password=password, email=email or None,
                                   team_name=(new_team or team or None),
                                   create_team=bool(new_team), actor=actor, now=utcnow())
            st.success(f"Added {user.username}.")
        except CaseDeskError as exc:
            ui.show_error(exc)

with right, st.form("disable_user"):
    st.subheader("Disable a user")
    active = [u.username for u, _ in users if u.is_active and u.id != actor.user_id]
    target = st.selectbox("User", active, key="du_user")
    if st.form_submit_button("Disable") and target:
        try:
            with session_scope(engine) as session:
                disable_user(session, username=target, actor=actor, now=utcnow())
            st.success(f"Disabled {target}; their sessions have ended.")
        except CaseDeskError as exc:
            ui.show_error(exc)
