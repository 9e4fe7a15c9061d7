"""The admin pages, driven through the entry script as an admin would use them."""

from __future__ import annotations

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core.models import AuditEntry, SlaRule, User
from core.vocab import Role
from tests.dashboard.conftest import ROOT, click, sign_in, texts


def test_admin_adds_a_user_through_the_users_page(app_db, make_app):
    app_db.add_user("root", role=Role.ADMIN)
    at = sign_in(make_app(), "root")
    at.switch_page("pages/admin_users.py").run()
    at.text_input(key="au_username").input("maria.l")
    at.text_input(key="au_full_name").input("María López")
    at.selectbox(key="au_role").select("coordinator")
    at.text_input(key="au_new_team").input("Breast West")
    at.text_input(key="au_password").input("a long enough pass")
    click(at, "Add user")
    at.run()
    assert not at.exception
    assert "Added maria.l" in texts(at)
    with app_db.session(write=False) as s:
        user = s.exec(select(User).where(User.username == "maria.l")).one()
        assert user.role == "coordinator" and user.team_id is not None


def test_a_weak_password_is_refused_with_a_message(app_db, make_app):
    app_db.add_user("root", role=Role.ADMIN)
    at = sign_in(make_app(), "root")
    at.switch_page("pages/admin_users.py").run()
    at.text_input(key="au_username").input("weak")
    at.text_input(key="au_full_name").input("Weak Password")
    at.selectbox(key="au_role").select("admin")
    at.text_input(key="au_password").input("short")
    click(at, "Add user")
    at.run()
    assert not at.exception
    with app_db.session(write=False) as s:
        assert s.exec(select(User).where(User.username == "weak")).first() is None
    assert at.error, "the refusal is shown"


def test_admin_changes_an_sla_limit(app_db, make_app):
    app_db.add_user("root", role=Role.ADMIN)
    at = sign_in(make_app(), "root")
    at.switch_page("pages/admin_sla.py").run()
    at.number_input(key="sla_days_referral").set_value(9)
    click_save = [b for b in at.button if b.key == "sla_save_referral"]
    click_save[0].click()
    at.run()
    assert not at.exception
    with app_db.session(write=False) as s:
        assert s.get(SlaRule, "referral").limit_days == 9


def test_a_manager_is_not_offered_the_admin_pages_and_is_refused_when_reaching_them(
        app_db, make_app):
    app_db.add_user("mona", role=Role.MANAGER)
    at = sign_in(make_app(), "mona")
    token = at.session_state["auth_token"]
    for page in ("admin_users.py", "admin_sla.py"):
        with pytest.raises(ValueError):
            at.switch_page(f"pages/{page}")
        direct = AppTest.from_file(str(ROOT / "dashboard" / "pages" / page), default_timeout=30)
        direct.session_state["auth_token"] = token
        direct.run()
        assert not direct.exception
        assert "may not use this page" in texts(direct)
    with app_db.session(write=False) as s:
        denied = s.exec(select(AuditEntry).where(AuditEntry.action == "access.denied")).all()
    assert len(denied) == 2
