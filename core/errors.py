"""Typed errors every core operation may raise. Pages show `str(error)` to the user, so
each message is written for a nurse coordinator, not a developer."""

from __future__ import annotations


class CaseDeskError(Exception):
    """Base class: something the user asked for was refused; nothing was written."""


class ValidationError(CaseDeskError):
    """Bad input: too long, empty, contradictory dates, a NUL byte..."""


class NotFoundError(CaseDeskError):
    pass


class PermissionDenied(CaseDeskError):
    """The role or team does not allow it. Carries who was refused what, so the boundary
    that rolls the work back (core.db.session_scope) can audit the refusal in a
    transaction of its own - inside the refused transaction it would be rolled back too."""

    def __init__(self, message: str, *, actor: object = None, action: str | None = None,
                 team_id: int | None = None, case_id: int | None = None):
        super().__init__(message)
        self.actor, self.action, self.team_id, self.case_id = actor, action, team_id, case_id
        self.audited = False  # set once an access.denied row has been written for it


class TransitionNotAllowed(CaseDeskError):
    def __init__(self, current: str, move: str, allowed: list[str]):
        self.current, self.move, self.allowed = current, move, allowed
        options = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"'{move}' is not possible from {current.replace('_', ' ')}; allowed moves: {options}"
        )


class GuardFailed(CaseDeskError):
    """A move is in the table but its conditions do not hold; lists every unmet one."""

    def __init__(self, move: str, reasons: list[str]):
        self.move, self.reasons = move, reasons
        super().__init__(f"Cannot {move.replace('_', ' ')}: " + "; ".join(reasons))


class StaleCaseError(CaseDeskError):
    """Someone else changed the case since it was loaded (compare-and-set found 0 rows)."""

    def __init__(self, case_id: int, changed_by: str | None = None, changed_at: str | None = None):
        self.case_id, self.changed_by, self.changed_at = case_id, changed_by, changed_at
        who = changed_by or "someone else"
        when = f" at {changed_at}" if changed_at else ""
        super().__init__(f"Case {case_id} was changed by {who}{when}; reload and try again.")


class AuthError(CaseDeskError):
    """Sign-in failed. The message is deliberately generic."""
