"""The incremental scan leaves exactly what a full scan would (issue 8).

A seeded random run of writes (workflow operations, direct edits of the rule inputs, SLA
limit changes, new history, contact attempts) and clock moves, on SQLite and PostgreSQL.
After every incremental scan a full scan at the same `now` runs in a transaction that is
rolled back; both must leave the same open flags (case, kind, severity, state) and the
same `cases.flag_rank`. And the level of every open flag now, derived from its case
(`core.flag_levels`), must be the same in SQL and in Python.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from core.actor import Actor
from core.db import session_scope
from core.errors import CaseDeskError
from core.flag_levels import Moment, current_severity, current_severity_sql
from core.models import Case, CaseEvent, CaseFlag, SlaRule
from core.scan import run_recompute, run_scan, scan_session
from core.vocab import FUNNEL, ContactOutcome, TreatmentStatus
from core.workflows import case_ops, contacts
from core.workflows.clocks import apply_deadlines, deadlines_for_case, load_limits
from core.workflows.engine import move_case
from core.workflows.states import Move
from tests.factories import make_case, make_team

SYSTEM = Actor.system("test")
CLOCK_STEPS = [timedelta(minutes=5), timedelta(hours=3), timedelta(hours=13), timedelta(days=1),
               timedelta(days=1), timedelta(days=2), timedelta(days=6), -timedelta(hours=2)]


def flag_state(session: Session) -> tuple[set, dict]:
    open_flags = {(f.case_id, f.kind, f.severity, f.state) for f in session.execute(
        select(CaseFlag).where(CaseFlag.resolved_at.is_(None))).scalars()}
    ranks = dict(session.execute(select(Case.id, Case.flag_rank)).all())
    return open_flags, ranks


def levels_now(session: Session, now) -> dict[int, str]:  # noqa: ANN001
    """Each open flag's level now, derived in SQL; asserted equal to the Python rule."""
    f, c = CaseFlag.__table__, Case.__table__
    moment = Moment.at(now)
    rows = session.execute(select(f, c.c.state.label("case_state"), c.c.due_soon_at,
                                  c.c.due_at, c.c.escalate_at, c.c.biopsy_date,
                                  current_severity_sql(f, c, moment).label("level"))
                           .join(c, c.c.id == f.c.case_id)
                           .where(f.c.resolved_at.is_(None))).all()
    levels = {}
    for r in rows:
        case = r._mapping
        in_python = current_severity(
            r, type("CaseRow", (), {**case, "state": case["case_state"]}), moment)
        assert in_python.value == r.level, (r.kind, r.severity, r.level, in_python)
        levels[r.id] = r.level
    return levels


def full_scan_state(engine, now) -> tuple[set, dict]:  # noqa: ANN001
    with session_scope(engine) as session:
        scan_session(session, now=now, full=True)
        state = flag_state(session)
        session.rollback()
    return state


def _edit_intake(session: Session, rng: random.Random, case_id: int, now) -> None:  # noqa: ANN001
    today = now.date()
    field = rng.choice(["biopsy_date", "planned_treatment_start", "treatment_status"])
    if field == "treatment_status":
        value = rng.choice(list(TreatmentStatus)).value
    elif field == "biopsy_date":
        value = rng.choice([None, today - timedelta(days=rng.randint(0, 70))])
    else:
        value = rng.choice([None, today + timedelta(days=rng.randint(-5, 60))])
    session.execute(update(Case).where(Case.id == case_id).values({field: value}))


def _move_directly(session: Session, rng: random.Random, case_id: int, now) -> None:  # noqa: ANN001
    """A state change the way the engine writes it (state clock restarted, deadlines
    stored), without its guards, so every state is reached."""
    case = session.get(Case, case_id)
    case.state = rng.choice(FUNNEL).value
    case.state_entered_at = now - timedelta(days=rng.uniform(0, 20))
    case.on_hold, case.paused_seconds = False, 0
    case.close_reason = case.closed_from_state = None
    apply_deadlines(case, deadlines_for_case(case, load_limits(session), "US"))
    session.add(case)
    session.flush()


def _workflow_op(session: Session, rng: random.Random, case_id: int, now) -> None:  # noqa: ANN001
    op = rng.choice(["move", "hold", "resume", "contact", "contact", "outcome", "close",
                     "reopen"])
    if op == "move":
        move_case(session, case_id=case_id, move=rng.choice(list(Move)), actor=SYSTEM, now=now)
    elif op == "hold":
        case_ops.put_on_hold(session, case_id=case_id, reason="waiting on slides",
                             resume_on=now.date() + timedelta(days=5), actor=SYSTEM, now=now)
    elif op == "resume":
        case_ops.resume(session, case_id=case_id, actor=SYSTEM, now=now)
    elif op == "contact":
        outcome = rng.choice([o.value for o in ContactOutcome] + ["no_answer"] * 3)
        contacts.log_contact(session, case_id=case_id, channel="phone", outcome=outcome,
                             actor=SYSTEM, now=now,
                             at=now - timedelta(minutes=rng.randint(0, 3000)))
    elif op == "outcome":
        case_ops.record_outcome(session, case_id=case_id, diagnosis="confirmed",
                                plan="unchanged", additional_cancer_found=False, actor=SYSTEM,
                                now=now)
    elif op == "close":
        move_case(session, case_id=case_id, move=Move.CLOSE, actor=SYSTEM, now=now,
                  close_reason="other", reason="test")
    else:
        move_case(session, case_id=case_id, move=Move.REOPEN, actor=SYSTEM, now=now,
                  reason="test")


def _change_limit(session: Session, rng: random.Random) -> None:
    rule = session.get(SlaRule, rng.choice(FUNNEL).value)
    rule.limit_days = rng.randint(1, 20)
    rule.business_days = rng.random() < 0.3
    session.add(rule)
    session.flush()


def _add_history(session: Session, rng: random.Random, case: Case, now) -> None:  # noqa: ANN001
    state = rng.choice(FUNNEL).value
    days = rng.uniform(0.5, 15)
    for _ in range(25):
        session.add(CaseEvent(case_id=case.id, team_id=case.team_id, from_state=state,
                              to_state="closed", at=now, version=1,
                              days_in_from_state=days + rng.uniform(-0.5, 0.5)))
    session.flush()


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_scan_leaves_what_a_full_scan_would(engine, now, seed):
    rng = random.Random(seed)
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        ids = []
        for _ in range(30):
            state = rng.choice([s.value for s in FUNNEL] * 2 + ["closed"])
            case = make_case(
                session, now=now, team=team, state=state, days_in_state=rng.uniform(0, 25),
                biopsy_days_ago=rng.choice([None, rng.randint(0, 70)]),
                planned_treatment_start=rng.choice(
                    [None, now.date() + timedelta(days=rng.randint(-3, 50))]),
                on_hold=False)
            ids.append(case.id)
    run_scan(engine, now=now)
    incremental = 0
    for _ in range(60):
        step = rng.random()
        if step < 0.3:
            now += rng.choice(CLOCK_STEPS)
        with session_scope(engine) as session:
            for _ in range(rng.randint(0, 4)):
                case_id = rng.choice(ids)
                kind = rng.random()
                try:
                    if kind < 0.45:
                        _workflow_op(session, rng, case_id, now)
                    elif kind < 0.65:
                        _edit_intake(session, rng, case_id, now)
                    elif kind < 0.85:
                        _move_directly(session, rng, case_id, now)
                    elif kind < 0.93:
                        _change_limit(session, rng)
                    else:
                        _add_history(session, rng, session.get(Case, case_id), now)
                except CaseDeskError:
                    pass  # a refused operation writes nothing (savepoint)
        if rng.random() < 0.15:
            run_recompute(engine, now=now)  # the nightly job: deadlines and stage medians
        result = run_scan(engine, now=now)
        incremental += not result.full
        with session_scope(engine) as session:
            got = flag_state(session)
            levels_now(session, now)
            levels_now(session, now + rng.choice(CLOCK_STEPS))  # and as time moves on
        expected = full_scan_state(engine, now)
        assert got[0] == expected[0], f"open flags differ at {now}"
        assert got[1] == expected[1], f"flag_rank differs at {now}"
    assert incremental == 60  # every scan after the first had a context to start from


@pytest.mark.postgres
def test_a_write_committed_during_a_scan_is_picked_up_by_the_next_one(pg_engine, now):
    # PostgreSQL lets a writer and the scan run at once (SQLite serialises them): a case
    # written but not yet committed while the scan claims the marks is not claimed, and
    # its mark, committed afterwards, brings it into the next scan.
    engine = pg_engine
    with session_scope(engine) as session:
        case = make_case(session, now=now, team=make_team(session, now=now),
                         biopsy_days_ago=None)
    run_scan(engine, now=now)
    with engine.connect() as writer:
        writer.execute(update(Case).where(Case.id == case.id)
                       .values(biopsy_date=now.date() - timedelta(days=50)))
        during = run_scan(engine, now=now)  # does not wait for the writer
        writer.commit()
    assert during.raised == 0
    after = run_scan(engine, now=now)
    assert (after.raised, after.examined, after.full) == (1, 1, False)
    with session_scope(engine) as session:
        assert flag_state(session)[0] == {(case.id, "patient_clock", "stalled", "assessed")}


@pytest.mark.parametrize("full", [True, False])
def test_a_scan_that_empties_the_dirty_index_drops_its_stale_statistics(
        sqlite_engine, now, monkeypatch, full):
    """Statistics taken while every case was dirty (after the demo's bulk load) said the
    partial index ix_cases_scan_dirty held every case, and SQLite walked the whole table
    for `scan_dirty = 1` on every later scan (1.3 s at a million cases): a scan that
    clears many dirty cases analyzes the index it has just emptied."""
    from core.scan import sweep

    monkeypatch.setattr(sweep, "DIRTY_STATISTICS_CLEARED", 2)
    with session_scope(sqlite_engine) as s:
        team = make_team(s, now=now)
        for _ in range(3):
            make_case(s, now=now, team=team, days_in_state=2)
    if not full:
        run_scan(sqlite_engine, now=now)  # the next one is incremental
        with sqlite_engine.begin() as conn:
            conn.exec_driver_sql("UPDATE cases SET scan_dirty = 1")
    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")

    def stale() -> list:
        with sqlite_engine.connect() as conn:
            return conn.exec_driver_sql("SELECT stat FROM sqlite_stat1 "
                                        "WHERE idx = 'ix_cases_scan_dirty'").all()

    assert stale() == [("3 1",)]
    assert run_scan(sqlite_engine, now=now).full is full
    assert stale() == []


def test_time_moving_forward_raises_from_the_range_without_listing_the_cases(engine, now):
    # A case the clock alone moved past its SLA threshold is raised straight from the
    # index range: it is not on the work list (examined counts the list) and gets one
    # flag; a case also written since is listed, and the range's anti-join leaves it at
    # one flag too. Moving the clock back lists them again and resolves both.
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        untouched, written = (make_case(session, now=now, team=team, state="referral",
                                        biopsy_days_ago=None) for _ in range(2))
    first = run_scan(engine, now=now)
    assert first.full and first.changed == 0
    with session_scope(engine) as session:
        session.execute(update(Case).where(Case.id == written.id).values(
            planned_treatment_start=now.date() + timedelta(days=400)))
    later = run_scan(engine, now=now + timedelta(days=30))
    assert (later.raised, later.resolved, later.examined, later.full) == (2, 0, 1, False)
    with session_scope(engine) as session:
        assert {(c, k) for c, k, _, _ in flag_state(session)[0]} == {
            (untouched.id, "sla"), (written.id, "sla")}
    back = run_scan(engine, now=now)
    assert (back.raised, back.resolved, back.examined) == (0, 2, 2)
    with session_scope(engine) as session:
        assert flag_state(session)[0] == set()
