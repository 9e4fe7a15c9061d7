"""Accounts: argon2id hashing, adding, listing and disabling users (audited)."""

from __future__ import annotations

import json

import pytest
from argon2 import PasswordHasher
from sqlmodel import Session, select

from core.actor import Actor
from core.db import session_scope
from core.errors import NotFoundError, ValidationError
from core.models import AuditEntry, Team, User
from core.users import (
    create_user,
    disable_user,
    hash_password,
    list_users,
    needs_rehash,
    verify_password,
)
from core.vocab import Role
from tests.factories import make_team

ADMIN = Actor.system("test-admin")
GOOD = "correct horse battery"


def test_hash_is_argon2id_and_verifies():
    hashed = hash_password(GOOD)
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, GOOD)
    assert not verify_password(hashed, GOOD + "!")


@pytest.mark.parametrize("stored", [None, "", "not-a-hash", "$argon2id$v=19$garbage"])
def test_verify_refuses_missing_or_malformed_hashes_without_raising(stored):
    assert verify_password(stored, GOOD) is False


def test_needs_rehash_flags_weaker_parameters():
    assert not needs_rehash(hash_password(GOOD))
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(GOOD)
    assert needs_rehash(weak)


def _add(session, **overrides):
    values = dict(username="ana.silva", full_name="Ana Silva", role=Role.COORDINATOR,
                  team_name="Breast North", password=GOOD, actor=ADMIN)
    values.update(overrides)
    return create_user(session, **values)


def test_add_user_stores_a_hash_and_audits_without_the_password(engine, now):
    with session_scope(engine) as session:
        make_team(session, now=now, name="Breast North")
        user = _add(session, now=now, email="Ana@Example.org")
    with Session(engine) as session:
        stored = session.get(User, user.id)
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "user.add")
                             ).one()
    assert stored.email == "ana@example.org"
    assert verify_password(stored.password_hash, GOOD)
    assert GOOD not in (entry.detail or "") and "argon2" not in (entry.detail or "")
    assert json.loads(entry.detail)["user_id"] == user.id


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"password": "short"}, "at least 12"),
        ({"password": "ana.silva"}, "at least 12"),
        ({"username": "Ana Silva!"}, "Username must be"),
        ({"username": "a"}, "Username must be"),
        ({"full_name": "x" * 121}, "too long"),
        ({"full_name": "  "}, "Full name is required"),
        ({"role": "nurse"}, "Unknown role"),
        ({"email": "not-an-address"}, "does not look like"),
        ({"team_name": None}, "must belong to a team"),
    ],
)
def test_add_user_refuses_bad_input(sqlite_engine, now, overrides, message):
    with session_scope(sqlite_engine) as session:
        make_team(session, now=now, name="Breast North")
    with session_scope(sqlite_engine) as session, pytest.raises(ValidationError, match=message):
        _add(session, now=now, **overrides)


def test_password_equal_to_the_username_is_refused(sqlite_engine, now):
    with session_scope(sqlite_engine) as session, pytest.raises(ValidationError,
                                                                 match="username"):
        _add(session, now=now, username="averylongname", password="AVeryLongName",
             role=Role.ADMIN, team_name=None)


def test_duplicate_username_is_refused(engine, now):
    with session_scope(engine) as session:
        make_team(session, now=now, name="Breast North")
        _add(session, now=now)
    with session_scope(engine) as session, pytest.raises(ValidationError,
                                                          match="already exists"):
        _add(session, now=now, username="Ana.Silva")


def test_unknown_team_needs_the_explicit_flag(sqlite_engine, now):
    with session_scope(sqlite_engine) as session, pytest.raises(NotFoundError,
                                                                 match="--create-team"):
        _add(session, now=now, team_name="Nowhere")
    with session_scope(sqlite_engine) as session:
        user = _add(session, now=now, team_name="Nowhere", create_team=True)
        team = session.get(Team, user.team_id)
        assert team.name == "Nowhere"


def test_admin_needs_no_team(sqlite_engine, now):
    with session_scope(sqlite_engine) as session:
        user = _add(session, now=now, username="root.admin", role="admin", team_name=None)
    assert user.team_id is None


def test_list_and_disable(engine, now):
    with session_scope(engine) as session:
        make_team(session, now=now, name="Breast North")
        _add(session, now=now)
        _add(session, now=now, username="bo", full_name="Bo", role=Role.MANAGER)
    with session_scope(engine) as session:
        disable_user(session, username="bo", actor=ADMIN, now=now)
    with Session(engine) as session:
        everyone = list_users(session)
        active = list_users(session, include_disabled=False)
        actions = session.exec(select(AuditEntry.action)).all()
    assert [(u.username, t, u.is_active) for u, t in everyone] == [
        ("ana.silva", "Breast North", True), ("bo", "Breast North", False)]
    assert [u.username for u, _ in active] == ["ana.silva"]
    assert "user.disable" in actions


def test_disable_refuses_unknown_and_already_disabled_users(sqlite_engine, now):
    with session_scope(sqlite_engine) as session, pytest.raises(NotFoundError, match="ghost"):
        disable_user(session, username="ghost", actor=ADMIN, now=now)
    with session_scope(sqlite_engine) as session:
        _add(session, now=now, role=Role.ADMIN, team_name=None)
        disable_user(session, username="ana.silva", actor=ADMIN, now=now)
    with session_scope(sqlite_engine) as session, pytest.raises(ValidationError,
                                                                 match="already disabled"):
        disable_user(session, username="ana.silva", actor=ADMIN, now=now)
