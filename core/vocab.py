"""Every enumerated value Case Desk stores, declared once.

The models turn each enum into a CHECK constraint; the workflow, pages and exports use
the same members, so a value can never be spelled two ways.
"""

from __future__ import annotations

from enum import StrEnum


class CaseState(StrEnum):
    ASSESSED = "assessed"
    REFERRAL = "referral"
    RECORDS_REQUESTED = "records_requested"
    RECORDS_RECEIVED = "records_received"
    SCHEDULED = "scheduled"
    SEEN = "seen"
    CLOSED = "closed"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


# The funnel, in order. `closed` is outside it.
FUNNEL: tuple[CaseState, ...] = (
    CaseState.ASSESSED,
    CaseState.REFERRAL,
    CaseState.RECORDS_REQUESTED,
    CaseState.RECORDS_RECEIVED,
    CaseState.SCHEDULED,
    CaseState.SEEN,
)
# A state's position in the funnel (the value of `cases.furthest_rank`); closed has none.
FUNNEL_RANK: dict[str, int] = {state.value: rank for rank, state in enumerate(FUNNEL)}
OPEN_STATES: tuple[CaseState, ...] = FUNNEL  # a seen case stays open until its outcome is in


class Role(StrEnum):
    COORDINATOR = "coordinator"
    MANAGER = "manager"
    ADMIN = "admin"


class Priority(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"


class DiagnosisCategory(StrEnum):
    INVASIVE = "invasive"
    DCIS = "dcis"
    ATYPIA = "atypia"
    OTHER = "other"


class TreatmentStatus(StrEnum):
    NONE = "none"
    TREATMENT_STARTED = "treatment_started"
    SURGERY_BOOKED = "surgery_booked"


class SecondOpinionReason(StrEnum):
    NO_DEFINITIVE_DIAGNOSIS = "no_definitive_diagnosis"
    RARE_CANCER = "rare_cancer"
    WANTS_OPTIONS = "wants_options"
    DOCTOR_NOT_SPECIALIST = "doctor_not_specialist"
    NO_CLEAR_RECOMMENDATION = "no_clear_recommendation"
    WANTS_CONFIRMATION = "wants_confirmation"
    INSURER_REQUIRES = "insurer_requires"


class ReferralStatus(StrEnum):
    NOT_REQUIRED = "not_required"
    PENDING = "pending"
    OBTAINED = "obtained"
    DENIED = "denied"


class AppointmentMode(StrEnum):
    IN_PERSON = "in_person"
    TELEHEALTH = "telehealth"


class CloseReason(StrEnum):
    NOT_A_CANDIDATE = "not_a_candidate"
    DECLINED = "declined"
    UNREACHABLE = "unreachable"
    TREATED_ELSEWHERE = "treated_elsewhere"
    DUPLICATE = "duplicate"
    COMPLETED = "completed"  # outcome recorded after the visit
    OTHER = "other"


class OutcomeDiagnosis(StrEnum):
    CONFIRMED = "confirmed"
    REFINED = "refined"
    CHANGED = "changed"
    NOT_ASSESSABLE = "not_assessable"


class OutcomePlan(StrEnum):
    UNCHANGED = "unchanged"
    MINOR_CHANGE = "minor_change"
    MAJOR_CHANGE = "major_change"


class ChangeSource(StrEnum):
    PATHOLOGY = "pathology"
    IMAGING = "imaging"
    NEW_BIOPSY = "new_biopsy"
    GENETICS = "genetics"
    TUMOUR_BOARD = "tumour_board"


class RecordKind(StrEnum):
    PATHOLOGY_REPORT = "pathology_report"
    GLASS_SLIDES = "glass_slides"
    IMAGING_REPORT = "imaging_report"
    IMAGING_IMAGES = "imaging_images"
    PRIOR_COMPARISON = "prior_comparison"
    TREATMENT_RECOMMENDATION = "treatment_recommendation"
    MEDICATION_LIST = "medication_list"
    INSURANCE_REFERRAL = "insurance_referral"
    SIGNED_RELEASE = "signed_release"
    OPERATIVE_NOTE = "operative_note"
    DISCHARGE_SUMMARY = "discharge_summary"
    GENETIC_RESULTS = "genetic_results"
    STAGING_SCANS = "staging_scans"
    LABS = "labs"
    PARAFFIN_BLOCKS = "paraffin_blocks"
    FAMILY_HISTORY = "family_history"

    @property
    def label(self) -> str:
        return RECORD_LABELS[self]


RECORD_LABELS: dict[RecordKind, str] = {
    RecordKind.PATHOLOGY_REPORT: "pathology report",
    RecordKind.GLASS_SLIDES: "glass slides",
    RecordKind.IMAGING_REPORT: "imaging report",
    RecordKind.IMAGING_IMAGES: "imaging images",
    RecordKind.PRIOR_COMPARISON: "prior comparison studies",
    RecordKind.TREATMENT_RECOMMENDATION: "first doctor's treatment recommendation",
    RecordKind.MEDICATION_LIST: "medication and allergy list",
    RecordKind.INSURANCE_REFERRAL: "insurance card and referral",
    RecordKind.SIGNED_RELEASE: "signed release form",
    RecordKind.OPERATIVE_NOTE: "operative note and surgical pathology",
    RecordKind.DISCHARGE_SUMMARY: "discharge summary",
    RecordKind.GENETIC_RESULTS: "genetic/genomic results",
    RecordKind.STAGING_SCANS: "staging scans",
    RecordKind.LABS: "labs",
    RecordKind.PARAFFIN_BLOCKS: "paraffin blocks",
    RecordKind.FAMILY_HISTORY: "family history",
}


class Requirement(StrEnum):
    REQUIRED = "required"
    CONDITIONAL = "conditional"
    OPTIONAL = "optional"


class RecordStatus(StrEnum):
    NEEDED = "needed"
    REQUESTED = "requested"
    RECEIVED = "received"
    WAIVED = "waived"


class ContactChannel(StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    SMS = "sms"
    PORTAL = "portal"
    LETTER = "letter"


class ContactOutcome(StrEnum):
    REACHED = "reached"
    NO_ANSWER = "no_answer"
    VOICEMAIL = "voicemail"
    WRONG_NUMBER = "wrong_number"
    BOUNCED = "bounced"

    @property
    def successful(self) -> bool:
        return self is ContactOutcome.REACHED


class FlagKind(StrEnum):
    SLA = "sla"
    PATIENT_CLOCK = "patient_clock"
    DEADLINE_RISK = "deadline_risk"
    UNREACHABLE = "unreachable"


class FlagSeverity(StrEnum):
    """One ladder for every flag kind so the queue can sort by a single rank."""

    DUE_SOON = "due_soon"  # SLA >= 75 %; patient clock amber
    STALLED = "stalled"  # SLA >= 100 %; patient clock red; at risk; unreachable
    ESCALATED = "escalated"  # SLA >= 150 %; patient clock critical

    @property
    def rank(self) -> int:
        return {"due_soon": 1, "stalled": 2, "escalated": 3}[self.value]


class AuditOutcome(StrEnum):
    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


class JobStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
