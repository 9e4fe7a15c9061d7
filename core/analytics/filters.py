"""The one filter shared by the analytics pages and the exports.

A page and an export given the same `CaseFilter` select the same cases, because both
build their WHERE clause from `conditions()`; that is how "numbers shown and numbers
exported agree" is kept. The period selects the *cohort*: cases assessed between `start`
and `end` (inclusive, UTC calendar days). Views that describe "now" (pipeline, workload,
cases about to cross 45 days) ignore the period but keep the team.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import func

from core.actor import Actor
from core.errors import ValidationError
from core.models import Case
from core.permissions import Action, require, team_filter, team_reach
from core.timeutil import start_of_day
from core.vocab import CaseState


@dataclass(frozen=True)
class CaseFilter:
    start: date | None = None  # assessed on or after this UTC day
    end: date | None = None  # assessed on or before this UTC day
    team_id: int | None = None
    state: str | None = None  # the case's current state

    def __post_init__(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise ValidationError(
                f"The period starts ({self.start}) after it ends ({self.end})."
            )
        if self.state is not None and self.state not in {s.value for s in CaseState}:
            raise ValidationError(f"Unknown state {self.state!r}.")

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """Half-open UTC bounds [start, end + 1 day) of the assessment period."""
        lo = start_of_day(self.start) if self.start else None
        hi = start_of_day(self.end + timedelta(days=1)) if self.end else None
        return lo, hi

    def case_conditions(
        self, actor: Actor, action: Action, *, with_period: bool = True,
        with_state: bool = True,
    ) -> list[ColumnElement[bool]]:
        """WHERE conditions on `cases`: the actor's reach first, then the chosen filter.

        Choosing a team outside one's reach is refused rather than silently returning
        nothing, so a manager never mistakes "not allowed" for "no cases"."""
        conds = self.team_conditions(actor, action, Case.team_id)
        if with_period:
            lo, hi = self.bounds()
            if lo is not None:
                conds.append(Case.assessed_at >= lo)
            if hi is not None:
                conds.append(Case.assessed_at < hi)
        if with_state and self.state is not None:
            conds.append(Case.state == self.state)
        return conds

    def team_conditions(
        self, actor: Actor, action: Action, team_column: Any
    ) -> list[ColumnElement[bool]]:
        """The actor's reach and the chosen team, on any table's team column (the history
        carries its case's team, so per-team stage times need no join to `cases`)."""
        conds: list[ColumnElement[bool]] = [team_filter(actor, action, team_column)]
        if self.team_id is not None:
            require(actor, action, self.team_id)
            conds.append(team_column == self.team_id)
        return conds

    def reach_team(self, actor: Actor, action: Action) -> int | None:
        """The one team the view covers, or None for every team: the chosen team if
        the actor may see it, else the actor's own team, or every team for a role that
        sees them all. Refuses (and audits) as `team_conditions` does."""
        own = team_reach(actor, action)  # raises for a role with no reach here
        if self.team_id is not None:
            require(actor, action, self.team_id)
            return self.team_id
        return own

    def describe(self) -> dict[str, Any]:
        """The filter as plain values, for the audit log and the page caption."""
        return {
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "team_id": self.team_id,
            "state": self.state,
        }


# --- dialect helpers: the few expressions SQLite and PostgreSQL spell differently -------


def month_of(column: Any, dialect: Dialect) -> ColumnElement[str]:
    """'YYYY-MM' of a stored UTC timestamp."""
    if dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM")
    # SQLite keeps UTCDateTime as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC).
    return func.substr(column, 1, 7)


def days_from_date_to_day_of(day_column: Any, ts_column: Any, dialect: Dialect):  # noqa: ANN201
    """Whole calendar days from a DATE column to the UTC day of a timestamp column."""
    if dialect.name == "postgresql":
        from sqlalchemy import Date, cast

        return cast(func.timezone("UTC", ts_column), Date) - day_column
    return func.julianday(func.date(ts_column)) - func.julianday(day_column)


def teams_in_reach(session, actor: Actor, action: Action) -> list[tuple[int, str]]:  # noqa: ANN001
    """(id, name) of the teams whose numbers the actor may see, for the team picker."""
    from sqlmodel import select

    from core.models import Team

    rows = session.exec(
        select(Team.id, Team.name).where(team_filter(actor, action, Team.id)).order_by(Team.name)
    ).all()
    return [(r.id, r.name) for r in rows]
