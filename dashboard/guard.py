"""Who is signed in, and the refusal for a page a role may not use.

`app.py` checks the server-side session on every rerun (`authenticate`) and hands the
actor to the page it runs through a per-run, per-thread slot (never session_state, which
outlives the run). A page calls `require_page(action)` first thing. A page that runs
without the entry script - Streamlit runs a file of the pages/ folder directly on the
very first run of a fresh server process, and a stale link can land there - gets the
full server-side check here, and the sign-in form if there is no live session.
"""

from __future__ import annotations

import threading

import streamlit as st

from core import timeutil
from core.actor import Actor
from core.audit import record_now
from core.auth import SessionEnded, check_session
from core.db import get_engine, session_scope
from core.permissions import Action, can
from core.vocab import AuditOutcome

TOKEN_KEY = "auth_token"
ENDED_KEY = "_session_ended_reason"
# Each Streamlit session runs its script on its own thread, one run at a time.
_run = threading.local()


def authenticate() -> Actor | None:
    """Check the token kept in this browser session against the database. Returns the
    actor, or None (and forgets the token) when there is no live session."""
    _run.actor = None
    token = st.session_state.get(TOKEN_KEY)
    if not token:
        return None
    try:
        with session_scope(get_engine()) as session:
            actor = check_session(session, token=token, now=timeutil.utcnow())
    except SessionEnded as ended:
        st.session_state.pop(TOKEN_KEY, None)
        st.session_state[ENDED_KEY] = str(ended)
        return None
    _run.actor = actor
    return actor


def end_run() -> None:
    _run.actor = None


def current_actor() -> Actor | None:
    actor = getattr(_run, "actor", None)
    if isinstance(actor, Actor):
        return actor
    return authenticate()


def require_page(action: Action) -> Actor:
    """The signed-in actor, or stop the page: not signed in (show the sign-in form), or
    the role may not use it (refused, and audited as access.denied)."""
    actor = current_actor()
    if actor is None:
        from dashboard import login

        login.render()
        st.stop()
    if not can(actor, action):
        record_now(get_engine(), actor=actor, action="access.denied", now=timeutil.utcnow(),
                   outcome=AuditOutcome.DENIED, detail={"page": action.value})
        st.error(f"Your role ({actor.role.value}) may not use this page.")
        st.stop()
    return actor
