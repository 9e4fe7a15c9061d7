"""Pages a role may not use are not offered to it and refuse when reached anyway."""

from __future__ import annotations

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.models import AuditEntry
from core.vocab import Role
from dashboard import nav
from tests.dashboard.conftest import ROOT, sign_in
from tests.factories import actor_for


def test_a_page_reached_without_signing_in_shows_the_sign_in_form(app_db):
    at = AppTest.from_file(str(ROOT / "dashboard/pages/case.py"), default_timeout=30).run()
    assert not at.exception
    assert at.text_input(key="login_username")
    assert not at.title or at.title[0].value == "Case Desk"


def test_a_page_reached_by_a_role_that_may_not_use_it_is_refused_and_audited(app_db,
                                                                               make_app):
    app_db.add_user("root", role=Role.ADMIN)
    at = sign_in(make_app(), "root")
    token = at.session_state["auth_token"]
    # Admins run the service; they do not open cases, so New case is not offered...
    with pytest.raises(ValueError):
        at.switch_page("pages/new_case.py")
    # ...and running the page file directly (a stale link) is refused.
    direct = AppTest.from_file(str(ROOT / "dashboard/pages/new_case.py"), default_timeout=30)
    direct.session_state["auth_token"] = token
    direct.run()
    assert not direct.exception
    assert any("may not use this page" in e.value for e in direct.error)
    with app_db.session(write=False) as s:
        denied = s.exec(select(AuditEntry).where(AuditEntry.action == "access.denied")).all()
    assert len(denied) == 1 and denied[0].outcome == "denied"


@pytest.mark.parametrize("role", list(Role))
def test_the_sidebar_offers_exactly_the_pages_the_role_may_use(app_db, make_app, role):
    user = app_db.add_user("u", role=role)
    at = sign_in(make_app(), "u")
    assert not at.exception
    offered = {spec.path for spec in nav.pages_for(actor_for(user))}
    assert "pages/my_day.py" in offered
    for spec in nav.PAGES:
        if spec.path in offered:
            at.switch_page(spec.path)  # registered: no ValueError
        else:
            with pytest.raises(ValueError):
                at.switch_page(spec.path)
