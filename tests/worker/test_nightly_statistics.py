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
