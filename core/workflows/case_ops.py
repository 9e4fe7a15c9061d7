"""Every change of a case that is not a move: notes, hold/resume, assignment, specialist,
insurance and referral, appointment, outcome.

Each one bumps the case's version with the same compare-and-set as a move, so a page
holding an old copy is refused whatever it tries, and each writes an audit row (ids and
codes, never the note's text or a name). Each runs in a savepoint: all or nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session

from core import audit
from core.actor import Actor
from core.config import get_settings
from core.errors import CaseDeskError, GuardFailed, NotFoundError, ValidationError
from core.models import NOTE_MAX, REASON_MAX, SHORT_MAX, Case, Note, Specialist
from core.permissions import Action
from core.validation import clean_text, parse_date, require_text
from core.vocab import (
    AppointmentMode,
    CaseState,
    ChangeSource,
    OutcomeDiagnosis,
    OutcomePlan,
    Priority,
    ReferralStatus,
    Role,
)
from core.workflows.engine import parse_datetime
from core.workflows.guards import appointment_problems
from core.workflows.write import (
    atomic,
    check_version,
    compare_and_set,
    deadlines_after,
    load_case,
    load_user,
    require_case_right,
    require_open,
    require_team_access,
    utc,
)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "leave this field as it is"


def _begin(session: Session, *, case_id: int, actor: Actor, expected_version: int | None,
           what: str, action: Action = Action.MOVE_CASE, must_be_open: bool = True) -> Case:
    case = load_case(session, case_id)
    require_team_access(actor, case)
    check_version(session, case, expected_version)
    require_case_right(actor, action, case)
    if must_be_open:
        require_open(case, what)
    return case


def _write(session: Session, case: Case, *, actor: Actor, now: datetime, action: str,
           changes: dict[str, Any], detail: dict[str, Any] | None = None) -> Case:
    compare_and_set(session, case, actor=actor, now=now, changes=changes)
    audit.record(session, actor=actor, action=action, now=now, case_id=case.id,
                 detail={"version": case.version, **(detail or {})})
    return case


def _today(now: datetime) -> date:
    return now.astimezone(get_settings().tz).date()


# --- notes ------------------------------------------------------------------------------


def add_note(session: Session, *, case_id: int, body: str, actor: Actor, now: datetime,
             expected_version: int | None = None) -> Case:
    """A free-text note (NFC, at most NOTE_MAX characters). Allowed on closed cases too:
    what happened after closing is worth writing down."""
    now = utc(now, field="now")
    text = require_text(body, field="Note", max_length=NOTE_MAX)
    with atomic(session):
        case = _begin(session, case_id=case_id, actor=actor, expected_version=expected_version,
                      what="add a note", must_be_open=False)
        compare_and_set(session, case, actor=actor, now=now, changes={})
        note = Note(case_id=case.id, at=now, author_id=actor.user_id, body=text)
        session.add(note)
        session.flush()
        audit.record(session, actor=actor, action="case.note", now=now, case_id=case.id,
                     detail={"note_id": note.id, "length": len(text), "version": case.version})
    return case


# --- hold and resume ------------------------------------------------------------------------


# A held case's SLA clock stops: a hold must come back for review within this (a resume
# date years out, a slip of the date picker, would hide the case from every clock).
MAX_HOLD_DAYS = 90


def put_on_hold(session: Session, *, case_id: int, reason: str, resume_on: date | str,
                actor: Actor, now: datetime, expected_version: int | None = None) -> Case:
    """Pause the SLA clock while a third party holds the case up (deadlines cleared)."""
    now = utc(now, field="now")
    text = require_text(reason, field="Reason for the hold", max_length=REASON_MAX)
    day = parse_date(resume_on, field="Resume date")
    if day <= _today(now):
        raise ValidationError(f"The resume date must be after today ({day.isoformat()}).")
    if day > _today(now) + timedelta(days=MAX_HOLD_DAYS):
        raise ValidationError(
            f"A hold lasts at most {MAX_HOLD_DAYS} days ({day.isoformat()} is later): "
            "resume the case then and hold it again if it still waits.")
    with atomic(session):
        case = _begin(session, case_id=case_id, actor=actor, expected_version=expected_version,
                      what="put it on hold")
        if case.on_hold:
            raise ValidationError(f"Case {case.id} is already on hold.")
        changes = {"on_hold": True, "hold_reason": text, "hold_started_at": now,
                   "hold_until": day, **deadlines_after(session, case, on_hold=True)}
        return _write(session, case, actor=actor, now=now, action="case.hold",
                      changes=changes, detail={"resume_on": day.isoformat()})


def resume(session: Session, *, case_id: int, actor: Actor, now: datetime,
           expected_version: int | None = None, held_until: datetime | None = None) -> Case:
    """End a hold: the time held is added to `paused_seconds`, deadlines move later.

    `held_until` (the expiry job): the hold ended then - the start of its resume day -
    not when the job noticed, so a worker that was down does not lengthen the pause."""
    now = utc(now, field="now")
    ended = min(now, utc(held_until, field="held_until")) if held_until else now
    with atomic(session):
        case = _begin(session, case_id=case_id, actor=actor, expected_version=expected_version,
                      what="resume it")
        if not case.on_hold:
            raise ValidationError(f"Case {case.id} is not on hold.")
        started = utc(case.hold_started_at or ended)
        held = max(0, int((ended - started).total_seconds()))
        paused = case.paused_seconds + held
        changes = {"on_hold": False, "hold_reason": None, "hold_started_at": None,
                   "hold_until": None, "paused_seconds": paused,
                   **deadlines_after(session, case, on_hold=False, paused_seconds=paused)}
        return _write(session, case, actor=actor, now=now, action="case.resume",
                      changes=changes, detail={"held_seconds": held,
                                               **({"resume_date": True} if held_until else {})})


# --- assignment ---------------------------------------------------------------------------


def _assign_one(session: Session, *, case_id: int, assignee_id: int | None, actor: Actor,
                now: datetime, expected_version: int | None) -> Case:
    case = load_case(session, case_id)
    require_team_access(actor, case)
    check_version(session, case, expected_version)
    # Taking an unassigned case for yourself is everyday work; anything else is a
    # reassignment, which is a manager's call.
    taking = case.assignee_id is None and assignee_id is not None and assignee_id == actor.user_id
    require_case_right(actor, Action.MOVE_CASE if taking else Action.REASSIGN, case)
    require_open(case, "assign it")
    name = None
    if assignee_id is not None:
        user = load_user(session, assignee_id)
        name = user.full_name
        if not user.is_active or user.team_id != case.team_id or user.role == Role.ADMIN:
            raise ValidationError(f"{user.full_name} cannot be assigned cases of this team.")
    if case.assignee_id == assignee_id:
        who = name or "nobody"
        raise ValidationError(f"Case {case.id} is already assigned to {who}.")
    return _write(session, case, actor=actor, now=now, action="case.assign",
                  changes={"assignee_id": assignee_id},
                  detail={"from": case.assignee_id, "to": assignee_id})


def assign(session: Session, *, case_id: int, assignee_id: int | None, actor: Actor,
           now: datetime, expected_version: int | None = None) -> Case:
    """Assign (or unassign, with None) the coordinator of a case."""
    now = utc(now, field="now")
    with atomic(session):
        return _assign_one(session, case_id=case_id, assignee_id=assignee_id, actor=actor,
                           now=now, expected_version=expected_version)


@dataclass(frozen=True)
class BulkResult:
    case_id: int
    ok: bool
    message: str
    version: int | None = None


def bulk_reassign(session: Session, *, case_ids: Iterable[int], assignee_id: int | None,
                  actor: Actor, now: datetime,
                  expected_versions: dict[int, int] | None = None) -> list[BulkResult]:
    """Reassign many cases; each is its own compare-and-set in its own savepoint, so one
    refused case (changed meanwhile, other team, closed) does not undo the others."""
    now = utc(now, field="now")
    results: list[BulkResult] = []
    for case_id in dict.fromkeys(case_ids):
        try:
            with atomic(session):
                case = _assign_one(session, case_id=case_id, assignee_id=assignee_id,
                                   actor=actor, now=now,
                                   expected_version=(expected_versions or {}).get(case_id))
            results.append(BulkResult(case_id, True, "reassigned", case.version))
        except CaseDeskError as exc:
            results.append(BulkResult(case_id, False, str(exc)))
    return results


# --- specialist, insurance, referral, appointment, priority ---------------------------------


def choose_specialist(session: Session, *, case_id: int, specialist_id: int, actor: Actor,
                      now: datetime, expected_version: int | None = None) -> Case:
    now = utc(now, field="now")
    with atomic(session):
        case = _begin(session, case_id=case_id, actor=actor, expected_version=expected_version,
                      what="choose a specialist")
        spec = session.get(Specialist, specialist_id) if isinstance(specialist_id, int) else None
        if spec is None:
            raise NotFoundError(f"There is no specialist {specialist_id!r}.")
        if not spec.is_active:
            raise ValidationError(f"{spec.name} no longer takes cases.")
        return _write(session, case, actor=actor, now=now, action="case.specialist",
                      changes={"specialist_id": spec.id}, detail={"specialist_id": spec.id})


def set_insurance(session: Session, *, case_id: int, actor: Actor, now: datetime,
                  insurer: str | None = UNSET, insurance_member_id: str | None = UNSET,
                  referral_required: bool = UNSET,
                  expected_version: int | None = None) -> Case:
    """Insurer, member id and whether the plan needs a referral (UNSET: unchanged)."""
    now = utc(now, field="now")
    with atomic(session):
        case = _begin(session, case_id=case_id, actor=actor, expected_version=expected_version,
                      what="change insurance")
        changes: dict[str, Any] = {}
        if insurer is not UNSET:
            changes["insurer"] = clean_text(insurer, field="Insurer", max_length=SHORT_MAX)
        if insurance_member_id is not UNSET:
            changes["insurance_member_id"] = clean_text(insurance_member_id,
                                                        field="Member id", max_length=64)
        if referral_required is not UNSET:
            required = bool(referral_required)
            changes["referral_required"] = required
            if not required:
                changes["referral_status"] = ReferralStatus.NOT_REQUIRED.value
            elif case.referral_status == ReferralStatus.NOT_REQUIRED:
                changes["referral_status"] = ReferralStatus.PENDING.value
        if not changes:
            raise ValidationError("Nothing to change.")
        return _write(session, case, actor=actor, now=now, action="case.insurance",
                      changes=changes, detail={"fields": sorted(changes)})


def set_referral_status(session: Session, *, case_id: int, referral_status: ReferralStatus | str,
                        actor: Actor, now: datetime, authorization_number: str | None = None,
                        expected_version: int | None = None) -> Case:
    """Progress of the insurance referral: pending, obtained (with the authorisation
    number if the insurer gave one) or denied."""
    now = utc(now, field="now")
    try:
        status = ReferralStatus(referral_status)
    except ValueError:
        raise ValidationError(f"{referral_status!r} is not a referral status.") from None
    number = clean_text(authorization_number, field="Authorisation number", max_length=64)
    with atomic(session):
        case = _begin(session, case_id=case_id, actor=actor, expected_version=expected_version,
                      what="change the referral")
        if not case.referral_required and status is not ReferralStatus.NOT_REQUIRED:
            raise ValidationError("This plan needs no referral; mark it as required first.")
        if case.referral_required and status is ReferralStatus.NOT_REQUIRED:
            raise ValidationError("This plan needs a referral; change the insurance first if "
                                  "that is wrong.")
        if number is not None and status is not ReferralStatus.OBTAINED:
            raise ValidationError("An authorisation number goes with an obtained referral.")
        return _write(session, case, actor=actor, now=now, action="case.referral",
                      changes={"referral_status": status.value, "authorization_number": number},
                      detail={"referral_status": status.value})


def set_appointment(session: Session, *, case_id: int, appointment_at: datetime | str,
                    actor: Actor, now: datetime, appointment_mode: AppointmentMode | str = UNSET,
                    expected_version: int | None = None) -> Case:
    """Reschedule the visit of a scheduled case (the `schedule` move sets the first one)."""
    now = utc(now, field="now")
    at = parse_datetime(appointment_at, field="Appointment")
    with atomic(session):
        case = _begin(session, case_id=case_id, actor=actor, expected_version=expected_version,
                      what="reschedule")
        if case.state != CaseState.SCHEDULED:
            raise GuardFailed("reschedule", [f"the case is {CaseState(case.state).label.lower()},"
                                             " not scheduled"])
        problems = appointment_problems(at, now)
        if problems:
            raise ValidationError(problems[0].capitalize() + ".")
        changes: dict[str, Any] = {"appointment_at": at}
        if appointment_mode is not UNSET:
            try:
                changes["appointment_mode"] = AppointmentMode(appointment_mode).value
            except ValueError:
                raise ValidationError(f"{appointment_mode!r} is not an appointment mode.") \
                    from None
        return _write(session, case, actor=actor, now=now, action="case.appointment",
                      changes=changes)


def set_priority(session: Session, *, case_id: int, priority: Priority | str, actor: Actor,
                 now: datetime, expected_version: int | None = None) -> Case:
    now = utc(now, field="now")
    try:
        level = Priority(priority)
    except ValueError:
        raise ValidationError(f"{priority!r} is not a priority.") from None
    with atomic(session):
        case = _begin(session, case_id=case_id, actor=actor, expected_version=expected_version,
                      what="change its priority")
        return _write(session, case, actor=actor, now=now, action="case.priority",
                      changes={"priority": level.value}, detail={"priority": level.value})


# --- outcome ------------------------------------------------------------------------------


def record_outcome(
    session: Session, *, case_id: int, diagnosis: OutcomeDiagnosis | str,
    plan: OutcomePlan | str, additional_cancer_found: bool, actor: Actor, now: datetime,
    sources: Iterable[ChangeSource | str] = (), expected_version: int | None = None,
) -> Case:
    """The second opinion's outcome, once the patient has been seen. Stops the seen-state
    SLA clock (its limit runs until the outcome is in). May be corrected later."""
    now = utc(now, field="now")
    try:
        dx = OutcomeDiagnosis(diagnosis)
        tx = OutcomePlan(plan)
        srcs = list(dict.fromkeys(ChangeSource(s) for s in sources))
    except ValueError as exc:
        raise ValidationError(f"Outcome: {exc}.") from None
    if not isinstance(additional_cancer_found, bool):
        raise ValidationError("Say whether additional cancer was found (yes or no).")
    changed = (dx in (OutcomeDiagnosis.REFINED, OutcomeDiagnosis.CHANGED)
               or tx is not OutcomePlan.UNCHANGED or additional_cancer_found)
    if changed and not srcs and dx is not OutcomeDiagnosis.NOT_ASSESSABLE:
        raise ValidationError("Say what led to the change (pathology, imaging, new biopsy, "
                              "genetics or tumour board).")
    if srcs and not changed:
        raise ValidationError("Sources of change were given, but the diagnosis was confirmed "
                              "and the plan is unchanged.")
    with atomic(session):
        case = _begin(session, case_id=case_id, actor=actor, expected_version=expected_version,
                      what="record the outcome")
        if case.state != CaseState.SEEN:
            raise GuardFailed("record outcome", [
                f"the patient has not been seen yet (the case is "
                f"{CaseState(case.state).label.lower()})"])
        changes = {"outcome_diagnosis": dx.value, "outcome_plan": tx.value,
                   "outcome_sources": ",".join(s.value for s in srcs) or None,
                   "additional_cancer_found": additional_cancer_found,
                   "outcome_recorded_at": now,
                   **deadlines_after(session, case, outcome_recorded=True)}
        return _write(session, case, actor=actor, now=now, action="case.outcome",
                      changes=changes,
                      detail={"diagnosis": dx.value, "plan": tx.value,
                              "sources": [s.value for s in srcs],
                              "additional_cancer_found": additional_cancer_found})
