"""Holds end on their resume date (DESIGN.md section 5: a hold has "a reason and a resume
date").

A hold pauses the SLA clock, so a held case raises no SLA flag. If nobody resumes it, a
resume date that passed would leave the case paused for ever - sitting still without any
flag, the very thing the product exists to find. The nightly job therefore resumes every
case whose resume date has come, as the service (`Actor.system`), through the same
`case_ops.resume` a coordinator uses: version compare-and-set, deadlines recomputed,
audited as `case.resume`. The pause ends at the start of the resume day (the service's
time zone), not when the job runs, so a worker that was down does not lengthen it.

Each case is its own transaction: one that a coordinator changed meanwhile (stale
version) or resumed first is skipped, and the others still resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time

from sqlalchemy import Engine, select

from core.actor import Actor
from core.config import get_settings
from core.db import session_scope
from core.errors import StaleCaseError, ValidationError
from core.models import Case
from core.vocab import CaseState
from core.workflows.case_ops import resume

log = logging.getLogger(__name__)

HOLD_EXPIRY_ACTOR = "hold expiry"
_cases = Case.__table__


@dataclass(frozen=True)
class HoldExpiry:
    resumed: list[int]
    skipped: list[int]  # changed or resumed by someone else meanwhile


def resume_day_start(day: date) -> datetime:
    """The moment a resume date begins, in the service's time zone."""
    return datetime.combine(day, time.min, tzinfo=get_settings().tz)


def due_holds(engine: Engine, *, now: datetime) -> list[tuple[int, date]]:
    """(case id, resume date) of the open held cases whose resume date has begun."""
    today = now.astimezone(get_settings().tz).date()
    c = _cases.c
    with session_scope(engine, write=False) as session:
        rows = session.connection().execute(
            select(c.id, c.hold_until)
            .where(c.on_hold.is_(True), c.state != CaseState.CLOSED.value,
                   c.hold_until.is_not(None), c.hold_until <= today)
            .order_by(c.hold_until, c.id)
        ).all()
    return [(r.id, r.hold_until) for r in rows]


def resume_due_holds(engine: Engine, *, now: datetime) -> HoldExpiry:
    actor = Actor.system(HOLD_EXPIRY_ACTOR)
    resumed: list[int] = []
    skipped: list[int] = []
    for case_id, day in due_holds(engine, now=now):
        try:
            with session_scope(engine) as session:
                resume(session, case_id=case_id, actor=actor, now=now,
                       held_until=resume_day_start(day))
        except (StaleCaseError, ValidationError) as why:  # resumed or closed meanwhile
            log.info("hold of case %d not resumed: %s", case_id, why)
            skipped.append(case_id)
            continue
        resumed.append(case_id)
    return HoldExpiry(resumed, skipped)
