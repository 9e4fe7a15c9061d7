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


MY_PAGES = ("pages/my_day.py", "pages/case.py", "pages/new_case.py")


@pytest.mark.parametrize("role", list(Role))
def test_each_page_run_directly_refuses_a_role_that_may_not_use_it(app_db, make_app, role):
    user = app_db.add_user("u", role=role)
    token = sign_in(make_app(), "u").session_state["auth_token"]
    actor = actor_for(user)
    for spec in nav.PAGES:
        if spec.path not in MY_PAGES:
            continue
        direct = AppTest.from_file(str(ROOT / "dashboard" / spec.path), default_timeout=30)
        direct.session_state["auth_token"] = token
        direct.run()
        assert not direct.exception, (spec.path, direct.exception)
        refused = any("may not use this page" in e.value for e in direct.error)
        assert refused == (spec not in nav.pages_for(actor)), spec.path


def test_single_sign_on_maps_the_e_mail_to_an_account(app_db, make_app, monkeypatch):
    monkeypatch.setenv("CASEDESK_OIDC_ENABLED", "true")
    from core.config import get_settings

    get_settings.cache_clear()
    user = app_db.add_user("nina")
    with app_db.session() as s:
        from core.models import User

        row = s.get(User, user.id)
        row.email = "nina@clinic.example"
        s.add(row)
    at = make_app()
    at.user["is_logged_in"] = True
    at.user["email"] = "Nina@Clinic.example"
    at.run()
    assert not at.exception, at.exception
    assert "My day" in [t.value for t in at.title]

    stranger = make_app()
    stranger.user["is_logged_in"] = True
    stranger.user["email"] = "nobody@clinic.example"
    stranger.run()
    assert any("No active Case Desk account" in e.value for e in stranger.error)
    assert "auth_token" not in stranger.session_state
