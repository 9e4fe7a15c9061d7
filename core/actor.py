"""Who is acting: passed to every core operation so rules and the audit know the user."""

from __future__ import annotations

from dataclasses import dataclass

from core.vocab import Role


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    username: str
    role: Role
    team_id: int | None
    session_id: str | None = None  # short prefix of the server-side session id

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        """The worker and maintenance commands: admin rights, no team, no session."""
        return cls(user_id=None, username=name, role=Role.ADMIN, team_id=None)

    @property
    def is_system(self) -> bool:
        return self.user_id is None
