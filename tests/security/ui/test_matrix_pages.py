"""The permission matrix through the pages (AppTest): for every role and every page of
the registry, the page file run directly with a live session either renders or refuses
with one 'denied' audit row; the case page shows a case of one's own team and refuses -
and audits - a case of another team reached by URL."""

from __future__ import annotations

import pytest
from sqlmodel import func, select
from streamlit.testing.v1 import AppTest

from core.db import session_scope
from core.models import AuditEntry, Team
from core.permissions import can
from core.vocab import Role
from dashboard import nav
from tests.dashboard.conftest import ROOT, sign_in
from tests.factories import actor_for, make_case, make_team

CELLS = [(role, spec) for role in Role for spec in nav.PAGES]


def _denials(app_db, user_id: int) -> int:
    with app_db.session(write=False) as s:
        return s.exec(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.user_id == user_id, AuditEntry.outcome == "denied")).one()


def _run_page(path: str, token: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard" / path), default_timeout=60)
    at.session_state["auth_token"] = token
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at.run()


@pytest.mark.slow
@pytest.mark.parametrize(("role", "spec"), CELLS,
                         ids=[f"{r.value}-{s.path.split('/')[-1][:-3]}" for r, s in CELLS])
def test_each_page_renders_or_refuses_by_the_matrix(app_db, make_app, role, spec):
    user = app_db.add_user("u", role=role)
    token = sign_in(make_app(), "u").session_state["auth_token"]
    before = _denials(app_db, user.id)
    at = _run_page(spec.path, token)
    assert not at.exception, [e.value for e in at.exception]
    refused = any("may not use this page" in e.value for e in at.error)
    if can(actor_for(user), spec.action):
        assert not refused
        assert _denials(app_db, user.id) == before
    else:
        assert refused
        assert _denials(app_db, user.id) == before + 1


@pytest.mark.parametrize("role", [Role.COORDINATOR, Role.MANAGER])
def test_the_case_page_shows_own_team_cases_and_refuses_other_teams(app_db, make_app, role):
    user = app_db.add_user("u", role=role)
    with session_scope(app_db.engine) as s:
        own = make_case(s, now=app_db.now, team=s.get(Team, user.team_id)).id
        other = make_case(s, now=app_db.now, team=make_team(s, now=app_db.now)).id
    token = sign_in(make_app(), "u").session_state["auth_token"]

    at = _run_page("pages/case.py", token, {"case": str(own)})
    assert not at.exception and not at.error
    before = _denials(app_db, user.id)
    at = _run_page("pages/case.py", token, {"case": str(other)})
    assert not at.exception
    assert any("may not" in e.value for e in at.error)
    assert _denials(app_db, user.id) == before + 1
    with app_db.session(write=False) as s:
        row = s.exec(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert (row.action, row.case_id, row.outcome) == ("access.denied", other, "denied")
