"""The nightly job also refreshes the query planner's statistics (the queue's plans
depend on them as cases accumulate)."""

from __future__ import annotations

from datetime import UTC, timedelta

from sqlalchemy import text

from core.db import session_scope
from core.worker import Worker, WorkerConfig
from tests.factories import make_case, make_team


def test_nightly_recompute_refreshes_the_planner_statistics(sqlite_engine, now):
    with session_scope(sqlite_engine) as s:
        team = make_team(s, now=now)
        for _ in range(3):
            make_case(s, now=now, team=team, state="referral", days_in_state=1)
    config = WorkerConfig(scan_every=timedelta(minutes=5), lease_seconds=30,
                          misfire_grace_seconds=60, timezone=UTC)
    worker = Worker(sqlite_engine, config, holder="test", clock=lambda: now)
    assert worker.leadership.try_acquire(now)
    with sqlite_engine.connect() as conn:
        before = conn.execute(text(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")).scalar()
    worker.recompute_job()
    with sqlite_engine.connect() as conn:
        stats = conn.execute(text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'cases'"))
        assert before == 0 and stats.scalar() > 0


def test_on_postgresql_the_nightly_refresh_vacuums_so_index_only_scans_stay_index_only(
        pg_engine, now):
    # VACUUM, not only ANALYZE: it sets the visibility map that index-only scans rely on.
    from core.db import refresh_planner_statistics

    with session_scope(pg_engine) as s:
        team = make_team(s, now=now)
        make_case(s, now=now, team=team, state="referral", days_in_state=1)

    def vacuumed() -> tuple:
        with pg_engine.connect() as conn:
            return conn.execute(text(
                "SELECT vacuum_count, analyze_count FROM pg_stat_user_tables "
                "WHERE relname = 'cases'")).one()

    assert vacuumed() == (0, 0)
    refresh_planner_statistics(pg_engine)
    assert vacuumed() == (1, 1)
