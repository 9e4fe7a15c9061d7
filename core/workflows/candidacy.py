"""The candidacy rules of the online assessment (pure; no database).

Kept apart from `intake` so the `candidate` guard can re-run the very same rules on the
fields stored on a case (as of the day it was assessed) without a second copy of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from core.vocab import DiagnosisCategory, SecondOpinionReason, TreatmentStatus

# Diagnoses the (breast-first) service reviews.
REVIEWED_DIAGNOSES = (DiagnosisCategory.INVASIVE, DiagnosisCategory.DCIS, DiagnosisCategory.ATYPIA)
# A planned start this close, or a biopsy this old, makes the case urgent: surgery within
# 8 weeks of diagnosis (Wiener, JAMA Surg 2023) leaves little room for records and a visit.
URGENT_START_WITHIN_DAYS = 21
URGENT_BIOPSY_OLDER_THAN_DAYS = 30

REASON_TEXT: dict[SecondOpinionReason, str] = {
    SecondOpinionReason.NO_DEFINITIVE_DIAGNOSIS: "no definitive diagnosis yet",
    SecondOpinionReason.RARE_CANCER: "rare or unusual cancer",
    SecondOpinionReason.WANTS_OPTIONS: "wants to know other treatment options",
    SecondOpinionReason.DOCTOR_NOT_SPECIALIST: "diagnosing doctor is not a specialist",
    SecondOpinionReason.NO_CLEAR_RECOMMENDATION: "several options without a clear recommendation",
    SecondOpinionReason.WANTS_CONFIRMATION: "wants the diagnosis confirmed",
    SecondOpinionReason.INSURER_REQUIRES: "insurer requires a second opinion",
}


@dataclass(frozen=True)
class CandidacyResult:
    candidate: bool
    reasons: list[str] = field(default_factory=list)
    urgent: bool = False

    @property
    def summary(self) -> str:
        head = "Candidate" if self.candidate else "Not a candidate"
        return f"{head}: " + "; ".join(self.reasons) if self.reasons else head


def candidacy(
    *,
    diagnosis_category: str,
    biopsy_date: date | None,
    treatment_status: str,
    planned_treatment_start: date | None,
    reasons: Iterable[str],
    today: date,
) -> CandidacyResult:
    """Who the service can help. Blocking findings come first in `reasons`."""
    diagnosis = DiagnosisCategory(diagnosis_category)
    chosen = [SecondOpinionReason(r) for r in reasons]
    treatment = TreatmentStatus(treatment_status)
    blockers: list[str] = []
    notes: list[str] = []

    if diagnosis not in REVIEWED_DIAGNOSES:
        blockers.append("the service reviews breast diagnoses (invasive cancer, DCIS, atypia); "
                        "this diagnosis is outside it")
    if biopsy_date is None:
        blockers.append("no diagnosing biopsy yet: there is no diagnosis to review")
    if not chosen:
        blockers.append("no reason for a second opinion was given")

    notes.extend(f"reason: {REASON_TEXT[r]}" for r in chosen)
    urgent = False
    if treatment is TreatmentStatus.TREATMENT_STARTED:
        notes.append("treatment has started: the opinion can still refine the plan")
    elif treatment is TreatmentStatus.SURGERY_BOOKED:
        notes.append("surgery is booked")
    if planned_treatment_start is not None:
        days_left = (planned_treatment_start - today).days
        if days_left <= URGENT_START_WITHIN_DAYS:
            urgent = True
            notes.append(f"treatment planned to start in {days_left} days" if days_left >= 0
                         else f"the planned treatment start "
                              f"({planned_treatment_start.isoformat()}) has already passed")
    if biopsy_date is not None and today - biopsy_date > timedelta(
        days=URGENT_BIOPSY_OLDER_THAN_DAYS
    ):
        urgent = True
        notes.append(f"biopsy was {(today - biopsy_date).days} days ago")

    return CandidacyResult(candidate=not blockers, reasons=blockers + notes,
                           urgent=urgent and not blockers)
