"""Contact attempts with the patient (call, e-mail, text...): channel, outcome, note and
when to try next. Three failed attempts in a row make a case "unreachable" (the scan reads
`failed_attempts_in_a_row`). Logging an attempt bumps the case's version like any change.
"""

from __future__ import annotations

from datetime import date, datetime, time

from sqlmodel import Session, select

from core import audit
from core.actor import Actor
from core.config import get_settings
from core.errors import ValidationError
from core.models import REASON_MAX, Case, ContactAttempt
from core.permissions import Action
from core.validation import clean_text
from core.vocab import ContactChannel, ContactOutcome
from core.workflows.engine import parse_datetime
from core.workflows.write import (
    atomic,
    check_version,
    compare_and_set,
    load_case,
    require_case_right,
    require_open,
    require_team_access,
    utc,
)


def log_contact(
    session: Session, *, case_id: int, channel: ContactChannel | str,
    outcome: ContactOutcome | str, actor: Actor, now: datetime, note: str | None = None,
    next_try_at: datetime | date | str | None = None, at: datetime | None = None,
    expected_version: int | None = None,
) -> Case:
    """Record one attempt (at `at`, default now; never in the future); returns the case
    at its new version."""
    now = utc(now, field="now")
    try:
        ch = ContactChannel(channel)
        result = ContactOutcome(outcome)
    except ValueError as exc:
        raise ValidationError(f"Contact: {exc}.") from None
    text = clean_text(note, field="Note", max_length=REASON_MAX)
    when = now if at is None else utc(at, field="Contact time")
    if when > now:
        raise ValidationError("A contact attempt cannot be in the future.")
    if isinstance(next_try_at, date) and not isinstance(next_try_at, datetime):
        # A day without a time means that morning, in the service's time zone.
        next_try_at = datetime.combine(next_try_at, time(9), get_settings().tz)
    retry = parse_datetime(next_try_at, field="Next try") if next_try_at is not None else None
    if retry is not None and retry <= when:
        raise ValidationError("The next try must be after this attempt.")
    if retry is not None and result.successful:
        raise ValidationError("The patient was reached; there is no next try to plan.")
    with atomic(session):
        case = load_case(session, case_id)
        require_team_access(actor, case)
        check_version(session, case, expected_version)
        require_case_right(actor, Action.MOVE_CASE, case)
        require_open(case, "log a contact")
        compare_and_set(session, case, actor=actor, now=now, changes={})
        attempt = ContactAttempt(case_id=case.id, at=when, actor_id=actor.user_id,
                                 channel=ch.value, outcome=result.value, note=text,
                                 next_try_at=retry)
        session.add(attempt)
        session.flush()
        audit.record(session, actor=actor, action="contact.log", now=now, case_id=case.id,
                     detail={"attempt_id": attempt.id, "channel": ch.value,
                             "outcome": result.value, "version": case.version})
    return case


def failed_attempts_in_a_row(session: Session, *, case_id: int) -> int:
    """Failed attempts since the last successful one (newest first)."""
    outcomes = session.exec(
        select(ContactAttempt.outcome)
        .where(ContactAttempt.case_id == case_id)
        .order_by(ContactAttempt.at.desc(), ContactAttempt.id.desc())
    ).all()
    count = 0
    for o in outcomes:
        if ContactOutcome(o).successful:
            break
        count += 1
    return count
