"""The move's write path (core/workflows/write.py): what the Core statements must keep
that the ORM used to give for free - limits never stale, the session's own copy of a case
kept current, the funnel's furthest stage and the team on each history row."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from core.db import create_db_engine, session_scope
from core.models import Case, CaseEvent, RecordItem, SlaRule
from core.vocab import FUNNEL_RANK, Role
from core.workflows.engine import move_case
from core.workflows.states import Move
from tests.factories import actor_for, make_case, make_record, make_team, make_user


def _scene(engine, now):
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        manager = actor_for(make_user(session, now=now, team=team, role=Role.MANAGER))
        ids = []
        for _ in range(2):
            case = make_case(session, now=now, team=team, state="records_received")
            make_record(session, case=case, now=now, status="received")
            ids.append(case.id)
    return manager, ids


def _missing(session, case_id):  # noqa: ANN001, ANN202
    """What "record missing" needs besides a reason: the case's received record."""
    return {"missing_items": list(session.execute(
        select(RecordItem.id).where(RecordItem.case_id == case_id)).scalars())}


def test_a_move_uses_a_limit_another_process_changed_a_moment_before(engine, now):
    manager, (first, second) = _scene(engine, now)
    with session_scope(engine) as session:
        moved = move_case(session, case_id=first, move=Move.RECORD_MISSING, actor=manager,
                          now=now, reason="slides missing", **_missing(session, first))
    assert moved.due_at == now + timedelta(days=10)  # the default for records_requested
    # Another process (its own engine and connection) edits the limit directly.
    other = create_db_engine(engine.url.render_as_string(hide_password=False))
    with session_scope(other) as session:
        session.execute(update(SlaRule).where(SlaRule.state == "records_requested")
                        .values(limit_days=4))
    other.dispose()
    with session_scope(engine) as session:
        moved = move_case(session, case_id=second, move=Move.RECORD_MISSING, actor=manager,
                          now=now, reason="slides missing", **_missing(session, second))
    assert moved.due_at == now + timedelta(days=4)
    assert moved.due_soon_at == now + timedelta(days=3)
    assert moved.escalate_at == now + timedelta(days=6)


def test_the_sessions_own_copy_of_a_moved_case_is_kept_current(engine, now):
    manager, (case_id, _) = _scene(engine, now)
    with session_scope(engine) as session:
        held = session.get(Case, case_id)
        returned = move_case(session, case_id=case_id, move=Move.RECORD_MISSING,
                             actor=manager, now=now, reason="slides missing",
                             **_missing(session, case_id))
        assert returned is held
        assert session.get(Case, case_id).state == "records_requested"
        assert held.version == 2 and not session.dirty  # current, with nothing to flush


def test_a_move_records_the_team_and_keeps_the_furthest_stage(engine, now):
    manager, (case_id, _) = _scene(engine, now)
    t = now
    with session_scope(engine) as session:
        for move in (Move.RECORD_MISSING, Move.CLOSE, Move.REOPEN):
            t += timedelta(hours=1)
            extra = ({"close_reason": "other", "close_note": "test"} if move is Move.CLOSE
                     else {"reason": "test"})
            if move is Move.RECORD_MISSING:
                extra |= _missing(session, case_id)
            case = move_case(session, case_id=case_id, move=move, actor=manager, now=t,
                             **extra)
    with session_scope(engine, write=False) as session:
        stored = session.get(Case, case_id)
        teams = set(session.execute(select(CaseEvent.team_id)
                                    .where(CaseEvent.case_id == case_id)).scalars())
    # records_received (3) was reached; a move back, a close and a reopen never lower it
    assert case.state == "records_requested"
    assert stored.furthest_rank == case.furthest_rank == FUNNEL_RANK["records_received"]
    assert teams == {stored.team_id}


def test_the_drivers_cursor_reads_and_writes_what_sqlalchemy_would(engine, now):
    """core.driver_sql runs the write path's statements on the DBAPI cursor: the case it
    loads must be the very values (types, time zones) SQLAlchemy's own execution gives,
    and a driver error must reach the caller as SQLAlchemy's exception, leaving nothing."""
    from sqlalchemy.exc import IntegrityError

    from core import driver_sql
    from core.workflows import write

    manager, (case_id, _) = _scene(engine, now)
    with session_scope(engine) as session:
        move_case(session, case_id=case_id, move=Move.RECORD_MISSING, actor=manager,
                  now=now, reason="slides missing", **_missing(session, case_id))
    with session_scope(engine) as session:
        conn = session.connection()
        for stmt in (write._LOAD, write._LOAD_WITH_LIMITS):
            theirs = dict(conn.execute(stmt, {"b_id": case_id}).first()._mapping)
            ours = driver_sql.fetch_first(conn, stmt, {"b_id": case_id})
            assert ours == theirs
            assert {k: type(v) for k, v in ours.items()} == \
                {k: type(v) for k, v in theirs.items()}
            assert ours["updated_at"].utcoffset() == timedelta(0)
        assert driver_sql.fetch_first(conn, write._LOAD, {"b_id": 10**9}) is None
    with session_scope(engine) as session:
        events = session.scalar(select(func.count()).select_from(CaseEvent))
        try:
            with write.savepoint(session):
                write.compare_and_set(session, write.load_case(session, case_id),
                                      actor=manager, now=now, changes={"close_reason": "bogus"})
        except IntegrityError:
            pass  # the CHECK on close_reason, as SQLAlchemy reports it
        else:
            raise AssertionError("an invalid close reason was written")
        # the savepoint left nothing; the transaction goes on
        assert session.get(Case, case_id).version == 2
        assert session.scalar(select(func.count()).select_from(CaseEvent)) == events
