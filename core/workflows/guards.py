"""Named guard conditions of the state machine (DESIGN.md section 4).

Each guard looks at the case (and, when the form's inputs are known, at them) and returns
a list of human messages: what is unmet, written for a coordinator. An empty list means
the condition holds. A refused move reports every unmet message of every guard at once so
a page can say why a button is disabled.

`ctx.params is None` means "no form inputs yet" (a page deciding which buttons to enable):
guards about inputs - the appointment time, a reason - are then skipped, because the user
has not had a chance to give them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from core.models import Case, RecordItem
from core.timeutil import as_utc
from core.vocab import (
    CaseState,
    CloseReason,
    RecordKind,
    RecordStatus,
    ReferralStatus,
    Requirement,
)
from core.workflows.candidacy import candidacy


@dataclass
class GuardContext:
    session: Session
    case: Case
    now: datetime
    params: dict[str, Any] | None  # cleaned form inputs; None: not given yet

    def param(self, name: str) -> Any:
        return (self.params or {}).get(name)

    @property
    def has_params(self) -> bool:
        return self.params is not None


Guard = Callable[[GuardContext], list[str]]
GUARDS: dict[str, Guard] = {}


def guard(name: str) -> Callable[[Guard], Guard]:
    def register(fn: Guard) -> Guard:
        GUARDS[name] = fn
        return fn

    return register


def _fmt_items(items: list[RecordItem]) -> str:
    return ", ".join(f"{RecordKind(i.kind).label} ({i.facility})" for i in items)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@guard("candidate")
def candidate(ctx: GuardContext) -> list[str]:
    c = ctx.case
    result = candidacy(
        diagnosis_category=c.diagnosis_category,
        biopsy_date=c.biopsy_date,
        treatment_status=c.treatment_status,
        planned_treatment_start=c.planned_treatment_start,
        reasons=[r for r in c.second_opinion_reasons.split(",") if r],
        today=as_utc(c.assessed_at).date(),
    )
    if result.candidate:
        return []
    return ["the assessment did not find a candidate (" + result.reasons[0] + ")"]


@guard("coordinator_assigned")
def coordinator_assigned(ctx: GuardContext) -> list[str]:
    return [] if ctx.case.assignee_id is not None else ["no coordinator is assigned"]


@guard("specialist_chosen")
def specialist_chosen(ctx: GuardContext) -> list[str]:
    if ctx.case.specialist_id is not None or ctx.param("specialist_id") is not None:
        return []
    return ["no specialist is chosen"]


@guard("insurance_referral_cleared")
def insurance_referral_cleared(ctx: GuardContext) -> list[str]:
    c = ctx.case
    if not c.referral_required or c.referral_status == ReferralStatus.OBTAINED:
        return []
    status = ReferralStatus(c.referral_status).value.replace("_", " ")
    return [f"the insurance referral is required and not obtained (it is {status})"]


@guard("releases_on_file")
def releases_on_file(ctx: GuardContext) -> list[str]:
    items = ctx.session.exec(
        select(RecordItem).where(RecordItem.case_id == ctx.case.id).order_by(RecordItem.id)
    ).all()
    # A facility needs a release while anything is still expected from it.
    facilities = {i.facility for i in items if i.kind != RecordKind.SIGNED_RELEASE
                  and i.facility != PATIENT_SOURCE and i.status != RecordStatus.WAIVED}
    on_file = {i.facility for i in items if i.kind == RecordKind.SIGNED_RELEASE
               and i.status == RecordStatus.RECEIVED}
    missing = sorted(facilities - on_file)
    if not missing:
        return []
    return [_plural(len(missing), "signed release", "signed releases")
            + " not on file: " + ", ".join(missing)]


@guard("required_records_in")
def required_records_in(ctx: GuardContext) -> list[str]:
    missing = ctx.session.exec(
        select(RecordItem)
        .where(
            RecordItem.case_id == ctx.case.id,
            RecordItem.requirement == Requirement.REQUIRED.value,
            RecordItem.status.in_([RecordStatus.NEEDED.value, RecordStatus.REQUESTED.value]),
        )
        .order_by(RecordItem.id)
    ).all()
    if not missing:
        return []
    return [_plural(len(missing), "required record", "required records") + " missing: "
            + _fmt_items(list(missing))]


# A second opinion is booked within weeks; a date further out than this is a typing
# slip (a year picked wrongly) that would park the case, its clock running, until then.
MAX_APPOINTMENT_DAYS_AHEAD = 180


@guard("appointment_in_future")
def appointment_in_future(ctx: GuardContext) -> list[str]:
    if not ctx.has_params:
        return []
    at = ctx.param("appointment_at")
    if at is None:
        return ["an appointment date and time is needed"]
    return appointment_problems(at, ctx.now)


def appointment_problems(at: datetime, now: datetime) -> list[str]:
    """What is wrong with a visit at `at` (scheduling here, rescheduling in case_ops)."""
    if at <= now:
        return ["the appointment must be in the future"]
    if at > now + timedelta(days=MAX_APPOINTMENT_DAYS_AHEAD):
        return [f"the appointment must be within {MAX_APPOINTMENT_DAYS_AHEAD} days"]
    return []


@guard("appointment_after_records_requested")
def appointment_after_records_requested(ctx: GuardContext) -> list[str]:
    at = ctx.param("appointment_at")
    if at is None:
        return []
    first = ctx.session.exec(
        select(RecordItem.requested_at)
        .where(RecordItem.case_id == ctx.case.id, RecordItem.requested_at.is_not(None))
        .order_by(RecordItem.requested_at)
        .limit(1)
    ).first()
    if first is not None and at < as_utc(first):
        return ["the appointment cannot be before the records were requested "
                f"({as_utc(first):%Y-%m-%d})"]
    return []


def _service_tz():  # noqa: ANN202
    # Messages give times as the coordinator's pages show them: in the service's zone.
    from core.config import get_settings

    return get_settings().tz


@guard("appointment_passed")
def appointment_passed(ctx: GuardContext) -> list[str]:
    at = ctx.case.appointment_at
    if at is None:
        return ["there is no appointment on the case"]
    if as_utc(at) > ctx.now:
        local = as_utc(at).astimezone(_service_tz())
        return [f"the appointment ({local:%Y-%m-%d %H:%M %Z}) has not happened yet"]
    return []


@guard("reason_given")
def reason_given(ctx: GuardContext) -> list[str]:
    if not ctx.has_params or ctx.param("reason"):
        return []
    return ["a reason is needed"]


@guard("missing_records_named")
def missing_records_named(ctx: GuardContext) -> list[str]:
    # "Record missing" sends the case back for those records: without them nothing would
    # be outstanding, and the case could be marked complete again at once.
    if not ctx.has_params or ctx.param("missing_items"):
        return []
    return ["choose the records that are missing"]


@guard("close_reason_valid")
def close_reason_valid(ctx: GuardContext) -> list[str]:
    if not ctx.has_params:
        return []
    reason = ctx.param("close_reason")
    if reason is None:
        return ["a reason for closing is needed"]
    problems = []
    if reason is CloseReason.OTHER and not ctx.param("close_note"):
        problems.append("closing for 'other' needs a note saying why")
    if reason is CloseReason.COMPLETED and not (
        ctx.case.state == CaseState.SEEN and ctx.case.outcome_recorded_at is not None
    ):
        problems.append("a case is completed only once the patient was seen and the outcome "
                        "is recorded")
    return problems


# Records that come from the patient, not from a facility: no release form is needed.
PATIENT_SOURCE = "Patient"


def run_guards(names: tuple[str, ...], ctx: GuardContext) -> list[str]:
    unmet: list[str] = []
    for name in names:
        unmet.extend(GUARDS[name](ctx))
    return unmet
