"""Leader election in-process: the SQLite lease's compare-and-set, the PostgreSQL
advisory lock, and the catch-up rule. Time is passed in."""

from __future__ import annotations

from datetime import timedelta

from core.db import session_scope
from core.worker import PgAdvisoryLock, SqliteLease, first_run_at


def test_sqlite_lease_has_one_holder_until_it_lapses(sqlite_engine, now):
    a = SqliteLease(sqlite_engine, holder="a", lease_seconds=30)
    b = SqliteLease(sqlite_engine, holder="b", lease_seconds=30)
    assert a.try_acquire(now)
    assert not b.try_acquire(now)
    assert a.renew(now + timedelta(seconds=20))  # renewed: now valid until +50 s
    assert not b.try_acquire(now + timedelta(seconds=45))
    with session_scope(sqlite_engine) as session:
        assert a.still_leader(session, now + timedelta(seconds=45))
        assert not b.still_leader(session, now + timedelta(seconds=45))
    # a stops renewing (frozen or killed): after the lease lapses b takes over...
    assert b.try_acquire(now + timedelta(seconds=51))
    # ...and a, waking up, can neither renew nor act
    assert not a.renew(now + timedelta(seconds=52))
    with session_scope(sqlite_engine) as session:
        assert not a.still_leader(session, now + timedelta(seconds=52))


def test_sqlite_lease_release_hands_over_at_once(sqlite_engine, now):
    a = SqliteLease(sqlite_engine, holder="a", lease_seconds=60)
    b = SqliteLease(sqlite_engine, holder="b", lease_seconds=60)
    assert a.try_acquire(now)
    a.release()
    assert b.try_acquire(now + timedelta(seconds=1))


def test_postgres_advisory_lock_has_one_holder_and_frees_on_release(pg_engine, now):
    a = PgAdvisoryLock(pg_engine, holder="a")
    b = PgAdvisoryLock(pg_engine, holder="b")
    try:
        assert a.try_acquire(now)
        assert not b.try_acquire(now)
        assert a.renew(now)
        with session_scope(pg_engine) as session:
            assert a.still_leader(session, now)
            assert not b.still_leader(session, now)
        a.release()
        assert b.try_acquire(now)
        with session_scope(pg_engine) as session:
            assert b.still_leader(session, now)
    finally:
        a.release()
        b.release()


def test_postgres_lock_is_freed_when_its_connection_dies(pg_engine, now):
    a = PgAdvisoryLock(pg_engine, holder="a")
    b = PgAdvisoryLock(pg_engine, holder="b")
    try:
        assert a.try_acquire(now)
        a.conn.invalidate()  # the connection is gone, as when the process is killed
        assert b.try_acquire(now)
        assert not a.renew(now)
        assert not a.try_acquire(now)  # b holds it now
    finally:
        a.release()
        b.release()


def test_first_run_after_downtime_is_one_catch_up_now(now):
    every = timedelta(minutes=5)
    assert first_run_at(None, now, every) == now
    assert first_run_at(now - timedelta(hours=3), now, every) == now
    # a standby taking over continues the leader's rhythm
    assert first_run_at(now - timedelta(minutes=2), now, every) == now + timedelta(minutes=3)
