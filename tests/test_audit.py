from sqlalchemy import text

from core import audit
from core.actor import Actor
from core.db import session_scope
from core.vocab import Role

ACTOR = Actor(user_id=7, username="nina", role=Role.COORDINATOR, team_id=1, session_id="abcd")


def _write(engine, now, n=3):
    with session_scope(engine) as session:
        for i in range(n):
            audit.record(session, actor=ACTOR, action="case.view", case_id=i + 1, now=now)


def test_chain_verifies_when_untouched(engine, now):
    _write(engine, now)
    with session_scope(engine, write=False) as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows == 3


# Direct UPDATE/DELETE/TRUNCATE refusals: tests/security/test_audit_verify.py.


def test_forced_change_is_detected_and_named(sqlite_engine, now):
    _write(sqlite_engine, now)
    with sqlite_engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_entry_no_update"))
        conn.execute(text("UPDATE audit_entry SET case_id = 99 WHERE id = 2"))
    with session_scope(sqlite_engine, write=False) as session:
        report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_id == 2


def test_forced_delete_is_detected_at_the_next_row(pg_engine, now):
    _write(pg_engine, now)
    with pg_engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_no_change"))
        conn.execute(text("DELETE FROM audit_entry WHERE id = 2"))
    with session_scope(pg_engine, write=False) as session:
        report = audit.verify_chain(session)
    assert not report.ok and report.first_bad_id == 3


def test_a_rolled_back_row_does_not_break_the_chain(sqlite_engine, now):
    # The writer remembers the hash it wrote last as the next row's likely prev_hash;
    # a rollback makes that guess wrong, and the next row must still chain correctly.
    _write(sqlite_engine, now, n=1)
    try:
        with session_scope(sqlite_engine) as session:
            audit.record(session, actor=ACTOR, action="case.view", case_id=9, now=now)
            raise RuntimeError("the change this row describes failed")
    except RuntimeError:
        pass
    _write(sqlite_engine, now, n=2)
    with session_scope(sqlite_engine, write=False) as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows == 3


def test_a_row_written_by_another_process_is_chained_after(sqlite_engine, now):
    _write(sqlite_engine, now, n=1)
    # What another process's row does to this one's guess: the chain ends elsewhere.
    audit._last_written[sqlite_engine.url] = "f" * 64
    _write(sqlite_engine, now, n=2)
    with session_scope(sqlite_engine, write=False) as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows == 3
