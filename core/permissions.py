"""The permission matrix (DESIGN.md section 7): role x action x own team / other team.

Declared once here and used by every page, query and CLI command. `can()` answers a
cell; `require()` raises PermissionDenied (callers audit the denial). Queries never
filter by team after loading: they add `team_filter()` to their SQL.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import ColumnElement, true

from core.actor import Actor
from core.errors import PermissionDenied
from core.vocab import Role


class Action(StrEnum):
    VIEW_QUEUE = "view_queue"
    VIEW_CASE = "view_case"
    CREATE_CASE = "create_case"
    MOVE_CASE = "move_case"  # transitions and every edit of a case
    REASSIGN = "reassign"
    REOPEN = "reopen"
    VIEW_ANALYTICS = "view_analytics"
    EXPORT_DEIDENTIFIED = "export_deidentified"
    EXPORT_IDENTIFIED = "export_identified"
    MANAGE_USERS = "manage_users"
    MANAGE_SLA = "manage_sla"
    VIEW_AUDIT = "view_audit"


class Scope(StrEnum):
    NONE = "none"
    OWN_TEAM = "own_team"
    ALL = "all"


C, M, A = Role.COORDINATOR, Role.MANAGER, Role.ADMIN
N, T, ALL = Scope.NONE, Scope.OWN_TEAM, Scope.ALL

# role -> action -> how far the right reaches. Read a row as a sentence:
# "a manager may reassign cases of their own team".
MATRIX: dict[Role, dict[Action, Scope]] = {
    C: {
        Action.VIEW_QUEUE: T, Action.VIEW_CASE: T, Action.CREATE_CASE: T, Action.MOVE_CASE: T,
        Action.REASSIGN: N, Action.REOPEN: N, Action.VIEW_ANALYTICS: N,
        Action.EXPORT_DEIDENTIFIED: N, Action.EXPORT_IDENTIFIED: N,
        Action.MANAGE_USERS: N, Action.MANAGE_SLA: N, Action.VIEW_AUDIT: N,
    },
    M: {
        Action.VIEW_QUEUE: T, Action.VIEW_CASE: T, Action.CREATE_CASE: T, Action.MOVE_CASE: T,
        Action.REASSIGN: T, Action.REOPEN: T, Action.VIEW_ANALYTICS: T,
        Action.EXPORT_DEIDENTIFIED: T, Action.EXPORT_IDENTIFIED: T,
        Action.MANAGE_USERS: N, Action.MANAGE_SLA: N, Action.VIEW_AUDIT: N,
    },
    # Admins run the service (users, teams, limits, audit). They see every team's numbers
    # and may export, reassign and reopen anywhere, but do not work cases day to day.
    A: {
        Action.VIEW_QUEUE: ALL, Action.VIEW_CASE: ALL, Action.CREATE_CASE: N,
        Action.MOVE_CASE: N, Action.REASSIGN: ALL, Action.REOPEN: ALL,
        Action.VIEW_ANALYTICS: ALL, Action.EXPORT_DEIDENTIFIED: ALL,
        Action.EXPORT_IDENTIFIED: ALL, Action.MANAGE_USERS: ALL, Action.MANAGE_SLA: ALL,
        Action.VIEW_AUDIT: ALL,
    },
}


def scope(actor: Actor, action: Action) -> Scope:
    return MATRIX[actor.role][action]


def can(actor: Actor, action: Action, team_id: int | None = None) -> bool:
    """May `actor` do `action`, on something belonging to `team_id` (None: no team)?"""
    reach = scope(actor, action)
    if reach is Scope.NONE:
        return False
    if reach is Scope.ALL or team_id is None:
        return True
    return actor.team_id is not None and actor.team_id == team_id


def _verb(action: Action) -> str:
    return action.value.replace("_", " ")


def require(actor: Actor, action: Action, team_id: int | None = None, *,
            case_id: int | None = None) -> None:
    """Raise PermissionDenied unless the cell allows it; the refusal is audited by the
    session_scope it passes through (core.db)."""
    if not can(actor, action, team_id):
        where = " for another team" if scope(actor, action) is Scope.OWN_TEAM else ""
        raise PermissionDenied(f"Your role ({actor.role.value}) may not {_verb(action)}{where}.",
                               actor=actor, action=action.value, team_id=team_id,
                               case_id=case_id)


def team_reach(actor: Actor, action: Action) -> int | None:
    """The one team the actor's reach for `action` is limited to, or None for every
    team; a role with no reach here is refused."""
    reach = scope(actor, action)
    if reach is Scope.ALL:
        return None
    if reach is Scope.NONE or actor.team_id is None:
        raise PermissionDenied(f"Your role ({actor.role.value}) may not {_verb(action)}.",
                               actor=actor, action=action.value)
    return actor.team_id


def team_filter(actor: Actor, action: Action, team_column: ColumnElement) -> ColumnElement[bool]:
    """The SQL condition restricting a query to what the actor may see."""
    team = team_reach(actor, action)
    return true() if team is None else team_column == team
