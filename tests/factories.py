"""Plain-function factories for tests: build rows directly, with sensible defaults.

They bypass the workflow engine on purpose (to set up any state quickly); tests of the
engine itself go through `core.workflows`. Every factory takes a session and returns the
flushed row.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta

from sqlmodel import Session

from core.actor import Actor
from core.models import Case, CaseEvent, Patient, RecordItem, Specialist, Team, User
from core.validation import search_key
from core.vocab import FUNNEL_RANK, Role
from core.workflows.clocks import apply_deadlines, deadlines_for_case, load_limits

_seq = itertools.count(1)


def make_team(session: Session, *, now: datetime, name: str | None = None) -> Team:
    team = Team(name=name or f"Team {next(_seq)}", created_at=now)
    session.add(team)
    session.flush()
    return team


def make_user(
    session: Session, *, now: datetime, team: Team | None, role: Role = Role.COORDINATOR,
    username: str | None = None, password_hash: str | None = None,
) -> User:
    n = next(_seq)
    user = User(username=username or f"user{n}", full_name=f"User {n}", role=role.value,
                team_id=team.id if team else None, password_hash=password_hash,
                created_at=now)
    session.add(user)
    session.flush()
    return user


def actor_for(user: User, session_id: str | None = None) -> Actor:
    return Actor(user_id=user.id, username=user.username, role=Role(user.role),
                 team_id=user.team_id, session_id=session_id)


def make_patient(session: Session, *, now: datetime, first: str = "Ana",
                 last: str | None = None, mrn: str | None = None) -> Patient:
    n = next(_seq)
    last = last or f"Silva{n}"
    patient = Patient(mrn=mrn or f"MRN{n:06d}", first_name=first, last_name=last,
                      search_name=search_key(f"{first} {last}"), created_at=now)
    session.add(patient)
    session.flush()
    return patient


def make_specialist(session: Session, name: str = "Dr. Rivera") -> Specialist:
    spec = Specialist(name=name, specialty="Breast oncology", institution="Case Desk Centre")
    session.add(spec)
    session.flush()
    return spec


def make_case(
    session: Session, *, now: datetime, team: Team, assignee: User | None = None,
    patient: Patient | None = None, state: str = "assessed", days_in_state: float = 0,
    biopsy_days_ago: int | None = 10, holiday_country: str = "US", **fields,
) -> Case:
    """A case sitting in `state` since `days_in_state` days before `now`, with its intake
    event and stored deadlines."""
    patient = patient or make_patient(session, now=now)
    entered = now - timedelta(days=days_in_state)
    values = dict(
        patient_id=patient.id, team_id=team.id, assignee_id=assignee.id if assignee else None,
        state=state, diagnosis_category="invasive",
        biopsy_date=(now.date() - timedelta(days=biopsy_days_ago)) if biopsy_days_ago is not None
        else None,
        assessed_at=entered, state_entered_at=entered, created_at=entered, updated_at=entered,
    )
    if state == "closed":
        values.update(close_reason="other", close_note="test", closed_from_state="assessed")
    values["furthest_rank"] = FUNNEL_RANK.get(state, 0)  # its one history row entered `state`
    values.update(fields)
    case = Case(**values)
    apply_deadlines(case, deadlines_for_case(case, load_limits(session), holiday_country))
    session.add(case)
    session.flush()
    session.add(CaseEvent(case_id=case.id, from_state=None, to_state=state, at=entered,
                          version=case.version, team_id=case.team_id))
    session.flush()
    return case


def make_record(session: Session, *, case: Case, now: datetime, kind: str = "glass_slides",
                facility: str = "Valley Pathology", requirement: str = "required",
                status: str = "needed", **fields) -> RecordItem:
    item = RecordItem(case_id=case.id, kind=kind, facility=facility, requirement=requirement,
                      status=status, updated_at=now, **fields)
    session.add(item)
    session.flush()
    return item


def today(now: datetime) -> date:
    return now.date()
