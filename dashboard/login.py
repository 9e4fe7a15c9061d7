"""The sign-in form (local accounts; single sign-on through st.login when configured)."""

from __future__ import annotations

import streamlit as st

from core import timeutil
from core.auth import sign_in, sign_in_sso
from core.config import get_settings
from core.db import get_engine, session_scope
from core.errors import AuthError
from dashboard import guard


def _start(token: str) -> None:
    st.session_state.clear()
    st.session_state[guard.TOKEN_KEY] = token


def _sso() -> None:
    """The identity provider signed the user in: map the e-mail to an account."""
    user = st.user
    email = user.get("email") if user.get("is_logged_in") else None
    if not email:
        return
    try:
        with session_scope(get_engine()) as session:
            _, token = sign_in_sso(session, email=str(email), now=timeutil.utcnow())
    except AuthError as exc:
        st.error(str(exc))
        st.button("Use another account", on_click=st.logout)
        st.stop()
    _start(token)
    st.rerun()


def render() -> None:
    settings = get_settings()
    st.title("Case Desk")
    st.caption("Case management for the second-opinion service")
    ended = st.session_state.pop(guard.ENDED_KEY, None)
    if ended:
        st.info(ended)
    if settings.oidc_enabled:
        _sso()
    with st.form("sign_in", enter_to_submit=True):
        username = st.text_input("Username", key="login_username", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            with session_scope(get_engine()) as session:
                _, token = sign_in(session, username=username, password=password,
                                   now=timeutil.utcnow())
        except AuthError as exc:
            st.error(str(exc))
            st.caption(f"After {settings.lockout_threshold} failed attempts in a row an "
                       f"account is locked for {settings.lockout_minutes} minutes.")
        else:
            _start(token)
            st.rerun()
    if settings.demo_mode:
        # Demo mode only (never production): the seeded accounts and their passwords.
        from core.demo import DEMO_PASSWORDS

        st.caption("Demo accounts: " + ", ".join(
            f"{role.value} / {password}" for role, password in DEMO_PASSWORDS.items()))
    if settings.oidc_enabled:
        st.divider()
        st.button("Sign in with single sign-on", on_click=st.login, icon=":material/key:")
