"""The records checklist (DESIGN.md section 6).

One row per record kind and source facility, created from a template for the diagnosis.
Every change of an item also bumps the case's version (compare-and-set), so a page
showing an old checklist cannot overwrite a newer one, and writes an audit row.

Conditional items are put on the checklist only when their condition holds at intake
(an operative note only once treatment has started, staging scans for invasive cancer);
like optional items they do not block "records complete" - only required items do
(DESIGN.md section 4) - but they show up for the coordinator to chase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import bindparam, update
from sqlmodel import Session, select

from core import audit, driver_sql
from core.actor import Actor
from core.errors import NotFoundError, ValidationError
from core.models import REASON_MAX, SHORT_MAX, Case, RecordItem
from core.permissions import Action
from core.timeutil import as_utc
from core.validation import clean_text, parse_date, require_text
from core.vocab import (
    DiagnosisCategory,
    RecordKind,
    RecordStatus,
    Requirement,
    TreatmentStatus,
)
from core.workflows.clocks import local_today
from core.workflows.guards import PATIENT_SOURCE
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

BIOPSY, IMAGING, PATIENT = "biopsy", "imaging", "patient"
DEFAULT_CHASE_DAYS = 7
# Physical material travels by courier and has a tracking number.
PHYSICAL_KINDS = frozenset({RecordKind.GLASS_SLIDES, RecordKind.PARAFFIN_BLOCKS,
                            RecordKind.IMAGING_IMAGES})
R, C, OPT = Requirement.REQUIRED, Requirement.CONDITIONAL, Requirement.OPTIONAL


@dataclass(frozen=True)
class TemplateItem:
    kind: RecordKind
    requirement: Requirement
    source: str  # biopsy / imaging facility, or the patient
    applies: Callable[[str, str], bool] | None = None  # (diagnosis, treatment) -> bool


def _treated(_diagnosis: str, treatment: str) -> bool:
    return treatment == TreatmentStatus.TREATMENT_STARTED


def _invasive(diagnosis: str, _treatment: str) -> bool:
    return diagnosis == DiagnosisCategory.INVASIVE


def _cancer(diagnosis: str, _treatment: str) -> bool:
    return diagnosis in (DiagnosisCategory.INVASIVE, DiagnosisCategory.DCIS)


BREAST_TEMPLATE: tuple[TemplateItem, ...] = (
    TemplateItem(RecordKind.PATHOLOGY_REPORT, R, BIOPSY),
    TemplateItem(RecordKind.GLASS_SLIDES, R, BIOPSY),
    TemplateItem(RecordKind.IMAGING_REPORT, R, IMAGING),
    TemplateItem(RecordKind.IMAGING_IMAGES, R, IMAGING),
    TemplateItem(RecordKind.PRIOR_COMPARISON, R, IMAGING),
    TemplateItem(RecordKind.TREATMENT_RECOMMENDATION, R, BIOPSY),
    TemplateItem(RecordKind.MEDICATION_LIST, R, PATIENT),
    TemplateItem(RecordKind.INSURANCE_REFERRAL, R, PATIENT),
    TemplateItem(RecordKind.OPERATIVE_NOTE, C, BIOPSY, _treated),
    TemplateItem(RecordKind.DISCHARGE_SUMMARY, C, BIOPSY, _treated),
    TemplateItem(RecordKind.GENETIC_RESULTS, C, BIOPSY, _cancer),
    TemplateItem(RecordKind.STAGING_SCANS, C, IMAGING, _invasive),
    TemplateItem(RecordKind.LABS, C, BIOPSY, _treated),
    TemplateItem(RecordKind.PARAFFIN_BLOCKS, OPT, BIOPSY),
    TemplateItem(RecordKind.FAMILY_HISTORY, OPT, PATIENT),
)


def checklist_template(*, diagnosis_category: str, treatment_status: str) -> list[TemplateItem]:
    """The items that apply to this diagnosis (breast is the only template so far)."""
    return [t for t in BREAST_TEMPLATE
            if t.applies is None or t.applies(diagnosis_category, treatment_status)]


def facility_for(source: str, *, biopsy_facility: str | None,
                 imaging_facility: str | None) -> str:
    if source == PATIENT:
        return PATIENT_SOURCE
    if source == BIOPSY:
        return biopsy_facility or "Biopsy facility (to be confirmed)"
    return imaging_facility or "Imaging facility (to be confirmed)"


def build_checklist(session: Session, *, case: Case, now: datetime) -> list[RecordItem]:
    """Create the checklist of a new case, plus one signed release per source facility.
    Called by intake inside its own transaction, right after the case is inserted."""
    items: list[RecordItem] = []
    facilities: list[str] = []
    for t in checklist_template(diagnosis_category=case.diagnosis_category,
                                treatment_status=case.treatment_status):
        facility = facility_for(t.source, biopsy_facility=case.biopsy_facility,
                                imaging_facility=case.imaging_facility)
        items.append(RecordItem(case_id=case.id, kind=t.kind.value,
                                 requirement=t.requirement.value, facility=facility,
                                 updated_at=now))
        if facility != PATIENT_SOURCE and facility not in facilities:
            facilities.append(facility)
    items.extend(RecordItem(case_id=case.id, kind=RecordKind.SIGNED_RELEASE.value,
                            requirement=R.value, facility=f, updated_at=now)
                 for f in facilities)
    session.add_all(items)
    session.flush()
    return items


# --- operations on one item ---------------------------------------------------------------


def _load_item(session: Session, item_id: int) -> RecordItem:
    item = session.get(RecordItem, item_id, populate_existing=True) if isinstance(
        item_id, int) else None
    if item is None:
        raise NotFoundError(f"There is no record item {item_id!r}.")
    return item


def _begin(session: Session, *, item_id: int, actor: Actor,
           expected_version: int | None, what: str) -> tuple[RecordItem, Case]:
    item = _load_item(session, item_id)
    case = load_case(session, item.case_id)
    # Read the item again now that the case is locked: a writer we waited for may have
    # changed it (requested it a moment ago, say), and the checks below must see that.
    item = _load_item(session, item_id)
    require_team_access(actor, case)
    check_version(session, case, expected_version)
    require_case_right(actor, Action.MOVE_CASE, case)
    require_open(case, what)
    return item, case


def _label(item: RecordItem) -> str:
    return f"{RecordKind(item.kind).label} ({item.facility})"


def _when(value: datetime | None, *, now: datetime, field: str) -> datetime:
    """A past or present moment; default now. Refuses the future."""
    if value is None:
        return now
    value = utc(value, field=field)
    if value > now:
        raise ValidationError(f"{field} cannot be in the future ({value:%Y-%m-%d %H:%M} UTC).")
    return value


def _finish(session: Session, *, case: Case, item: RecordItem, actor: Actor, now: datetime,
            action: str, item_changes: dict, detail: dict | None = None) -> Case:
    compare_and_set(session, case, actor=actor, now=now, changes={})
    for name, value in item_changes.items():
        setattr(item, name, value)
    item.updated_at = now
    session.add(item)
    session.flush()
    audit.record(session, actor=actor, action=action, now=now, case_id=case.id,
                 detail={"item_id": item.id, "kind": item.kind, "status": item.status,
                         "version": case.version, **(detail or {})})
    return case


def request_record(
    session: Session, *, item_id: int, actor: Actor, now: datetime,
    requested_at: datetime | None = None, chase_on: date | str | None = None,
    expected_version: int | None = None,
) -> Case:
    """Mark an item requested (again: a repeat request moves the dates on)."""
    now = utc(now, field="now")
    with atomic(session):
        item, case = _begin(session, item_id=item_id, actor=actor,
                            expected_version=expected_version, what="request records")
        if item.status not in (RecordStatus.NEEDED, RecordStatus.REQUESTED):
            raise ValidationError(f"{_label(item)} is already {item.status}; "
                                  "it cannot be requested.")
        at = _when(requested_at, now=now, field="Requested date")
        chase = (parse_date(chase_on, field="Chase date") if chase_on is not None
                 else at.date() + timedelta(days=DEFAULT_CHASE_DAYS))
        if chase < at.date():
            raise ValidationError("The chase date cannot be before the request date.")
        return _finish(session, case=case, item=item, actor=actor, now=now,
                       action="record.request",
                       item_changes={"status": RecordStatus.REQUESTED.value,
                                     "requested_at": at, "chase_on": chase})


def receive_record(
    session: Session, *, item_id: int, actor: Actor, now: datetime,
    received_at: datetime | None = None, tracking_number: str | None = None,
    expected_version: int | None = None,
) -> Case:
    now = utc(now, field="now")
    with atomic(session):
        item, case = _begin(session, item_id=item_id, actor=actor,
                            expected_version=expected_version, what="receive records")
        if item.status not in (RecordStatus.NEEDED, RecordStatus.REQUESTED):
            raise ValidationError(f"{_label(item)} is already {item.status}.")
        at = _when(received_at, now=now, field="Received date")
        if item.requested_at is not None and at < as_utc(item.requested_at):
            raise ValidationError(
                f"{_label(item)} cannot be received ({at:%Y-%m-%d}) before it was requested "
                f"({as_utc(item.requested_at):%Y-%m-%d})."
            )
        changes: dict = {"status": RecordStatus.RECEIVED.value, "received_at": at,
                         "chase_on": None}
        if tracking_number is not None:
            changes["tracking_number"] = _tracking(item, tracking_number)
        return _finish(session, case=case, item=item, actor=actor, now=now,
                       action="record.receive", item_changes=changes)


def waive_record(
    session: Session, *, item_id: int, reason: str, actor: Actor, now: datetime,
    expected_version: int | None = None,
) -> Case:
    """Mark an item not needed after all; the reason is kept on the item."""
    now = utc(now, field="now")
    with atomic(session):
        item, case = _begin(session, item_id=item_id, actor=actor,
                            expected_version=expected_version, what="waive records")
        text = require_text(reason, field="Reason for waiving", max_length=REASON_MAX)
        if item.kind == RecordKind.SIGNED_RELEASE:
            raise ValidationError("A signed release cannot be waived: no facility sends "
                                  "records without one.")
        if item.status not in (RecordStatus.NEEDED, RecordStatus.REQUESTED):
            raise ValidationError(f"{_label(item)} is already {item.status}.")
        return _finish(session, case=case, item=item, actor=actor, now=now,
                       action="record.waive",
                       item_changes={"status": RecordStatus.WAIVED.value,
                                     "waive_reason": text, "chase_on": None})


def set_chase_date(
    session: Session, *, item_id: int, chase_on: date | str, actor: Actor, now: datetime,
    expected_version: int | None = None,
) -> Case:
    now = utc(now, field="now")
    with atomic(session):
        item, case = _begin(session, item_id=item_id, actor=actor,
                            expected_version=expected_version, what="set a chase date")
        day = parse_date(chase_on, field="Chase date")
        # Not in the past, so never before the request either (a request is never
        # dated in the future).
        if day < local_today(now):
            raise ValidationError(f"The chase date cannot be in the past ({day.isoformat()}).")
        if item.status != RecordStatus.REQUESTED:
            raise ValidationError(f"{_label(item)} is {item.status}; only a requested record "
                                  "can be chased.")
        return _finish(session, case=case, item=item, actor=actor, now=now,
                       action="record.chase", item_changes={"chase_on": day})


def _tracking(item: RecordItem, value: str) -> str | None:
    if RecordKind(item.kind) not in PHYSICAL_KINDS:
        raise ValidationError(f"{_label(item)} is not sent by courier; it has no tracking "
                              "number.")
    return clean_text(value, field="Tracking number", max_length=64)


def set_tracking_number(
    session: Session, *, item_id: int, tracking_number: str, actor: Actor, now: datetime,
    expected_version: int | None = None,
) -> Case:
    now = utc(now, field="now")
    with atomic(session):
        item, case = _begin(session, item_id=item_id, actor=actor,
                            expected_version=expected_version, what="set a tracking number")
        number = _tracking(item, tracking_number)
        return _finish(session, case=case, item=item, actor=actor, now=now,
                       action="record.tracking", item_changes={"tracking_number": number})


def add_record_item(
    session: Session, *, case_id: int, kind: RecordKind | str, facility: str,
    actor: Actor, now: datetime, requirement: Requirement | str = Requirement.OPTIONAL,
    expected_version: int | None = None,
) -> Case:
    """Add an item the template did not foresee (another facility, a new record). A new
    facility also gets its signed-release item."""
    now = utc(now, field="now")
    with atomic(session):
        case = load_case(session, case_id)
        require_team_access(actor, case)
        check_version(session, case, expected_version)
        require_case_right(actor, Action.MOVE_CASE, case)
        require_open(case, "add records")
        try:
            kind = RecordKind(kind)
            requirement = Requirement(requirement)
        except ValueError as exc:
            raise ValidationError(f"Unknown record kind or requirement: {exc}.") from None
        place = require_text(facility, field="Facility", max_length=SHORT_MAX)
        existing = session.exec(select(RecordItem).where(RecordItem.case_id == case.id)).all()
        if any(i.kind == kind and i.facility == place for i in existing):
            raise ValidationError(f"{kind.label} ({place}) is already on the checklist.")
        compare_and_set(session, case, actor=actor, now=now, changes={})
        new = [RecordItem(case_id=case.id, kind=kind.value, requirement=requirement.value,
                          facility=place, updated_at=now)]
        has_release = any(i.kind == RecordKind.SIGNED_RELEASE and i.facility == place
                          for i in existing)
        if (place != PATIENT_SOURCE and kind is not RecordKind.SIGNED_RELEASE
                and not has_release):
            new.append(RecordItem(case_id=case.id, kind=RecordKind.SIGNED_RELEASE.value,
                                  requirement=R.value, facility=place, updated_at=now))
        session.add_all(new)
        session.flush()
        audit.record(session, actor=actor, action="record.add", now=now, case_id=case.id,
                     detail={"item_ids": [i.id for i in new], "kind": kind.value,
                             "version": case.version})
    return case


# "Record missing" runs inside a move, the hottest write there is: these statements run
# on the driver's cursor (core.driver_sql), one per item named (usually one). An
# expanding IN would send them back through SQLAlchemy's execution, which cost as much
# as the rest of the move.
_ITEMS = RecordItem.__table__
_ITEM_STATUS = select(_ITEMS.c.status).where(_ITEMS.c.id == bindparam("b_item"),
                                             _ITEMS.c.case_id == bindparam("b_case"))
_REQUEST_AGAIN = (
    update(_ITEMS).where(_ITEMS.c.id == bindparam("b_item"),
                         _ITEMS.c.case_id == bindparam("b_case"))
    .values(status=RecordStatus.REQUESTED.value, requirement=Requirement.REQUIRED.value,
            requested_at=bindparam("b_now"), received_at=None, waive_reason=None,
            tracking_number=None, chase_on=bindparam("b_chase"), updated_at=bindparam("b_now"))
)


def item_statuses(session: Session, *, case_id: int, item_ids: tuple[int, ...]
                  ) -> dict[int, str]:
    """The status of each of these items that is on this case (others are left out)."""
    conn = session.connection()
    found = {}
    for item_id in item_ids:
        row = driver_sql.fetch_first(conn, _ITEM_STATUS, {"b_item": item_id, "b_case": case_id})
        if row is not None:
            found[item_id] = row["status"]
    return found


def request_again(session: Session, *, case_id: int, item_ids: tuple[int, ...],
                  now: datetime) -> None:
    """Items found missing after all ("Record missing", `engine.move_case`, which has
    checked them and writes the audit row): required and requested again from now,
    with the usual chase date in the service's calendar. When they arrived, why they
    were waived and the old courier's tracking number are cleared."""
    conn = session.connection()
    chase = local_today(now) + timedelta(days=DEFAULT_CHASE_DAYS)
    for item_id in item_ids:
        driver_sql.execute(conn, _REQUEST_AGAIN, {"b_item": item_id, "b_case": case_id,
                                                  "b_now": now, "b_chase": chase})


def checklist(session: Session, *, case_id: int) -> list[RecordItem]:
    """The items of a case in checklist order (for display; the caller checked VIEW_CASE)."""
    return list(session.exec(
        select(RecordItem).where(RecordItem.case_id == case_id).order_by(RecordItem.id)
    ).all())
