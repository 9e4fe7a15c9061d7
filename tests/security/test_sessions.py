"""Sessions (issue 7, item 3): sign-out ends every session of the user everywhere, idle
and absolute timeouts hold to the second, locked and disabled accounts cannot sign in, a
password change ends the other sessions, and each of these leaves an audit row."""

from __future__ import annotations

from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlmodel import select

from core.auth import (
    SessionEnded,
    change_password,
    check_session,
    sign_in,
    sign_out_everywhere,
)
from core.config import get_settings
from core.db import session_scope
from core.errors import AuthError, PermissionDenied
from core.models import AuditEntry, User
from core.vocab import Role
from tests.factories import actor_for, make_team, make_user

PASSWORD = "correct horse battery"
NEW_PASSWORD = "staple purple lantern"
_FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # tests only
HASH = _FAST.hash(PASSWORD)


@pytest.fixture
def people(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        nina = make_user(session, now=now, team=team, username="nina", password_hash=HASH)
        omar = make_user(session, now=now, team=team, username="omar", password_hash=HASH)
        admin = make_user(session, now=now, team=None, role=Role.ADMIN, username="root",
                          password_hash=HASH)
    return nina, omar, admin


def _sign_in(engine, username, now, password=PASSWORD):
    with session_scope(engine) as session:
        return sign_in(session, username=username, password=password, now=now)[1]


def _check(engine, token, now):
    with session_scope(engine) as session:
        return check_session(session, token=token, now=now)


def _actions(engine):
    with session_scope(engine, write=False) as session:
        return [(e.action, e.outcome, e.user_id) for e in
                session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()]


def test_sign_out_in_one_browser_ends_the_users_sessions_in_every_other(engine, now, people):
    nina, omar, _ = people
    ward_pc = _sign_in(engine, "nina", now)
    laptop = _sign_in(engine, "nina", now + timedelta(minutes=1))
    omars = _sign_in(engine, "omar", now)
    with session_scope(engine) as session:
        ended = sign_out_everywhere(session, token=laptop, now=now + timedelta(minutes=2))
    assert ended == 2
    for token in (ward_pc, laptop):
        with pytest.raises(SessionEnded):
            _check(engine, token, now + timedelta(minutes=3))
    assert _check(engine, omars, now + timedelta(minutes=3)).user_id == omar.id
    actions = _actions(engine)
    assert ("logout", "ok", nina.id) in actions
    assert ("session.ended", "ok", nina.id) in actions
    # The audit row names the session by a hash prefix, never the token itself.
    with session_scope(engine, write=False) as session:
        rows = session.exec(select(AuditEntry).where(AuditEntry.action == "logout")).all()
    assert all(laptop not in (r.session_id or "") + (r.detail or "") for r in rows)


def test_a_signed_out_token_stays_dead(engine, now, people):
    token = _sign_in(engine, "nina", now)
    with session_scope(engine) as session:
        sign_out_everywhere(session, token=token, now=now)
        assert sign_out_everywhere(session, token=token, now=now) == 0
        assert sign_out_everywhere(session, token="forged", now=now) == 0
    with pytest.raises(SessionEnded):
        _check(engine, token, now)


def test_idle_timeout_ends_the_session_one_second_after_the_limit(engine, now, people):
    idle = timedelta(minutes=get_settings().session_idle_minutes)
    token = _sign_in(engine, "nina", now)
    assert _check(engine, token, now + idle)  # exactly at the limit: still alive
    later = now + idle  # the check above refreshed last_seen_at
    with pytest.raises(SessionEnded, match="inactivity"):
        _check(engine, token, later + idle + timedelta(seconds=1))
    with pytest.raises(SessionEnded):  # and it does not come back
        _check(engine, token, later + timedelta(seconds=1))


def test_absolute_timeout_ends_a_busy_session(engine, now, people):
    absolute = timedelta(hours=get_settings().session_absolute_hours)
    token = _sign_in(engine, "nina", now)
    t = now
    while t < now + absolute - timedelta(minutes=10):  # a click every 10 minutes all day
        t += timedelta(minutes=10)
        _check(engine, token, t)
    with pytest.raises(SessionEnded, match="maximum length"):
        _check(engine, token, now + absolute + timedelta(seconds=1))


def test_a_locked_account_refuses_even_the_right_password_and_the_lock_is_audited(
        engine, now, people):
    nina, _, _ = people
    threshold = get_settings().lockout_threshold
    for i in range(threshold):
        with pytest.raises(AuthError, match="Wrong username or password"):
            _sign_in(engine, "nina", now + timedelta(seconds=i), password="guess")
    with pytest.raises(AuthError, match="Wrong username or password"):
        _sign_in(engine, "nina", now + timedelta(minutes=1))  # right password, still locked
    actions = _actions(engine)
    assert actions.count(("login.failed", "failed", nina.id)) == threshold + 1
    assert ("lockout", "denied", nina.id) in actions
    # After the lock runs out the right password works again.
    later = now + timedelta(minutes=get_settings().lockout_minutes, seconds=threshold + 1)
    assert _sign_in(engine, "nina", later)


def test_a_disabled_account_cannot_sign_in_and_its_open_sessions_end(engine, now, people):
    nina, _, admin = people
    token = _sign_in(engine, "nina", now)
    from core.users import disable_user

    with session_scope(engine) as session:
        disable_user(session, username="nina", actor=actor_for(admin), now=now)
    with pytest.raises(SessionEnded):
        _check(engine, token, now)
    with pytest.raises(AuthError):
        _sign_in(engine, "nina", now)
    actions = _actions(engine)
    assert ("user.disable", "ok", admin.id) in actions
    assert ("login.failed", "failed", nina.id) in actions


def test_changing_your_password_ends_your_other_sessions_but_not_this_one(engine, now, people):
    nina, _, _ = people
    here = _sign_in(engine, "nina", now)
    there = _sign_in(engine, "nina", now)
    with session_scope(engine) as session:
        actor = _check(engine, here, now)
        ended = change_password(session, actor=actor, user_id=nina.id, now=now,
                                current_password=PASSWORD, new_password=NEW_PASSWORD,
                                keep_token=here)
    assert ended == 1
    assert _check(engine, here, now).user_id == nina.id
    with pytest.raises(SessionEnded):
        _check(engine, there, now)
    with pytest.raises(AuthError):
        _sign_in(engine, "nina", now)  # the old password is gone
    assert _sign_in(engine, "nina", now, password=NEW_PASSWORD)
    assert ("user.password", "ok", nina.id) in _actions(engine)


def test_a_password_change_needs_the_current_password(engine, now, people):
    nina, _, _ = people
    token = _sign_in(engine, "nina", now)
    actor = _check(engine, token, now)
    with pytest.raises(AuthError, match="current password"):
        with session_scope(engine) as session:
            change_password(session, actor=actor, user_id=nina.id, now=now,
                            current_password="not it", new_password=NEW_PASSWORD)
    assert ("user.password", "failed", nina.id) in _actions(engine)
    assert _check(engine, token, now)  # nothing ended


def test_an_admin_reset_ends_every_session_and_others_are_refused_and_audited(
        engine, now, people):
    nina, omar, admin = people
    token = _sign_in(engine, "nina", now)
    with pytest.raises(PermissionDenied):
        with session_scope(engine) as session:
            change_password(session, actor=actor_for(omar), user_id=nina.id, now=now,
                            new_password=NEW_PASSWORD)
    assert ("access.denied", "denied", omar.id) in _actions(engine)
    with session_scope(engine) as session:
        assert change_password(session, actor=actor_for(admin), user_id=nina.id, now=now,
                               new_password=NEW_PASSWORD) == 1
    with pytest.raises(SessionEnded):
        _check(engine, token, now)
    with session_scope(engine, write=False) as session:
        assert session.get(User, nina.id).password_changed_at is not None
