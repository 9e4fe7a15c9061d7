"""Sign-in through the real entry script: success, failure, lockout, timeouts, sign-out."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from core.models import AuditEntry, User, UserSession
from core.vocab import Role
from tests.dashboard.conftest import click, sign_in, texts


def _audit_actions(app_db) -> list[str]:
    with app_db.session(write=False) as s:
        return list(s.exec(select(AuditEntry.action).order_by(AuditEntry.id)).all())


def test_the_first_screen_is_the_sign_in_form(make_app):
    at = make_app().run()
    assert not at.exception
    assert at.text_input(key="login_username")
    assert "My day" not in texts(at)


def test_sign_in_with_the_right_password_opens_my_day(app_db, make_app):
    app_db.add_user("nina", role=Role.COORDINATOR)
    at = sign_in(make_app(), "nina")
    assert not at.exception, at.exception
    assert "My day" in [t.value for t in at.title]
    assert "login" in _audit_actions(app_db)
    with app_db.session(write=False) as s:
        row = s.exec(select(UserSession)).one()
    # The database keeps only the hash of the token the browser holds.
    assert row.id != at.session_state["auth_token"] and len(row.id) == 64


def test_a_wrong_password_gets_a_generic_message(app_db, make_app):
    app_db.add_user("nina")
    at = sign_in(make_app(), "nina", "wrong")
    assert not at.exception
    assert "Wrong username or password." in [e.value for e in at.error]
    at2 = sign_in(make_app(), "nobody", "wrong")
    assert "Wrong username or password." in [e.value for e in at2.error]
    assert _audit_actions(app_db).count("login.failed") == 2


def test_repeated_failures_lock_the_account_even_for_the_right_password(app_db, make_app):
    app_db.add_user("nina")
    at = make_app()
    for _ in range(5):  # lockout_threshold defaults to 5
        at = sign_in(at, "nina", "wrong")
    at = sign_in(at, "nina")  # right password, but locked
    assert "Wrong username or password." in [e.value for e in at.error]
    assert "auth_token" not in at.session_state
    with app_db.session(write=False) as s:
        user = s.exec(select(User).where(User.username == "nina")).one()
        assert user.locked_until is not None
    assert "lockout" in _audit_actions(app_db)


def test_an_idle_session_is_ended_on_the_next_rerun(app_db, make_app):
    app_db.add_user("nina")
    at = sign_in(make_app(), "nina")
    assert "auth_token" in at.session_state
    with app_db.session() as s:
        row = s.exec(select(UserSession)).one()
        row.last_seen_at = row.last_seen_at - timedelta(minutes=16)  # idle limit 15
        s.add(row)
    at.run()
    assert not at.exception
    assert at.text_input(key="login_username")
    assert any("inactivity" in i.value for i in at.info)
    with app_db.session(write=False) as s:
        row = s.exec(select(UserSession)).one()
        assert row.end_reason == "idle" and row.ended_at is not None


def test_a_session_past_its_absolute_limit_is_ended_however_busy(app_db, make_app):
    app_db.add_user("nina")
    at = sign_in(make_app(), "nina")
    with app_db.session() as s:
        row = s.exec(select(UserSession)).one()
        row.created_at = row.created_at - timedelta(hours=13)  # absolute limit 12 h
        s.add(row)
    at.run()
    assert at.text_input(key="login_username")
    with app_db.session(write=False) as s:
        assert s.exec(select(UserSession)).one().end_reason == "absolute"


def test_sign_out_ends_the_server_side_session(app_db, make_app):
    app_db.add_user("nina")
    at = sign_in(make_app(), "nina")
    token = at.session_state["auth_token"]
    click(at, "Sign out")
    at.run()
    assert at.text_input(key="login_username")
    with app_db.session(write=False) as s:
        assert s.exec(select(UserSession)).one().end_reason == "signed_out"
    # The old token is dead even if someone kept a copy.
    at.session_state["auth_token"] = token
    at.run()
    assert at.text_input(key="login_username")


def test_a_disabled_account_cannot_sign_in(app_db, make_app):
    user = app_db.add_user("nina")
    with app_db.session() as s:
        u = s.get(User, user.id)
        u.is_active = False
        s.add(u)
    at = sign_in(make_app(), "nina")
    assert "Wrong username or password." in [e.value for e in at.error]
    assert "auth_token" not in at.session_state


def test_demo_accounts_are_shown_only_in_demo_mode(app_db, make_app, monkeypatch):
    from core.config import get_settings

    at = make_app().run()
    assert not any("Demo accounts" in c.value for c in at.caption)
    monkeypatch.setenv("CASEDESK_DEMO_MODE", "true")
    get_settings.cache_clear()
    at = make_app().run()
    assert any("Demo accounts: coordinator /" in c.value for c in at.caption)
