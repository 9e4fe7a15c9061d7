"""The case page's read model: one case with everything the page shows, in a handful of
queries. Reading a case is audited (`case.view`, through the engine's
`get_case_for_view`), so this runs in a write session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session, select

from core import flag_levels
from core.actor import Actor
from core.config import get_settings
from core.models import (
    Case,
    CaseEvent,
    CaseFlag,
    ContactAttempt,
    Note,
    Patient,
    RecordItem,
    Specialist,
    Team,
    User,
)
from core.permissions import Action, can
from core.timeutil import as_utc
from core.validation import case_number
from core.vocab import CaseState, FlagSeverity, Role
from core.workflows.clocks import load_limits

HISTORY_LIMIT = 200
CONTACT_LIMIT = 50
NOTE_LIMIT = 100


@dataclass(frozen=True)
class Clock:
    level: str  # ok, due_soon, stalled, escalated, paused, stopped / ok, amber, red, critical
    text: str


@dataclass
class CaseDetail:
    case: Case
    patient: Patient
    team_name: str
    assignee_name: str | None
    specialist_name: str | None
    sla: Clock
    patient_clock: Clock
    flags: list[tuple[CaseFlag, FlagSeverity]]  # open flags with their level now, worst first
    records: list[RecordItem]
    contacts: list[tuple[ContactAttempt, str]]
    notes: list[tuple[Note, str]]
    history: list[tuple[CaseEvent, str]]
    moves: dict  # Move -> unmet conditions ([] = possible now)
    specialists: list[tuple[int, str]] = field(default_factory=list)
    assignees: list[tuple[int, str]] = field(default_factory=list)
    may_work: bool = False
    may_reassign: bool = False


def sla_clock(case: Case, now: datetime, limit_days: int | None) -> Clock:
    """Time in the current state against its limit, from the stored deadlines."""
    if case.state == CaseState.CLOSED:
        return Clock("stopped", "Closed: no clock")
    if case.on_hold:
        until = f" until {case.hold_until.isoformat()}" if case.hold_until else ""
        return Clock("paused", f"Paused: on hold{until}")
    if case.due_at is None:
        return Clock("stopped", "Stopped: nothing left to do in this step")
    now = as_utc(now)
    start = as_utc(case.state_entered_at) + timedelta(seconds=case.paused_seconds or 0)
    used = max(0.0, (now - start).total_seconds() / 86400)
    limit = f" of {limit_days}" if limit_days else ""
    text = f"{used:.0f}{limit} days in {CaseState(case.state).label.lower()}"
    if case.escalate_at is not None and now >= as_utc(case.escalate_at):
        return Clock(FlagSeverity.ESCALATED.value, f"Escalated: {text}")
    if now >= as_utc(case.due_at):
        return Clock(FlagSeverity.STALLED.value, f"Stalled: {text}")
    if case.due_soon_at is not None and now >= as_utc(case.due_soon_at):
        return Clock(FlagSeverity.DUE_SOON.value, f"Due soon: {text}")
    return Clock("ok", f"On time: {text}")


def patient_clock(case: Case, now: datetime) -> Clock:
    """Days since the diagnosing biopsy; never pauses (DESIGN.md section 5)."""
    s = get_settings()
    if case.biopsy_date is None:
        return Clock("ok", "No biopsy date")
    days = (as_utc(now).astimezone(s.tz).date() - case.biopsy_date).days
    text = f"{days} days since biopsy"
    if days >= s.patient_clock_critical_days:
        return Clock("critical", f"Critical: {text}")
    if days >= s.patient_clock_red_days:
        return Clock("red", f"Red: {text}")
    if days >= s.patient_clock_amber_days:
        return Clock("amber", f"Amber: {text}")
    return Clock("ok", text)


def _names(session: Session, ids: set[int | None]) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.full_name).where(User.id.in_(ids))).all())


def case_detail(session: Session, *, case_id: int, actor: Actor, now: datetime) -> CaseDetail:
    """Everything the case page shows. Raises NotFoundError / PermissionDenied (from the
    engine) for a case that does not exist or is outside the actor's reach."""
    from core.workflows.engine import available_moves, get_case_for_view

    case = get_case_for_view(session, case_id=case_id, actor=actor, now=now)
    patient = session.get(Patient, case.patient_id)
    team = session.get(Team, case.team_id)
    spec = session.get(Specialist, case.specialist_id) if case.specialist_id else None
    moment = flag_levels.Moment.at(now)
    flags = [(f, flag_levels.current_severity(f, case, moment)) for f in session.exec(
        select(CaseFlag).where(CaseFlag.case_id == case.id, CaseFlag.resolved_at.is_(None))
        .order_by(CaseFlag.id)).all()]
    flags.sort(key=lambda pair: -pair[1].rank)
    records = list(session.exec(
        select(RecordItem).where(RecordItem.case_id == case.id).order_by(RecordItem.id)).all())
    contacts = list(session.exec(
        select(ContactAttempt).where(ContactAttempt.case_id == case.id)
        .order_by(ContactAttempt.at.desc(), ContactAttempt.id.desc()).limit(CONTACT_LIMIT)).all())
    notes = list(session.exec(
        select(Note).where(Note.case_id == case.id)
        .order_by(Note.at.desc(), Note.id.desc()).limit(NOTE_LIMIT)).all())
    events = list(session.exec(
        select(CaseEvent).where(CaseEvent.case_id == case.id)
        .order_by(CaseEvent.at.desc(), CaseEvent.id.desc()).limit(HISTORY_LIMIT)).all())
    names = _names(session, {case.assignee_id} | {c.actor_id for c in contacts}
                   | {n.author_id for n in notes} | {e.actor_id for e in events})
    limit = load_limits(session).get(case.state)
    may_work = can(actor, Action.MOVE_CASE, case.team_id)
    may_reassign = can(actor, Action.REASSIGN, case.team_id)
    specialists: list[tuple[int, str]] = []
    assignees: list[tuple[int, str]] = []
    if may_work:
        specialists = [(s.id, f"{s.name} - {s.specialty}, {s.institution}") for s in session.exec(
            select(Specialist).where(Specialist.is_active).order_by(Specialist.name)).all()]
    if may_work or may_reassign:
        assignees = [(u.id, u.full_name) for u in session.exec(
            select(User).where(User.team_id == case.team_id, User.is_active,
                               User.role != Role.ADMIN.value).order_by(User.full_name)).all()]
    return CaseDetail(
        case=case, patient=patient, team_name=team.name if team else "",
        assignee_name=names.get(case.assignee_id) if case.assignee_id else None,
        specialist_name=f"{spec.name} ({spec.institution})" if spec else None,
        sla=sla_clock(case, now, limit.days if limit else None),
        patient_clock=patient_clock(case, now),
        flags=flags, records=records,
        contacts=[(c, names.get(c.actor_id, "system")) for c in contacts],
        notes=[(n, names.get(n.author_id, "system")) for n in notes],
        history=[(e, names.get(e.actor_id, "system")) for e in events],
        moves=available_moves(session, case=case, actor=actor, now=now),
        specialists=specialists, assignees=assignees,
        may_work=may_work, may_reassign=may_reassign,
    )


def find_case_id(session: Session, *, actor: Actor, text: str) -> int | None:
    """A case number or an exact record number -> the case id (latest case of that
    patient), inside the actor's reach; None if nothing matches."""
    from core.permissions import team_filter

    text = (text or "").strip().lstrip("#")
    if not text:
        return None
    cond = team_filter(actor, Action.VIEW_CASE, Case.team_id)
    number = case_number(text)
    if number is not None:
        hit = session.execute(select(Case.id).where(Case.id == number, cond)).scalar()
        if hit:
            return hit
    # As typed, or upper-case: record numbers are usually written in capitals, and
    # "cd00000001" should find CD00000001 (an IN of two keeps the unique index in use).
    return session.execute(
        select(Case.id).join(Patient, Patient.id == Case.patient_id)
        .where(Patient.mrn.in_(sorted({text, text.upper()})), cond)
        .order_by(Case.id.desc()).limit(1)
    ).scalar()
