"""Two people acting on the same case at once (real threads, separate connections):
exactly one wins, the other gets StaleCaseError, and nothing partial is stored - on SQLite
and on PostgreSQL."""

from __future__ import annotations

import threading
import time

from sqlmodel import func, select

from core.db import session_scope
from core.errors import StaleCaseError
from core.models import AuditEntry, Case, CaseEvent, Note
from core.vocab import CaseState, CloseReason
from core.workflows import case_ops
from core.workflows.engine import move_case
from core.workflows.states import Move
from tests.factories import make_user
from tests.workflows.helpers import make_world, walk_to


def _count(session, model, case_id, *extra):
    return session.exec(select(func.count()).select_from(model)
                        .where(model.case_id == case_id, *extra)).one()


def _run_together(ops):
    """Run each op in its own thread and transaction, released at the same instant."""
    barrier = threading.Barrier(len(ops))
    results: list[object] = [None] * len(ops)

    def run(i):
        try:
            barrier.wait()
            results[i] = ops[i]()
        except Exception as exc:  # noqa: BLE001 - the test inspects what each thread got
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(ops))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def _setup(engine, now, state=CaseState.ASSESSED):
    with session_scope(engine) as session:
        world = make_world(session, now)
        case, t = walk_to(session, world, state, now)
        return world, case.id, case.version, t


def _one_round(engine, now):
    world, case_id, version, t = _setup(engine, now)

    def start_referral():
        with session_scope(engine) as s:
            return move_case(s, case_id=case_id, move=Move.START_REFERRAL,
                             actor=world.coord, now=t, expected_version=version).version

    def close():
        with session_scope(engine) as s:
            return move_case(s, case_id=case_id, move=Move.CLOSE, actor=world.mgr, now=t,
                             expected_version=version,
                             close_reason=CloseReason.DECLINED).version

    results = _run_together([start_referral, close])
    stale = [r for r in results if isinstance(r, StaleCaseError)]
    wins = [r for r in results if r == version + 1]
    assert len(wins) == 1 and len(stale) == 1, results
    assert "reload and try again" in str(stale[0])
    with session_scope(engine, write=False) as s:
        case = s.get(Case, case_id)
        assert case.version == version + 1
        assert case.state in (CaseState.REFERRAL, CaseState.CLOSED)
        assert _count(s, CaseEvent, case_id) == 2  # intake + the winner's move
        assert _count(s, AuditEntry, case_id, AuditEntry.action == "case.move") == 1


def test_two_coordinators_moving_the_same_case_at_once_one_wins_one_is_told_it_is_stale(
        engine, now):
    for _ in range(5):
        _one_round(engine, now)


def test_the_second_writer_waits_for_the_first_and_then_gets_the_stale_case_error(engine, now):
    """Deterministic interleaving: A has written but not committed when B starts."""
    world, case_id, version, t = _setup(engine, now)
    a_written, b_started = threading.Event(), threading.Event()

    def first():
        with session_scope(engine) as s:
            move_case(s, case_id=case_id, move=Move.START_REFERRAL, actor=world.coord, now=t,
                      expected_version=version)
            a_written.set()
            b_started.wait(10)
            time.sleep(0.3)  # B is now blocked on the row (PostgreSQL) or the lock (SQLite)
        return "committed"

    def second():
        a_written.wait(10)
        b_started.set()
        with session_scope(engine) as s:
            case_ops.add_note(s, case_id=case_id, body="called the clinic",
                              actor=world.mgr, now=t, expected_version=version)
        return "noted"

    results = _run_together([first, second])
    assert results[0] == "committed"
    assert isinstance(results[1], StaleCaseError), results
    assert world.coordinator.full_name in str(results[1])
    with session_scope(engine, write=False) as s:
        assert s.get(Case, case_id).version == version + 1
        assert _count(s, Note, case_id) == 0
        assert _count(s, AuditEntry, case_id, AuditEntry.action == "case.note") == 0


def test_postgres_second_writer_without_a_page_version_waits_and_applies_on_top(
        pg_engine, now):
    """Both transactions have read version v before either writes. The write path locks
    the case row (SELECT ... FOR UPDATE), so the second writer - which brought no page
    version to compare - waits for the first to commit, then sees its result and moves
    on from there: no spurious stale error, no lost update, two moves in the history."""
    engine = pg_engine
    world, case_id, version, t = _setup(engine, now)
    both_loaded = threading.Barrier(2)
    a_written, b_started = threading.Event(), threading.Event()

    def first():
        with session_scope(engine) as s:
            s.get(Case, case_id)
            both_loaded.wait(10)
            move_case(s, case_id=case_id, move=Move.START_REFERRAL, actor=world.coord, now=t)
            a_written.set()
            b_started.wait(10)
            time.sleep(0.3)
        return "committed"

    def second():
        with session_scope(engine) as s:
            s.get(Case, case_id)
            both_loaded.wait(10)
            a_written.wait(10)
            b_started.set()
            move_case(s, case_id=case_id, move=Move.CLOSE, actor=world.mgr, now=t,
                      close_reason=CloseReason.DECLINED)
        return "closed"

    results = _run_together([first, second])
    assert results == ["committed", "closed"], results
    with session_scope(engine, write=False) as s:
        case = s.get(Case, case_id)
        assert (case.state, case.version) == (CaseState.CLOSED, version + 2)
        assert case.closed_from_state == CaseState.REFERRAL
        assert _count(s, CaseEvent, case_id) == 3


def test_bulk_reassign_reports_each_case_and_keeps_the_ones_that_succeeded(engine, now):
    world, case_a, version_a, t = _setup(engine, now)
    with session_scope(engine) as s:
        case_b, _ = walk_to(s, world, CaseState.REFERRAL, now)
        case_c, _ = walk_to(s, world, CaseState.CLOSED, now)
        other = make_user(s, now=now, team=world.team)
    with session_scope(engine) as s:
        results = case_ops.bulk_reassign(
            s, case_ids=[case_a, case_b.id, case_c.id, 99999], assignee_id=other.id,
            actor=world.mgr, now=t, expected_versions={case_b.id: case_b.version - 1})
    assert [r.ok for r in results] == [True, False, False, False]
    assert "reload" in results[1].message
    assert "closed" in results[2].message
    assert "no case" in results[3].message
    with session_scope(engine, write=False) as s:
        assert s.get(Case, case_a).assignee_id == other.id
        assert s.get(Case, case_a).version == version_a + 1
        assert s.get(Case, case_b.id).assignee_id == world.coordinator.id
