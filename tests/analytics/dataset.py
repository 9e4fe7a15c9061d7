"""A small known dataset for the analytics tests, kept as plain Python data (`Spec`) so each
test can compute the expected numbers itself, independently of the SQL under test.

Histories are built the way the workflow writes them: an intake row (no from-state) and
then one row per move carrying the days spent in the state it left.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlmodel import Session

from core.models import Case, CaseEvent, CaseFlag, RecordItem
from core.vocab import FUNNEL, FUNNEL_RANK, Role
from core.workflows.clocks import apply_deadlines, deadlines_for_case, load_limits
from tests.factories import actor_for, make_patient, make_team, make_user

FACILITIES = ["Valley Pathology", "Northside Imaging", "St. Agnes Hospital"]
INSURERS = ["Aetna", "Cigna", None]


@dataclass
class Move:
    from_state: str | None
    to_state: str
    at: datetime
    days: float | None


@dataclass
class Spec:
    key: int
    team: str
    coordinator: str | None
    insurer: str | None
    facilities: list[str]
    assessed_at: datetime
    biopsy_date: date | None
    moves: list[Move] = field(default_factory=list)
    close_reason: str | None = None
    outcome_diagnosis: str | None = None
    outcome_plan: str | None = None
    stalled_flag: bool = False
    risk_flag: bool = False
    case_id: int | None = None

    @property
    def state(self) -> str:
        return self.moves[-1].to_state

    @property
    def entered(self) -> datetime:
        return self.moves[-1].at


def build_specs(now: datetime, n: int = 48, seed: int = 6) -> list[Spec]:
    rnd = random.Random(seed)
    specs = []
    for key in range(n):
        team = "North" if key % 3 else "South"
        coord = {"North": ["n1", "n2", None], "South": ["s1", None]}[team][key % (3 if team ==
                                                                              "North" else 2)]
        assessed = now - timedelta(days=rnd.randint(5, 90), hours=rnd.randint(0, 23))
        biopsy = (assessed - timedelta(days=rnd.randint(3, 25))).date() if key % 7 else None
        spec = Spec(key=key, team=team, coordinator=coord, insurer=INSURERS[key % 3],
                    facilities=rnd.sample(FACILITIES, rnd.randint(0, 2)),
                    assessed_at=assessed, biopsy_date=biopsy)
        spec.moves.append(Move(None, "assessed", assessed, None))
        at, state = assessed, "assessed"
        furthest = rnd.randint(0, len(FUNNEL) - 1)
        k = 0
        while k < furthest:
            days = round(rnd.uniform(0.2, 9.0), 3)
            if at + timedelta(days=days) >= now:
                break
            at += timedelta(days=days)
            nxt = FUNNEL[k + 1].value
            spec.moves.append(Move(state, nxt, at, days))
            state = nxt
            k += 1
            # A no-show now and then: scheduled goes back to records received once.
            if nxt == "scheduled" and key % 5 == 0 and len(spec.moves) < 8:
                d2 = round(rnd.uniform(0.5, 3.0), 3)
                if at + timedelta(days=d2) < now:
                    at += timedelta(days=d2)
                    spec.moves.append(Move("scheduled", "records_received", at, d2))
                    state = "records_received"
                    k -= 1
        if key % 6 == 1 and state != "seen":
            days = round(rnd.uniform(0.1, 2.0), 3)
            if at + timedelta(days=days) < now:
                at += timedelta(days=days)
                spec.moves.append(Move(state, "closed", at, days))
                spec.close_reason = ["declined", "unreachable", "not_a_candidate"][key % 3]
        if spec.state == "seen":
            spec.outcome_diagnosis = ["confirmed", "refined", "refined", "changed",
                                      "not_assessable"][key % 5]
            spec.outcome_plan = ["unchanged", "minor_change", "major_change"][key % 3]
        spec.stalled_flag = key % 4 == 0 and spec.state != "closed"
        spec.risk_flag = key % 5 == 2 and spec.state != "closed"
        specs.append(spec)
    return specs


@dataclass
class Seeded:
    specs: list[Spec]
    teams: dict[str, int]
    users: dict[str, object]

    def actor(self, name: str):  # noqa: ANN201
        return actor_for(self.users[name])


def seed(session: Session, now: datetime, specs: list[Spec] | None = None) -> Seeded:
    specs = specs if specs is not None else build_specs(now)
    north = make_team(session, now=now, name="North")
    south = make_team(session, now=now, name="South")
    teams = {"North": north, "South": south}
    users = {
        "n1": make_user(session, now=now, team=north, username="n1"),
        "n2": make_user(session, now=now, team=north, username="n2"),
        "n3": make_user(session, now=now, team=north, username="n3"),  # nothing assigned
        "s1": make_user(session, now=now, team=south, username="s1"),
        "north_manager": make_user(session, now=now, team=north, role=Role.MANAGER,
                                   username="north_manager"),
        "admin": make_user(session, now=now, team=None, role=Role.ADMIN, username="admin"),
    }
    limits = load_limits(session)
    for spec in specs:
        patient = make_patient(session, now=now)
        last = spec.moves[-1]
        case = Case(
            patient_id=patient.id, team_id=teams[spec.team].id,
            assignee_id=users[spec.coordinator].id if spec.coordinator else None,
            state=spec.state, diagnosis_category="invasive", biopsy_date=spec.biopsy_date,
            assessed_at=spec.assessed_at, state_entered_at=spec.entered,
            created_at=spec.assessed_at, updated_at=spec.entered, insurer=spec.insurer,
            version=len(spec.moves),
            close_reason=spec.close_reason,
            closed_from_state=last.from_state if spec.close_reason else None,
            outcome_diagnosis=spec.outcome_diagnosis, outcome_plan=spec.outcome_plan,
            outcome_recorded_at=spec.entered if spec.outcome_diagnosis else None,
        )
        apply_deadlines(case, deadlines_for_case(case, limits, "US"))
        session.add(case)
        session.flush()
        spec.case_id = case.id
        for v, m in enumerate(spec.moves, start=1):
            session.add(CaseEvent(case_id=case.id, from_state=m.from_state, to_state=m.to_state,
                                  at=m.at, days_in_from_state=m.days, version=v,
                                  team_id=case.team_id))
        # what the write path keeps: the furthest funnel stage any move entered
        case.furthest_rank = max((FUNNEL_RANK.get(m.to_state, 0) for m in spec.moves),
                                 default=0)
        for fac in spec.facilities:
            session.add(RecordItem(case_id=case.id, kind="pathology_report", facility=fac,
                                   requirement="required", updated_at=now))
        if spec.stalled_flag:
            session.add(CaseFlag(case_id=case.id, kind="sla", severity="stalled",
                                 state=spec.state, raised_at=now))
        if spec.risk_flag:
            session.add(CaseFlag(case_id=case.id, kind="deadline_risk", severity="stalled",
                                 state=spec.state, raised_at=now))
    session.flush()
    return Seeded(specs=specs, teams={k: t.id for k, t in teams.items()}, users=users)
