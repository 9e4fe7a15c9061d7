"""Shared set-up for the workflow tests: a team with one user per role and a specialist,
and `walk_to`, which takes a fresh case to any state through the real engine (so the
tests exercise the same path the pages use)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlmodel import Session, select

from core.actor import Actor
from core.models import Case, RecordItem, Specialist, Team, User
from core.vocab import CaseState, CloseReason, RecordKind, RecordStatus, Requirement, Role
from core.workflows import case_ops, records
from core.workflows.engine import move_case
from core.workflows.intake import Assessment, create_case_from_assessment
from core.workflows.states import Move
from tests.factories import actor_for, make_specialist, make_team, make_user

STEP = timedelta(hours=1)


@dataclass
class World:
    team: Team
    coordinator: User
    manager: User
    admin: User
    specialist: Specialist
    other_team: Team
    outsider: User

    @property
    def coord(self) -> Actor:
        return actor_for(self.coordinator)

    @property
    def mgr(self) -> Actor:
        return actor_for(self.manager)

    @property
    def adm(self) -> Actor:
        return actor_for(self.admin)

    @property
    def stranger(self) -> Actor:
        return actor_for(self.outsider)


def make_world(session: Session, now: datetime) -> World:
    team = make_team(session, now=now)
    other = make_team(session, now=now)
    return World(
        team=team,
        coordinator=make_user(session, now=now, team=team),
        manager=make_user(session, now=now, team=team, role=Role.MANAGER),
        admin=make_user(session, now=now, team=None, role=Role.ADMIN),
        specialist=make_specialist(session),
        other_team=other,
        outsider=make_user(session, now=now, team=other),
    )


def assessment(**overrides) -> Assessment:
    values = dict(
        first_name="Ana", last_name="Silva", diagnosis_category="invasive",
        biopsy_date=date(2026, 11, 10), reasons=("wants_confirmation",),
        biopsy_facility="St. Mary's", imaging_facility="Valley Radiology",
    )
    values.update(overrides)
    return Assessment(**values)


def new_case(session: Session, world: World, now: datetime, **overrides) -> Case:
    return create_case_from_assessment(
        session, assessment=assessment(**overrides), team_id=world.team.id,
        assignee_id=world.coordinator.id, actor=world.coord, now=now)


def items(session: Session, case_id: int, *, kind: RecordKind | None = None,
          requirement: Requirement | None = None) -> list[RecordItem]:
    q = select(RecordItem).where(RecordItem.case_id == case_id)
    if kind is not None:
        q = q.where(RecordItem.kind == kind.value)
    if requirement is not None:
        q = q.where(RecordItem.requirement == requirement.value)
    return list(session.exec(q.order_by(RecordItem.id)).all())


def satisfy_request_records(session: Session, world: World, case: Case, t: datetime) -> None:
    """Specialist chosen and every signed release on file."""
    case_ops.choose_specialist(session, case_id=case.id, specialist_id=world.specialist.id,
                               actor=world.coord, now=t)
    for item in items(session, case.id, kind=RecordKind.SIGNED_RELEASE):
        if item.status != RecordStatus.RECEIVED:
            records.receive_record(session, item_id=item.id, actor=world.coord, now=t)


def satisfy_records_complete(session: Session, world: World, case: Case, t: datetime) -> None:
    for item in items(session, case.id, requirement=Requirement.REQUIRED):
        if item.status in (RecordStatus.NEEDED, RecordStatus.REQUESTED):
            if item.status == RecordStatus.NEEDED:
                records.request_record(session, item_id=item.id, actor=world.coord, now=t)
            records.receive_record(session, item_id=item.id, actor=world.coord, now=t)


FUNNEL_PATH = [CaseState.ASSESSED, CaseState.REFERRAL, CaseState.RECORDS_REQUESTED,
               CaseState.RECORDS_RECEIVED, CaseState.SCHEDULED, CaseState.SEEN]


def advance(session: Session, world: World, case: Case, t: datetime) -> tuple[Case, datetime]:
    """One step down the funnel from the case's state, guards satisfied first."""
    state = CaseState(case.state)
    a = world.coord
    if state is CaseState.ASSESSED:
        case = move_case(session, case_id=case.id, move=Move.START_REFERRAL, actor=a, now=t)
    elif state is CaseState.REFERRAL:
        satisfy_request_records(session, world, case, t)
        case = move_case(session, case_id=case.id, move=Move.REQUEST_RECORDS, actor=a, now=t)
    elif state is CaseState.RECORDS_REQUESTED:
        satisfy_records_complete(session, world, case, t)
        case = move_case(session, case_id=case.id, move=Move.RECORDS_COMPLETE, actor=a, now=t)
    elif state is CaseState.RECORDS_RECEIVED:
        case = move_case(session, case_id=case.id, move=Move.SCHEDULE, actor=a, now=t,
                         appointment_at=t + STEP / 2, specialist_id=world.specialist.id)
    elif state is CaseState.SCHEDULED:
        t = max(t, case.appointment_at)
        case = move_case(session, case_id=case.id, move=Move.MARK_SEEN, actor=a, now=t)
    else:
        raise AssertionError(f"cannot advance from {state}")
    return case, t + STEP


def walk_to(session: Session, world: World, state: CaseState | str, now: datetime,
            **assessment_overrides) -> tuple[Case, datetime]:
    """A new case in `state`, reached through the engine; returns it and the next free
    moment (later than anything written)."""
    state = CaseState(state)
    case = new_case(session, world, now, **assessment_overrides)
    t = now + STEP
    if state is CaseState.CLOSED:
        case = move_case(session, case_id=case.id, move=Move.CLOSE, actor=world.coord, now=t,
                         close_reason=CloseReason.DECLINED)
        return case, t + STEP
    while CaseState(case.state) is not state:
        case, t = advance(session, world, case, t)
    return case, t
