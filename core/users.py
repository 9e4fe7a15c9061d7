"""User accounts: argon2id password hashing and the admin operations on users.

The hashing functions are deliberately small (`hash_password`, `verify_password`,
`needs_rehash`): sign-in and lockout are built on top of them elsewhere. argon2-cffi's
`PasswordHasher` uses argon2id with the library's recommended parameters (RFC 9106 low
memory profile); `needs_rehash` says when a stored hash was made with older parameters.
"""

from __future__ import annotations

import re
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlmodel import Session

from core import audit
from core.actor import Actor
from core.errors import NotFoundError, ValidationError
from core.models import NAME_MAX, Team, User
from core.permissions import Action, require
from core.validation import clean_text, require_text
from core.vocab import Role

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 1024  # argon2 takes anything, but a megabyte "password" is an attack
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_hasher = PasswordHasher()  # argon2id


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches the stored hash; False for a mismatch, a missing or a
    malformed hash (never raises, so a bad row cannot become a sign-in error path)."""
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def check_password_strength(password: str, *, username: str | None = None) -> None:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise ValidationError(
            f"Password too short: at least {PASSWORD_MIN_LENGTH} characters are needed."
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        raise ValidationError(f"Password too long: at most {PASSWORD_MAX_LENGTH} characters.")
    if username and password.casefold() == username.casefold():
        raise ValidationError("Password must not be the username.")


def _find_team(session: Session, *, team_name: str | None, team_id: int | None,
               create_team: bool, now: datetime) -> Team | None:
    if team_id is not None:
        team = session.get(Team, team_id)
        if team is None:
            raise NotFoundError(f"No team with id {team_id}.")
        return team
    if team_name is None:
        return None
    name = require_text(team_name, field="Team", max_length=NAME_MAX)
    team = session.execute(select(Team).where(Team.name == name)).scalars().first()
    if team is None:
        if not create_team:
            raise NotFoundError(
                f"No team named {name!r}. Create it by adding --create-team."
            )
        team = Team(name=name, created_at=now)
        session.add(team)
        session.flush()
    return team


def _require_manage_users(actor: Actor) -> None:
    """MANAGE_USERS from the matrix, checked here as well as on the page, so no caller can
    skip it; the CLI acts as Actor.system (whoever runs it already holds the database).
    A refusal is audited by the session_scope it leaves (core.db)."""
    if not actor.is_system:
        require(actor, Action.MANAGE_USERS)


def create_user(
    session: Session,
    *,
    username: str,
    full_name: str,
    role: Role | str,
    password: str,
    actor: Actor,
    now: datetime,
    team_name: str | None = None,
    team_id: int | None = None,
    email: str | None = None,
    create_team: bool = False,
) -> User:
    """Add an account. Coordinators and managers need a team; the team must exist unless
    `create_team` is set. Audited as `user.add` (no password, no hash in the log)."""
    _require_manage_users(actor)
    username = require_text(username, field="Username", max_length=64).lower()
    if not USERNAME_PATTERN.fullmatch(username):
        raise ValidationError(
            "Username must be 2-64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    full_name = require_text(full_name, field="Full name", max_length=NAME_MAX)
    email = clean_text(email, field="E-mail", max_length=254)
    if email is not None:
        email = email.lower()
        if not EMAIL_PATTERN.fullmatch(email):
            raise ValidationError(f"E-mail {email!r} does not look like an address.")
    try:
        role = Role(role)
    except ValueError:
        options = ", ".join(r.value for r in Role)
        raise ValidationError(f"Unknown role {role!r}; choose one of: {options}.") from None
    check_password_strength(password, username=username)
    team = _find_team(session, team_name=team_name, team_id=team_id,
                      create_team=create_team, now=now)
    if team is None and role is not Role.ADMIN:
        raise ValidationError(f"A {role.value} must belong to a team: choose one or create one.")
    if session.execute(select(User.id).where(User.username == username)).first():
        raise ValidationError(f"A user named {username!r} already exists.")
    if email and session.execute(select(User.id).where(User.email == email)).first():
        raise ValidationError(f"Another user already has the e-mail {email!r}.")
    user = User(username=username, full_name=full_name, email=email, role=role.value,
                team_id=team.id if team else None, password_hash=hash_password(password),
                password_changed_at=now, created_at=now)
    session.add(user)
    session.flush()
    audit.record(session, actor=actor, action="user.add", now=now,
                 detail={"user_id": user.id, "role": role.value, "team_id": user.team_id})
    return user


def list_users(session: Session, *, include_disabled: bool = True) -> list[tuple[User, str | None]]:
    """Every user with their team's name, by username."""
    query = select(User, Team.name).outerjoin(Team, Team.id == User.team_id)
    if not include_disabled:
        query = query.where(User.is_active.is_(True))
    return [(u, t) for u, t in session.execute(query.order_by(User.username)).all()]


def count_users(session: Session) -> int:
    return session.execute(select(func.count()).select_from(User)).scalar() or 0


def disable_user(session: Session, *, username: str, actor: Actor, now: datetime) -> User:
    """Disable an account (it stays for the history and the audit log). Audited."""
    _require_manage_users(actor)
    name = (username or "").strip().lower()
    user = session.execute(select(User).where(User.username == name)).scalars().first()
    if user is None:
        raise NotFoundError(f"No user named {name!r}.")
    if not user.is_active:
        raise ValidationError(f"User {name!r} is already disabled.")
    if actor.user_id is not None and actor.user_id == user.id:
        raise ValidationError("You cannot disable your own account.")
    user.is_active = False
    session.add(user)
    session.flush()
    # End the account's open sessions now, not just at their next rerun.
    from core.auth import end_user_sessions

    ended = end_user_sessions(session, user_id=user.id, now=now, reason="disabled")
    audit.record(session, actor=actor, action="user.disable", now=now,
                 detail={"user_id": user.id, "sessions_ended": ended})
    return user
