"""Sign-in, server-side sessions and sign-out (DESIGN.md section 7). No Streamlit here.

The browser keeps only a random token; the database keeps its sha256 (`UserSession.id`),
so a copy of the database does not hand out live sessions. Every rerun of the dashboard
calls `check_session`, which enforces the idle and the absolute timeout on the server
and ends the row with a reason; nothing about a session's validity is trusted from the
browser.

Failures are answered with one generic message whatever went wrong (unknown user, wrong
password, disabled, locked), so the form cannot be used to find out which accounts
exist; the audit log records the real reason.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session, func, select

from core.actor import Actor
from core.audit import record
from core.config import get_settings
from core.errors import AuthError
from core.models import User, UserSession
from core.timeutil import as_utc
from core.users import hash_password, needs_rehash, verify_password
from core.vocab import AuditOutcome, Role

GENERIC_FAILURE = "Wrong username or password."
# last_seen_at is written at most this often: every rerun writing a row would put a write
# lock on SQLite for each click; the idle timeout is in minutes, so this costs nothing.
TOUCH_EVERY = timedelta(seconds=15)
SESSION_ID_PREFIX = 16  # how much of the hash goes into audit rows


class SessionEnded(AuthError):
    """The session is gone (expired, signed out, account disabled): sign in again."""

    def __init__(self, reason: str):
        self.reason = reason
        messages = {
            "idle": "You were signed out after a period of inactivity. Please sign in again.",
            "absolute": "Your session reached its maximum length. Please sign in again.",
            "disabled": "Your account has been disabled.",
        }
        super().__init__(messages.get(reason, "Your session has ended. Please sign in again."))


# --- password hashing ----------------------------------------------------------------------
# core/users.py owns the argon2id parameters; sign-in only verifies and rehashes.

_verify = verify_password
_needs_rehash = needs_rehash
_hash = hash_password


# A real argon2 hash to verify against when the username is unknown, so an unknown name
# takes as long to refuse as a wrong password.
_DUMMY_HASH: str | None = None


def _dummy_verify(password: str) -> None:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _hash(secrets.token_urlsafe(16))
    _verify(_DUMMY_HASH, password)


# --- sessions -----------------------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def actor_of(user: User, session_hash: str | None) -> Actor:
    return Actor(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        team_id=user.team_id,
        session_id=session_hash[:SESSION_ID_PREFIX] if session_hash else None,
    )


def _open_session(session: Session, *, user: User, now: datetime) -> str:
    token = secrets.token_urlsafe(32)
    session.add(UserSession(id=token_hash(token), user_id=user.id, created_at=now,
                            last_seen_at=now))
    session.flush()
    return token


def _fail(session: Session, *, user: User | None, username: str, reason: str,
          now: datetime) -> None:
    """Audit a refused sign-in and commit it before raising: the caller's transaction
    rolls back on the exception, and the failure count must survive it."""
    actor = actor_of(user, None) if user else None
    record(session, actor=actor, action="login.failed", now=now, outcome=AuditOutcome.FAILED,
           detail={"reason": reason} if user else {"reason": reason, "known_user": False})
    session.commit()
    raise AuthError(GENERIC_FAILURE)


def sign_in(session: Session, *, username: str, password: str, now: datetime) -> tuple[User, str]:
    """Check a username and password; returns the user and a new session token.

    Raises AuthError("Wrong username or password.") on any failure. After
    `lockout_threshold` failures in a row the account is locked for `lockout_minutes`,
    during which even the right password is refused.
    """
    settings = get_settings()
    now = as_utc(now)
    name = (username or "").strip()
    user = session.exec(
        select(User).where(func.lower(User.username) == name.lower())
    ).first() if name else None
    if user is None:
        _dummy_verify(password or "")
        _fail(session, user=None, username=name, reason="unknown_user", now=now)
        raise AssertionError("unreachable")  # pragma: no cover
    if user.locked_until is not None and as_utc(user.locked_until) > now:
        _dummy_verify(password or "")
        _fail(session, user=user, username=name, reason="locked", now=now)
    if user.locked_until is not None:
        # The lock has run out: start counting afresh.
        user.locked_until = None
        user.failed_logins = 0
    if not user.is_active:
        _dummy_verify(password or "")
        _fail(session, user=user, username=name, reason="disabled", now=now)
    if not user.password_hash or not _verify(user.password_hash, password or ""):
        user.failed_logins += 1
        session.add(user)
        if user.failed_logins >= settings.lockout_threshold:
            user.locked_until = now + timedelta(minutes=settings.lockout_minutes)
            record(session, actor=actor_of(user, None), action="lockout", now=now,
                   outcome=AuditOutcome.DENIED,
                   detail={"failures": user.failed_logins,
                           "minutes": settings.lockout_minutes})
        _fail(session, user=user, username=name, reason="wrong_password", now=now)
    if _needs_rehash(user.password_hash):
        user.password_hash = _hash(password)
    user.failed_logins = 0
    user.last_login_at = now
    session.add(user)
    token = _open_session(session, user=user, now=now)
    record(session, actor=actor_of(user, token_hash(token)), action="login", now=now,
           detail={"method": "password"})
    return user, token


def sign_in_sso(session: Session, *, email: str, now: datetime) -> tuple[User, str]:
    """Single sign-on: the identity provider vouched for `email`; map it to an account.
    Unknown or disabled e-mails are refused (no account is created on the fly)."""
    now = as_utc(now)
    address = (email or "").strip().lower()
    user = session.exec(
        select(User).where(func.lower(User.email) == address)
    ).first() if address else None
    if user is None or not user.is_active:
        record(session, actor=actor_of(user, None) if user else None, action="login.failed",
               now=now, outcome=AuditOutcome.FAILED,
               detail={"method": "sso", "reason": "disabled" if user else "unknown_email"})
        session.commit()
        raise AuthError("No active Case Desk account uses this e-mail address.")
    user.last_login_at = now
    session.add(user)
    token = _open_session(session, user=user, now=now)
    record(session, actor=actor_of(user, token_hash(token)), action="login", now=now,
           detail={"method": "sso"})
    return user, token


def _end(session: Session, row: UserSession, *, reason: str, now: datetime,
         user: User | None) -> None:
    row.ended_at = now
    row.end_reason = reason
    session.add(row)
    action = "logout" if reason == "signed_out" else "session.ended"
    record(session, actor=actor_of(user, row.id) if user else None, action=action, now=now,
           detail={"reason": reason})


def check_session(session: Session, *, token: str | None, now: datetime) -> Actor:
    """The signed-in actor for `token`, or SessionEnded. Called on every rerun.

    An expired session is ended in the database (with its reason) and committed before
    raising, so the same token can never come back to life.
    """
    if not token:
        raise SessionEnded("missing")
    settings = get_settings()
    now = as_utc(now)
    row = session.get(UserSession, token_hash(token))
    if row is None or row.ended_at is not None:
        raise SessionEnded(row.end_reason if row is not None and row.end_reason else "missing")
    user = session.get(User, row.user_id)
    reason = None
    if user is None or not user.is_active:
        reason = "disabled"
    elif now - as_utc(row.created_at) > timedelta(hours=settings.session_absolute_hours):
        reason = "absolute"
    elif now - as_utc(row.last_seen_at) > timedelta(minutes=settings.session_idle_minutes):
        reason = "idle"
    if reason:
        _end(session, row, reason=reason, now=now, user=user)
        session.commit()
        raise SessionEnded(reason)
    if now - as_utc(row.last_seen_at) >= TOUCH_EVERY:
        row.last_seen_at = now
        session.add(row)
    return actor_of(user, row.id)


def sign_out(session: Session, *, token: str | None, now: datetime) -> None:
    """End the session behind `token` (a no-op for an unknown or already ended one)."""
    if not token:
        return
    row = session.get(UserSession, token_hash(token))
    if row is None or row.ended_at is not None:
        return
    _end(session, row, reason="signed_out", now=as_utc(now),
         user=session.get(User, row.user_id))


# --- ending every session of a user (issue 7) -------------------------------------------
# A user who signs out on one machine may have left another signed in (a ward PC, a
# laptop at home): signing out, a password change and disabling the account end them all.
# The rows are ended in the database, so every other browser finds its session gone on
# its next rerun (check_session), whichever dashboard replica it talks to.


def end_user_sessions(session: Session, *, user_id: int, now: datetime, reason: str,
                      keep: str | None = None) -> int:
    """End every open session of `user_id` except the one whose hash is `keep`; each is
    audited with `reason`. Returns how many were ended."""
    now = as_utc(now)
    user = session.get(User, user_id)
    rows = session.exec(
        select(UserSession).where(UserSession.user_id == user_id,
                                  UserSession.ended_at.is_(None))
        .order_by(UserSession.created_at)
    ).all()
    ended = 0
    for row in rows:
        if keep is not None and row.id == keep:
            continue
        _end(session, row, reason=reason, now=now, user=user)
        ended += 1
    session.flush()
    return ended


def sign_out_everywhere(session: Session, *, token: str | None, now: datetime) -> int:
    """Sign out: end the session behind `token` and every other open session of the same
    user. Returns how many sessions were ended (0 for an unknown or ended token)."""
    if not token:
        return 0
    row = session.get(UserSession, token_hash(token))
    if row is None or row.ended_at is not None:
        return 0
    now = as_utc(now)
    user = session.get(User, row.user_id)
    _end(session, row, reason="signed_out", now=now, user=user)
    return 1 + end_user_sessions(session, user_id=row.user_id, now=now,
                                 reason="signed_out_elsewhere")


def change_password(session: Session, *, actor: Actor, user_id: int, new_password: str,
                    now: datetime, current_password: str | None = None,
                    keep_token: str | None = None) -> int:
    """Set a new password and end the user's other sessions (returns how many).

    A user changing their own password must give the current one (a session left open on
    a shared PC must not be enough to take the account over) and keeps the session they
    changed it from (`keep_token`). Anyone else needs MANAGE_USERS; then every session of
    the user ends. Audited as `user.password` (never the password or its hash).
    """
    from core.errors import NotFoundError
    from core.permissions import Action, require

    now = as_utc(now)
    user = session.get(User, user_id) if isinstance(user_id, int) else None
    own = actor.user_id is not None and actor.user_id == user_id
    if not own and not actor.is_system:
        require(actor, Action.MANAGE_USERS)  # refusal audited by session_scope
    if user is None:
        raise NotFoundError(f"There is no user {user_id!r}.")
    if own and not _verify(user.password_hash or "", current_password or ""):
        record(session, actor=actor, action="user.password", now=now,
               outcome=AuditOutcome.FAILED, detail={"user_id": user_id,
                                                    "reason": "wrong_current_password"})
        session.commit()
        raise AuthError("The current password is not right.")
    try:
        from core.users import check_password_strength
    except ImportError:  # pragma: no cover - only before core/users.py lands
        pass
    else:
        check_password_strength(new_password, username=user.username)
    user.password_hash = _hash(new_password)
    user.password_changed_at = now
    user.failed_logins = 0
    user.locked_until = None
    session.add(user)
    keep = token_hash(keep_token) if (own and keep_token) else None
    ended = end_user_sessions(session, user_id=user.id, now=now, reason="password_changed",
                              keep=keep)
    record(session, actor=actor, action="user.password", now=now,
           detail={"user_id": user.id, "by": "self" if own else "admin",
                   "sessions_ended": ended})
    return ended


def display_name(session: Session, user_id: int | None) -> str:
    if user_id is None:
        return "system"
    user = session.get(User, user_id)
    return user.full_name if user else f"user {user_id}"
