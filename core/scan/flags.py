"""People meet the flags here: acknowledge one with a note."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session

from core import audit, flag_levels
from core.actor import Actor
from core.errors import NotFoundError, ValidationError
from core.models import REASON_MAX, Case, CaseFlag
from core.permissions import Action, require
from core.timeutil import as_utc
from core.validation import require_text


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
