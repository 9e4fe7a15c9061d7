"""People and pages meet the flags here: acknowledge one with a note, and read the
"last scan: 3 min ago, 12 stalled" line for the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlmodel import Session

from core import audit, flag_levels
from core.actor import Actor
from core.errors import NotFoundError, ValidationError
from core.models import REASON_MAX, Case, CaseFlag, JobRun
from core.permissions import Action, require
from core.scan.sweep import SCAN_JOB
from core.timeutil import as_utc
from core.validation import require_text
from core.vocab import FlagSeverity, JobStatus


def acknowledge_flag(
    session: Session, *, flag_id: int, actor: Actor, note: str, now: datetime
) -> CaseFlag:
    """Record that a person has seen a flag and what they are doing about it.

    The flag stays open (and on the queue) until the scan finds its cause gone: an
    acknowledgement is a note, not a fix. Refused without a note, for a flag already
    resolved, or for a case the actor may not work on. Audited with the case id only
    (the note may hold clinical detail, so it stays on the flag, not in the audit log).
    """
    note = require_text(note, field="Note", max_length=REASON_MAX)
    flag = session.get(CaseFlag, flag_id) if isinstance(flag_id, int) else None
    if flag is None:
        raise NotFoundError(f"There is no flag {flag_id!r}.")
    case = session.get(Case, flag.case_id)
    require(actor, Action.MOVE_CASE, case.team_id if case else None)
    # Compare-and-set on "still open": the scan may have resolved it since it was shown.
    changed = session.execute(
        update(CaseFlag)
        .where(CaseFlag.id == flag.id, CaseFlag.resolved_at.is_(None))
        .values(acknowledged_at=as_utc(now), acknowledged_by_id=actor.user_id, ack_note=note)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        raise ValidationError("This flag has already been resolved; nothing to acknowledge.")
    # the level the person saw: now, not the one the flag was raised with
    level = flag_levels.current_severity(flag, case, flag_levels.Moment.at(now)).value \
        if case is not None else flag.severity
    audit.record(session, actor=actor, action="flag.acknowledge", now=now, case_id=flag.case_id,
                 detail={"flag_id": flag.id, "kind": flag.kind, "severity": level})
    session.refresh(flag)
    return flag


@dataclass(frozen=True)
class ScanSummary:
    last_started_at: datetime | None
    last_status: str | None
    minutes_ago: float | None
    last_error: str | None
    stalled_cases: int  # open cases with a flag at "stalled" or worse now
    due_soon_cases: int  # open cases whose worst flag is "due soon" now

    def describe(self) -> str:
        if self.last_started_at is None:
            return f"no scan yet, {self.stalled_cases} stalled"
        ago = round(self.minutes_ago or 0)
        failed = " (failed)" if self.last_status == JobStatus.FAILED.value else ""
        return f"last scan: {ago} min ago{failed}, {self.stalled_cases} stalled"


def scan_summary(session: Session, *, now: datetime, team_id: int | None = None) -> ScanSummary:
    """The newest scan run and the open-flag counts (optionally for one team)."""
    run = session.execute(
        select(JobRun).where(JobRun.job == SCAN_JOB).order_by(JobRun.started_at.desc(),
                                                             JobRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    # each flag's level now (SLA and patient clock: from its case's dates at `now`)
    f, c = CaseFlag.__table__, Case.__table__
    rank = flag_levels.current_rank_sql(f, c, flag_levels.Moment.at(now))
    worst = (
        select(f.c.case_id, func.max(rank).label("rank"))
        .join(c, c.c.id == f.c.case_id)
        .where(f.c.resolved_at.is_(None))
        .group_by(f.c.case_id)
    )
    if team_id is not None:
        worst = worst.where(c.c.team_id == team_id)
    w = worst.subquery()
    stalled_rank = FlagSeverity.STALLED.rank
    stalled, due_soon = session.execute(
        select(func.count().filter(w.c.rank >= stalled_rank),
               func.count().filter(w.c.rank < stalled_rank)).select_from(w)
    ).one()
    started = as_utc(run.started_at) if run else None
    return ScanSummary(
        last_started_at=started,
        last_status=run.status if run else None,
        minutes_ago=(as_utc(now) - started).total_seconds() / 60 if started else None,
        last_error=run.error if run else None,
        stalled_cases=stalled or 0,
        due_soon_cases=due_soon or 0,
    )
