"""Intake: the online candidacy assessment becomes a case (DESIGN.md section 1, issue 3).

`assess` is pure: the answers and today's date give a candidacy result with its reasons.
`create_case_from_assessment` stores the patient, opens the case in `assessed` through
the engine (the only code that sets a state), builds the records checklist, and closes a
non-candidate at once with the reason - so every assessment leaves a record.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core import audit
from core.actor import Actor
from core.config import get_settings
from core.errors import NotFoundError, ValidationError
from core.models import (
    CASE_IS_OPEN,
    DETAIL_MAX,
    NAME_MAX,
    REASON_MAX,
    SHORT_MAX,
    Case,
    Patient,
    Team,
)
from core.permissions import Action, require
from core.validation import (
    clean_text,
    email_address,
    parse_date,
    phone_number,
    require_text,
    search_key,
)
from core.vocab import (
    CloseReason,
    DiagnosisCategory,
    Priority,
    ReferralStatus,
    Role,
    SecondOpinionReason,
    TreatmentStatus,
)
from core.workflows.candidacy import CandidacyResult, candidacy
from core.workflows.engine import move_case, open_case
from core.workflows.records import build_checklist
from core.workflows.states import Move
from core.workflows.write import atomic, load_user, utc

__all__ = ["Assessment", "CandidacyResult", "assess", "create_case_from_assessment"]


@dataclass(frozen=True)
class Assessment:
    """The answers of the online assessment, with the patient's identity and contact."""

    first_name: str
    last_name: str
    diagnosis_category: DiagnosisCategory | str
    biopsy_date: date | str | None
    reasons: tuple[SecondOpinionReason | str, ...] = ()
    treatment_status: TreatmentStatus | str = TreatmentStatus.NONE
    planned_treatment_start: date | str | None = None
    insurer: str | None = None
    insurance_member_id: str | None = None
    referral_required: bool = False
    biopsy_facility: str | None = None
    imaging_facility: str | None = None
    telehealth_preferred: bool = False
    date_of_birth: date | str | None = None
    phone: str | None = None
    email: str | None = None
    address_line: str | None = None
    city: str | None = None
    region: str | None = None
    zip_code: str | None = None
    mrn: str | None = None
    cancer_type: str = "breast"


def _enum(enum_cls, value, label: str):  # noqa: ANN001, ANN202
    try:
        return enum_cls(value)
    except ValueError:
        options = ", ".join(m.value.replace("_", " ") for m in enum_cls)
        raise ValidationError(f"{label}: {value!r} is not one of: {options}.") from None


def _optional_date(value: date | str | None, field: str) -> date | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_date(value, field=field)


def validate_assessment(a: Assessment, *, today: date) -> Assessment:
    """A cleaned copy: text normalised and within limits, enums and dates checked.
    Raises ValidationError naming the first bad answer."""
    if isinstance(a.reasons, str):
        raise ValidationError("Reasons must be a list of reasons.")
    biopsy = _optional_date(a.biopsy_date, "Biopsy date")
    planned = _optional_date(a.planned_treatment_start, "Planned treatment start")
    born = _optional_date(a.date_of_birth, "Date of birth")
    if biopsy is not None and biopsy > today:
        raise ValidationError(f"Biopsy date cannot be in the future ({biopsy.isoformat()}).")
    if born is not None and born > today:
        raise ValidationError(f"Date of birth cannot be in the future ({born.isoformat()}).")
    if born is not None and biopsy is not None and biopsy < born:
        raise ValidationError("The biopsy date is before the date of birth.")
    if planned is not None and biopsy is not None and planned < biopsy:
        raise ValidationError("The planned treatment start is before the biopsy.")
    reasons = tuple(dict.fromkeys(
        _enum(SecondOpinionReason, r, "Reason for a second opinion") for r in a.reasons))
    return replace(
        a,
        first_name=require_text(a.first_name, field="First name", max_length=NAME_MAX),
        last_name=require_text(a.last_name, field="Last name", max_length=NAME_MAX),
        diagnosis_category=_enum(DiagnosisCategory, a.diagnosis_category, "Diagnosis"),
        treatment_status=_enum(TreatmentStatus, a.treatment_status, "Treatment status"),
        biopsy_date=biopsy,
        planned_treatment_start=planned,
        date_of_birth=born,
        reasons=reasons,
        insurer=clean_text(a.insurer, field="Insurer", max_length=SHORT_MAX),
        insurance_member_id=clean_text(a.insurance_member_id, field="Member id",
                                       max_length=64),
        referral_required=bool(a.referral_required),
        biopsy_facility=clean_text(a.biopsy_facility, field="Biopsy facility",
                                   max_length=SHORT_MAX),
        imaging_facility=clean_text(a.imaging_facility, field="Imaging facility",
                                    max_length=SHORT_MAX),
        telehealth_preferred=bool(a.telehealth_preferred),
        phone=phone_number(clean_text(a.phone, field="Phone", max_length=32)),
        email=email_address(clean_text(a.email, field="E-mail", max_length=254)),
        address_line=clean_text(a.address_line, field="Address", max_length=200),
        city=clean_text(a.city, field="City", max_length=NAME_MAX),
        region=clean_text(a.region, field="Region", max_length=64),
        zip_code=clean_text(a.zip_code, field="ZIP code", max_length=16),
        # Upper-case: "mrn-9" and "MRN-9" are one record number (the lookups say so too).
        mrn=(clean_text(a.mrn, field="Record number", max_length=32) or "").upper() or None,
        cancer_type=require_text(a.cancer_type, field="Cancer type", max_length=32),
    )


def assess(assessment: Assessment, today: date) -> CandidacyResult:
    """Candidate or not, and why. Raises ValidationError for answers that cannot be true."""
    a = validate_assessment(assessment, today=today)
    return candidacy(
        diagnosis_category=a.diagnosis_category,
        biopsy_date=a.biopsy_date,
        treatment_status=a.treatment_status,
        planned_treatment_start=a.planned_treatment_start,
        reasons=a.reasons,
        today=today,
    )


def _check_assignee(session: Session, assignee_id: int | None, team_id: int) -> None:
    if assignee_id is None:
        return
    user = load_user(session, assignee_id)
    if not user.is_active or user.team_id != team_id or user.role == Role.ADMIN:
        raise ValidationError(f"{user.full_name} cannot be assigned cases of this team.")


_CONTACT_FIELDS = ("phone", "email", "address_line", "city", "region", "zip_code")


def _patient_for(session: Session, a: Assessment, *, team_id: int, now: datetime,
                 ) -> tuple[Patient, list[str] | None]:
    """The patient of a new case, and, for a returning patient, the contact fields the
    new assessment updated (None: a new patient).

    A record number already on file is the same patient again only when the name and
    the date of birth (both given) match and every earlier case of theirs was this
    team's; their earlier case must be closed. Anything else is refused with one message
    that says nothing of whose number it is: a record number and a name must not be
    enough to reach another team's patient (their phone, address and date of birth)."""
    if a.mrn:
        # Locked: two intakes of the same returning patient at once must not both pass
        # the open-case check below (PostgreSQL; SQLite writes one at a time anyway).
        known = session.exec(select(Patient).where(Patient.mrn == a.mrn)
                             .with_for_update()).first()
        if known is not None:
            teams = set(session.exec(select(Case.team_id).where(Case.patient_id == known.id)))
            same_person = (known.search_name == search_key(f"{a.first_name} {a.last_name}")
                           and known.date_of_birth is not None
                           and known.date_of_birth == a.date_of_birth
                           and teams <= {team_id})
            if not same_person:
                raise ValidationError(
                    f"Record number {a.mrn} is already on file. Check the number; for a "
                    "returning patient give the same name and date of birth, or leave the "
                    "record number empty for a new one.")
            still_open = session.exec(select(Case.id).where(Case.patient_id == known.id,
                                                            CASE_IS_OPEN)).first()
            if still_open is not None:
                raise ValidationError(
                    f"{a.first_name} {a.last_name} (record number {a.mrn}) already has "
                    f"open case #{still_open}: continue that one, or close it first.")
            # What the patient told us now is newer than what is on file.
            updated = [name for name in _CONTACT_FIELDS
                       if getattr(a, name) and getattr(a, name) != getattr(known, name)]
            for name in updated:
                setattr(known, name, getattr(a, name))
            session.add(known)
            return known, updated
    patient = Patient(
        mrn=a.mrn or f"CD-{uuid.uuid4().hex[:12].upper()}",
        first_name=a.first_name, last_name=a.last_name,
        search_name=search_key(f"{a.first_name} {a.last_name}"),
        date_of_birth=a.date_of_birth, phone=a.phone, email=a.email,
        address_line=a.address_line, city=a.city, region=a.region, zip_code=a.zip_code,
        created_at=now,
    )
    session.add(patient)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # Another coordinator stored the same new record number a moment ago.
        raise ValidationError(f"Record number {a.mrn} was just stored by someone else: "
                              "open the case list and check.") from None
    return patient, None


def create_case_from_assessment(
    session: Session, *, assessment: Assessment, team_id: int, assignee_id: int | None,
    actor: Actor, now: datetime,
) -> Case:
    """Store the patient and a new case; a non-candidate is closed at once with the
    reason. Returns the case (in `assessed`, or `closed` for a non-candidate)."""
    now = utc(now, field="now")
    today = now.astimezone(get_settings().tz).date()
    if not actor.is_system:
        require(actor, Action.CREATE_CASE, team_id)
    with atomic(session):
        if not isinstance(team_id, int) or session.get(Team, team_id) is None:
            raise NotFoundError(f"There is no team {team_id!r}.")
        _check_assignee(session, assignee_id, team_id)
        a = validate_assessment(assessment, today=today)
        result = assess(a, today)
        patient, updated = _patient_for(session, a, team_id=team_id, now=now)
        case = Case(
            patient_id=patient.id, team_id=team_id, assignee_id=assignee_id,
            priority=(Priority.URGENT if result.urgent else Priority.ROUTINE).value,
            cancer_type=a.cancer_type,
            diagnosis_category=DiagnosisCategory(a.diagnosis_category).value,
            biopsy_date=a.biopsy_date,
            treatment_status=TreatmentStatus(a.treatment_status).value,
            planned_treatment_start=a.planned_treatment_start,
            second_opinion_reasons=",".join(r.value for r in a.reasons),
            biopsy_facility=a.biopsy_facility, imaging_facility=a.imaging_facility,
            telehealth_preferred=a.telehealth_preferred,
            candidacy_reasons=result.summary[:DETAIL_MAX],
            assessed_at=now,
            insurer=a.insurer, insurance_member_id=a.insurance_member_id,
            referral_required=a.referral_required,
            referral_status=(ReferralStatus.PENDING if a.referral_required
                             else ReferralStatus.NOT_REQUIRED).value,
            state_entered_at=now, created_at=now, updated_at=now,
        )
        case = open_case(session, case=case, actor=actor, now=now)
        if updated is not None:
            # which patient record the case joined, and what the intake changed on it
            audit.record(session, actor=actor, action="case.patient_reused", now=now,
                         case_id=case.id, detail={"patient_id": patient.id,
                                                  "updated": updated})
        build_checklist(session, case=case, now=now)
        if not result.candidate:
            case = move_case(session, case_id=case.id, move=Move.CLOSE, actor=actor, now=now,
                             close_reason=CloseReason.NOT_A_CANDIDATE,
                             close_note=result.reasons[0][:REASON_MAX])
    return case
