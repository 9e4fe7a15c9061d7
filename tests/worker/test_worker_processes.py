"""Real `casedesk worker` processes against one database (SQLite file and PostgreSQL):
exactly one scans, the standby takes over within one interval when the leader is
SIGKILLed, SIGTERM and Ctrl-C stop it cleanly, and a restart after hours down runs one
catch-up scan.

Short intervals and a 5-second lease (the smallest the setting allows) via the
environment and `--interval-seconds` keep each test to a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

from sqlalchemy import func, select, text

from core.config import PROJECT_ROOT
from core.db import session_scope
from core.models import CaseFlag, JobRun
from core.timeutil import utcnow
from tests.factories import make_case, make_team

INTERVAL = 6.0
LEASE = 5


def start_worker(engine, *, interval: float = INTERVAL) -> subprocess.Popen:
    env = dict(os.environ,
               CASEDESK_DATABASE_URL=engine.url.render_as_string(hide_password=False),
               CASEDESK_WORKER_LEASE_SECONDS=str(LEASE), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", "from core.cli import main; main()", "worker",
         "--interval-seconds", str(interval)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def scan_runs(engine) -> list[JobRun]:
    with session_scope(engine, write=False) as session:
        return list(session.execute(
            select(JobRun).where(JobRun.job == "scan").order_by(JobRun.id)).scalars())


def wait_for(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def duplicate_open_flags(engine) -> int:
    with session_scope(engine, write=False) as session:
        dupes = (select(CaseFlag.case_id, CaseFlag.kind)
                 .where(CaseFlag.resolved_at.is_(None))
                 .group_by(CaseFlag.case_id, CaseFlag.kind).having(func.count() > 1).subquery())
        return session.execute(select(func.count()).select_from(dupes)).scalar_one()


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=10)
    return out


def seed(engine) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        for days in (1, 6, 8, 12, 20):
            make_case(session, now=now, team=team, state="referral", days_in_state=days,
                      biopsy_days_ago=50)


def test_two_workers_one_scans_and_the_standby_takes_over_when_the_leader_dies(engine):
    seed(engine)
    workers = [start_worker(engine), start_worker(engine)]
    try:
        first = wait_for(lambda: scan_runs(engine), timeout=20)
        assert first, "no scan within 20 s: " + "".join(stop(w) for w in workers)
        time.sleep(1.0)
        runs = scan_runs(engine)
        leaders = {r.worker for r in runs}
        assert len(leaders) == 1 and all(w.poll() is None for w in workers)
        leader_pid = int(leaders.pop().rsplit(":", 1)[1])
        leader = next(w for w in workers if w.pid == leader_pid)
        standby = next(w for w in workers if w.pid != leader_pid)
        assert duplicate_open_flags(engine) == 0
        with session_scope(engine, write=False) as session:
            assert session.execute(select(func.count()).select_from(CaseFlag)).scalar_one() > 0

        killed_at = time.monotonic()
        leader.send_signal(signal.SIGKILL)
        taken = wait_for(lambda: [r for r in scan_runs(engine)
                                  if r.worker.endswith(f":{standby.pid}")], timeout=INTERVAL + 5)
        took = time.monotonic() - killed_at
        assert taken, "standby never scanned: " + stop(standby)
        assert took <= INTERVAL + 1.5, f"standby's first scan {took:.1f} s after the kill"
        assert duplicate_open_flags(engine) == 0
        assert {r.worker for r in scan_runs(engine)} == {first[0].worker, taken[0].worker}

        # SIGTERM: a clean stop that hands the lease back at once
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(timeout=15) == 0
        with session_scope(engine, write=False) as session:
            if engine.dialect.name == "sqlite":
                expires = session.execute(text("SELECT expires_at FROM worker_lease")).scalar()
                assert str(expires).startswith("2000-01-01")
            else:
                held = session.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar()
                assert held == 0
    finally:
        for w in workers:
            stop(w)


def test_after_three_hours_down_the_worker_runs_one_catch_up_scan(engine):
    seed(engine)
    now = utcnow()
    with session_scope(engine) as session:
        session.add(JobRun(job="scan", status="ok", started_at=now - timedelta(hours=3),
                           finished_at=now - timedelta(hours=3), worker="old"))
        session.add(JobRun(job="recompute_deadlines", status="ok",
                           started_at=now - timedelta(hours=1), worker="old"))
    worker = start_worker(engine, interval=300)  # five minutes: the default rhythm
    try:
        caught_up = wait_for(lambda: len(scan_runs(engine)) >= 2, timeout=20)
        assert caught_up, stop(worker)
        time.sleep(2)  # a flood of 36 missed runs would show up by now
        runs = scan_runs(engine)
        assert [r.worker for r in runs][0] == "old"
        assert len(runs) == 2 and runs[1].worker.endswith(f":{worker.pid}")
        # Ctrl-C stops it as cleanly as SIGTERM (tested above)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=15) == 0
        assert "stopped" in stop(worker)
    finally:
        stop(worker)
