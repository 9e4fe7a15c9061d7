"""Case Desk dashboard entry point: `streamlit run dashboard/app.py`.

Every rerun: page config, the server-side session check (idle and absolute timeouts
against the UserSession row; the browser keeps only a random token), then either the
sign-in form or the navigation built from the signed-in user's role (dashboard/nav.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the project root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from core import timeutil  # noqa: E402
from core.auth import sign_out_everywhere  # noqa: E402
from core.config import get_settings  # noqa: E402
from core.db import get_engine, session_scope  # noqa: E402
from dashboard import guard, login, nav  # noqa: E402

st.set_page_config(page_title="Case Desk", page_icon=":material/medical_services:",
                   layout="wide")
# Belt and braces with .streamlit/config.toml: tables must not offer their own CSV
# download (it would bypass the audited, de-identified export).
st.set_option("client.disableDataExport", True)
st.set_option("client.showErrorDetails", "none")


def _sign_out() -> None:
    token = st.session_state.get(guard.TOKEN_KEY)
    with session_scope(get_engine()) as session:
        # Signing out ends this user's sessions in every browser, not just this one.
        sign_out_everywhere(session, token=token, now=timeutil.utcnow())
    st.session_state.clear()
    st.session_state[guard.ENDED_KEY] = "You have signed out."


actor = guard.authenticate()

if actor is None:
    guard.end_run()
    # The sign-in form also answers at every page's address: a bookmark, a case link or a
    # reload (a new browser session) shows it there instead of "Page not found", and after
    # signing in that page runs (and refuses a role that may not use it).
    signin = [st.Page(login.render, title="Sign in", icon=":material/login:",
                      url_path="signin", default=True)]
    signin += [st.Page(login.render, title="Sign in", icon=":material/login:",
                       url_path=Path(spec.path).stem) for spec in nav.PAGES]
    page = st.navigation(signin, position="hidden")
    page.run()
    st.stop()

specs = nav.pages_for(actor)
sections: dict[str, list] = {}
default_done = False
for spec in specs:
    is_default = spec.default and not default_done
    default_done = default_done or is_default
    sections.setdefault(spec.group, []).append(
        st.Page(spec.path, title=spec.title, icon=spec.icon, default=is_default)
    )
if specs and not default_done:
    first = next(iter(sections.values()))
    first[0] = st.Page(specs[0].path, title=specs[0].title, icon=specs[0].icon, default=True)
ordered = {g: sections[g] for g in nav.GROUPS if g in sections}
ordered.update({g: p for g, p in sections.items() if g not in ordered})

with st.sidebar:
    st.markdown(f"**Case Desk** · {actor.username}")
    st.caption(f"{actor.role.value.capitalize()}"
               + (" · demo data" if get_settings().demo_mode else ""))
    st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=_sign_out)

page = st.navigation(ordered, position="sidebar", expanded=True)
try:
    page.run()
finally:
    guard.end_run()
