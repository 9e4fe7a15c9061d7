"""The demo generator: histories that obey the workflow, stored clocks that match them,
the same data for the same seed, and refusals."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlmodel import Session

from core.db import create_db_engine, migrate, session_scope
from core.demo import DEMO_PASSWORDS, ensure_demo_accounts, generate_demo
from core.errors import CaseDeskError, ValidationError
from core.models import Case, CaseEvent, RecordItem, User
from core.timeutil import as_utc
from core.users import verify_password
from core.vocab import FUNNEL, CaseState, CloseReason, Role
from core.workflows.clocks import load_limits, sla_deadlines

NOW = datetime(2026, 11, 25, tzinfo=UTC)
S = CaseState
OPEN = {s.value for s in FUNNEL}
# DESIGN.md section 4, written out again here on purpose (not imported from the engine).
ALLOWED = {
    (S.ASSESSED, S.REFERRAL), (S.REFERRAL, S.RECORDS_REQUESTED),
    (S.RECORDS_REQUESTED, S.RECORDS_RECEIVED), (S.RECORDS_RECEIVED, S.SCHEDULED),
    (S.SCHEDULED, S.SEEN), (S.RECORDS_RECEIVED, S.RECORDS_REQUESTED),
    (S.SCHEDULED, S.RECORDS_RECEIVED),
} | {(s, S.CLOSED) for s in FUNNEL}
ALLOWED = {(a.value, b.value) for a, b in ALLOWED}


def _events_by_case(session: Session) -> dict[int, list[CaseEvent]]:
    by_case: dict[int, list[CaseEvent]] = defaultdict(list)
    for ev in session.exec(select(CaseEvent).order_by(CaseEvent.case_id, CaseEvent.version)
                           ).scalars():
        by_case[ev.case_id].append(ev)
    return by_case


def test_demo_histories_obey_the_workflow_and_clocks_match(engine):
    summary = generate_demo(engine, cases=400, now=NOW, seed=5, parallel=False,
                            enforce_constraints=True)
    assert summary.cases == 400
    with Session(engine) as session:
        limits = load_limits(session)
        cases = session.exec(select(Case)).scalars().all()
        events = _events_by_case(session)
    assert {c.state for c in cases} == OPEN | {"closed"}, "cases in every state"
    for case in cases:
        history = events[case.id]
        first = history[0]
        assert (first.from_state, first.to_state, first.version) == (None, "assessed", 1)
        assert as_utc(first.at) == as_utc(case.assessed_at)
        for prev, ev in zip(history, history[1:], strict=False):
            assert ev.version == prev.version + 1, f"case {case.id}: versions consecutive"
            assert ev.from_state == prev.to_state, f"case {case.id}: moves chain"
            assert (ev.from_state, ev.to_state) in ALLOWED, f"case {case.id}: {ev.from_state}"
            assert ev.at >= prev.at
            days = (as_utc(ev.at) - as_utc(prev.at)).total_seconds() / 86400
            assert ev.days_in_from_state == pytest.approx(days, abs=1e-3)
            if ev.from_state in ("records_received", "scheduled") and ev.to_state != "closed" \
                    and ev.to_state in ("records_requested", "records_received"):
                assert ev.reason, "backward moves carry a reason"
        last = history[-1]
        assert last.to_state == case.state
        assert case.version == len(history)
        assert as_utc(case.state_entered_at) == as_utc(last.at)
        assert as_utc(last.at) <= NOW
        if case.state == "closed":
            assert case.close_reason in {r.value for r in CloseReason}
            assert case.closed_from_state == last.from_state
            assert (case.close_reason == "completed") == (case.closed_from_state == "seen")
        expected = sla_deadlines(
            state=case.state, state_entered_at=case.state_entered_at,
            paused_seconds=case.paused_seconds, on_hold=case.on_hold,
            outcome_recorded=case.outcome_recorded_at is not None, limits=limits)
        stored = (case.due_soon_at, case.due_at, case.escalate_at)
        assert tuple(as_utc(x) if x else None for x in stored) == (
            expected.due_soon_at, expected.due_at, expected.escalate_at), case.id


def test_demo_has_stalled_cases_and_cases_near_their_treatment_date(sqlite_engine):
    generate_demo(sqlite_engine, cases=1500, now=NOW, seed=9)
    with Session(sqlite_engine) as session:
        cases = session.exec(select(Case)).scalars().all()
    open_cases = [c for c in cases if c.state != "closed"]
    stalled = [c for c in open_cases if c.due_at and as_utc(c.due_at) < NOW]
    escalated = [c for c in open_cases if c.escalate_at and as_utc(c.escalate_at) < NOW]
    assert 0.15 < len(stalled) / len(open_cases) < 0.6
    assert escalated
    near = [c for c in open_cases if c.planned_treatment_start
            and 0 <= (c.planned_treatment_start - NOW.date()).days <= 21]
    assert len(near) > 20
    assert any(c.on_hold and c.due_at is None for c in open_cases)
    assert sum(c.no_show_count for c in cases) > 0


def test_demo_cases_have_about_six_history_rows_with_records_sent_back(sqlite_engine):
    """Issue 8's benchmark databases are the demo's: about six history rows per case,
    the depth comes from backward moves (a record found missing, a visit rebooked)."""
    summary = generate_demo(sqlite_engine, cases=3000, now=NOW, seed=11)
    with Session(sqlite_engine) as session:
        rows = session.execute(text("SELECT count(*) FROM case_event")).scalar_one()
        back = dict(session.execute(text(
            "SELECT from_state || '>' || to_state, count(*) FROM case_event "
            "WHERE (from_state, to_state) IN (('records_received', 'records_requested'), "
            "('scheduled', 'records_received')) GROUP BY 1")).all())
    assert rows == summary.events
    assert 5.6 <= rows / 3000 <= 6.4, rows / 3000
    assert back["records_received>records_requested"] > back["scheduled>records_received"] > 0


def test_demo_outcomes_follow_the_published_mix(sqlite_engine):
    generate_demo(sqlite_engine, cases=3000, now=NOW, seed=11)
    with Session(sqlite_engine) as session:
        outcomes = Counter(session.exec(
            select(Case.outcome_diagnosis).where(Case.outcome_diagnosis.is_not(None))
        ).scalars())
    total = sum(outcomes.values())
    assert total > 800
    assert outcomes["confirmed"] / total == pytest.approx(0.12, abs=0.03)
    assert outcomes["refined"] / total == pytest.approx(0.66, abs=0.04)
    assert outcomes["changed"] / total == pytest.approx(0.21, abs=0.03)
    assert outcomes["not_assessable"] / total < 0.03


def test_demo_record_statuses_fit_the_case_state(sqlite_engine):
    generate_demo(sqlite_engine, cases=600, now=NOW, seed=13)
    with Session(sqlite_engine) as session:
        cases = {c.id: c for c in session.exec(select(Case)).scalars()}
        items = session.exec(select(RecordItem)).scalars().all()
    by_case = defaultdict(list)
    for item in items:
        by_case[item.case_id].append(item)
    assert set(by_case) == set(cases), "every case has its checklist from intake"
    for case_id, case in cases.items():
        phase_state = case.closed_from_state or case.state
        required = [i for i in by_case[case_id] if i.requirement == "required"]
        statuses = {i.status for i in required}
        if phase_state == "assessed":
            assert statuses == {"needed"}
        elif phase_state == "referral":
            assert {i.status for i in required if i.kind != "signed_release"} == {"needed"}
        elif phase_state == "records_requested":
            releases = [i for i in required if i.kind == "signed_release"]
            assert all(i.status == "received" for i in releases)
        else:
            assert statuses <= {"received", "waived"}, case_id
        for i in by_case[case_id]:
            if i.received_at and i.requested_at:
                assert i.received_at >= i.requested_at
            if i.status == "waived":
                assert i.waive_reason


def _dump(url: str) -> dict[str, list[tuple]]:
    eng = create_db_engine(url)
    tables = ("team", "app_user", "specialist", "patient", "cases", "case_event",
              "record_item", "contact_attempt")
    with eng.connect() as conn:
        dump = {t: conn.execute(text(f"SELECT * FROM {t} ORDER BY id")).all() for t in tables}
    eng.dispose()
    return dump


def _fresh(tmp_path, name: str) -> str:
    url = f"sqlite:///{tmp_path / name}"
    eng = create_db_engine(url)
    migrate(eng)
    return url


def test_same_seed_gives_the_same_data_whatever_the_process_layout(tmp_path):
    urls = [_fresh(tmp_path, f"{n}.db") for n in ("a", "b", "c", "d")]
    generate_demo(create_db_engine(urls[0]), cases=250, now=NOW, seed=3, parallel=False)
    generate_demo(create_db_engine(urls[1]), cases=250, now=NOW, seed=3, parallel=True,
                  chunk=60)
    generate_demo(create_db_engine(urls[2]), cases=250, now=NOW, seed=4, parallel=False)
    generate_demo(create_db_engine(urls[3]), cases=250, now=NOW + timedelta(days=1), seed=3,
                  parallel=False)
    a, b, c, d = (_dump(u) for u in urls)
    assert a == b
    assert a["cases"] != c["cases"]
    assert a["patient"] != c["patient"]
    assert a["case_event"] != d["case_event"], "the reference time moves every timestamp"


def test_demo_sequences_continue_after_the_bulk_ids(engine, now):
    generate_demo(engine, cases=30, now=NOW, seed=1, parallel=False)
    from tests.factories import make_case, make_team

    with session_scope(engine) as session:
        team = make_team(session, now=now)
        case = make_case(session, now=now, team=team)
        assert case.id == 31


def test_demo_refuses_a_database_that_holds_cases(sqlite_engine):
    generate_demo(sqlite_engine, cases=5, now=NOW, seed=1)
    with pytest.raises(CaseDeskError, match="already holds 5 cases"):
        generate_demo(sqlite_engine, cases=5, now=NOW, seed=1)


@pytest.mark.parametrize("cases", [0, -5, 10_000_000])
def test_demo_refuses_absurd_sizes(sqlite_engine, cases):
    with pytest.raises(ValidationError, match="--cases"):
        generate_demo(sqlite_engine, cases=cases, now=NOW)


def test_demo_accounts_only_in_demo_mode(sqlite_engine):
    with session_scope(sqlite_engine) as session, pytest.raises(CaseDeskError, match="demo"):
        ensure_demo_accounts(session, NOW, demo_mode=False)


def test_demo_accounts_sign_in_and_the_coordinator_has_cases(sqlite_engine):
    generate_demo(sqlite_engine, cases=200, now=NOW, seed=2)
    with session_scope(sqlite_engine) as session:
        accounts = ensure_demo_accounts(session, NOW, demo_mode=True)
    assert set(accounts) == set(Role)
    with Session(sqlite_engine) as session:
        for role, (username, password) in accounts.items():
            user = session.exec(select(User).where(User.username == username)).scalars().one()
            assert user.role == role.value
            assert verify_password(user.password_hash, DEMO_PASSWORDS[role])
            assert password == DEMO_PASSWORDS[role]
        coordinator = session.exec(select(User).where(User.username == "coordinator")
                                   ).scalars().one()
        mine = session.exec(select(Case.id).where(Case.assignee_id == coordinator.id)).all()
    assert mine, "the demo coordinator signs in to a real queue"
    # Running it again (every `make run`) changes nothing but the hashes.
    with session_scope(sqlite_engine) as session:
        again = ensure_demo_accounts(session, NOW, demo_mode=True)
    assert again == accounts


def test_demo_accounts_in_an_empty_database(engine):
    with session_scope(engine) as session:
        accounts = ensure_demo_accounts(session, NOW, demo_mode=True)
    with Session(engine) as session:
        users = session.exec(select(User)).scalars().all()
    assert sorted(u.username for u in users) == sorted(u for u, _ in accounts.values())
