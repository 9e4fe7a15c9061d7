"""`casedesk worker`: the process that runs the scans (DESIGN.md section 3).

APScheduler 3.x in its own process - never inside a Streamlit script run, where every
rerun would start another scheduler (FIELD-NOTES.md). Only the leader schedules jobs:

- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a dedicated
  connection held for the worker's life; the server frees it the moment that process or
  connection dies, so a standby polling for it takes over at once.
- SQLite: a `worker_lease` row taken and renewed by compare-and-set
  (`UPDATE ... WHERE name = ? AND (holder = ? OR expires_at < now)`); a standby takes
  over once the leader stops renewing and the lease lapses.

Every job also checks leadership inside its own transaction (`still_leader`), so a
leader that was frozen past its lease and woke up does nothing. Jobs have explicit ids,
`coalesce=True`, `max_instances=1` and a misfire grace time. The scheduler keeps its jobs
in memory; the catch-up rule lives in the database instead: on becoming leader the first
scan is due one interval after the last recorded scan, or now if that has passed - so
after three hours down there is one catch-up scan, not a flood, and a standby taking
over continues the leader's rhythm.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlmodel import Session

from core.db import refresh_planner_statistics, session_scope
from core.models import JobRun, WorkerLease
from core.scan import RECOMPUTE_JOB, SCAN_JOB, run_recompute, run_scan
from core.timeutil import as_utc, utcnow
from core.vocab import JobStatus
from core.workflows.hold_expiry import resume_due_holds

log = logging.getLogger("casedesk.worker")

LEASE_NAME = "scan-leader"
PG_LEADER_KEY = 4_242_005  # session advisory lock key of the worker leader
RECOMPUTE_EVERY = timedelta(hours=24)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- leadership -------------------------------------------------------------------------


class Leadership:
    """Who may run jobs. `try_acquire` is called by standbys, `renew` by the leader."""

    holder: str

    def try_acquire(self, now: datetime) -> bool:
        raise NotImplementedError

    def renew(self, now: datetime) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def still_leader(self, session: Session, now: datetime) -> bool:
        """Checked inside each job's transaction, after the job's own lock."""
        raise NotImplementedError


class SqliteLease(Leadership):
    def __init__(self, engine: Engine, *, holder: str, lease_seconds: float,
                 name: str = LEASE_NAME) -> None:
        self.engine, self.holder, self.name = engine, holder, name
        self.lease = timedelta(seconds=lease_seconds)

    def try_acquire(self, now: datetime) -> bool:
        now = as_utc(now)
        lease = WorkerLease.__table__
        with session_scope(self.engine) as session:  # BEGIN IMMEDIATE: one writer decides
            took = session.execute(
                update(lease)
                .where(lease.c.name == self.name,
                       (lease.c.holder == self.holder) | (lease.c.expires_at < now))
                .values(holder=self.holder, expires_at=now + self.lease, renewed_at=now)
            ).rowcount
            if took == 1:
                return True
            exists = session.execute(
                select(func.count()).select_from(lease).where(lease.c.name == self.name)
            ).scalar_one()
            if exists:
                return False
            session.execute(insert(lease).values(name=self.name, holder=self.holder,
                                                 expires_at=now + self.lease, renewed_at=now))
            return True

    renew = try_acquire  # the same compare-and-set: still mine, or lapsed and free

    def release(self) -> None:
        lease = WorkerLease.__table__
        past = datetime(2000, 1, 1, tzinfo=UTC)  # lapsed: a standby may take it at once
        try:
            with session_scope(self.engine) as session:
                session.execute(update(lease).where(lease.c.name == self.name,
                                                    lease.c.holder == self.holder)
                                .values(expires_at=past))
        except Exception:
            log.exception("could not release the lease; it will lapse by itself")

    def still_leader(self, session: Session, now: datetime) -> bool:
        lease = WorkerLease.__table__
        return session.execute(
            select(func.count()).select_from(lease).where(
                lease.c.name == self.name, lease.c.holder == self.holder,
                lease.c.expires_at > as_utc(now))
        ).scalar_one() == 1


class PgAdvisoryLock(Leadership):
    def __init__(self, engine: Engine, *, holder: str, key: int = PG_LEADER_KEY) -> None:
        self.engine, self.holder, self.key = engine, holder, key
        self.conn: Connection | None = None
        self.backend_pid: int | None = None

    def _connection(self) -> Connection:
        if self.conn is None:
            # Autocommit: the connection must not sit "idle in transaction" for days.
            self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.conn

    def try_acquire(self, now: datetime) -> bool:
        try:
            conn = self._connection()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
            if got:
                self.backend_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            return bool(got)
        except Exception:
            log.exception("could not ask for the leader lock")
            self._drop()
            return False

    def renew(self, now: datetime) -> bool:
        # The lock lives as long as the server session that took it: if the pool quietly
        # reconnected, the backend pid changed and the lock is gone with the old one.
        if self.backend_pid is None:
            return False
        try:
            pid = self._connection().execute(text("SELECT pg_backend_pid()")).scalar()
            if pid != self.backend_pid:
                log.warning("the connection holding the leader lock was replaced")
                self._drop()
                return False
            return True
        except Exception:
            log.exception("lost the connection holding the leader lock")
            self._drop()
            return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            except Exception:
                log.warning("could not unlock; closing the connection frees the lock anyway")
        self._drop()

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # already broken
                pass
        self.conn, self.backend_pid = None, None

    def still_leader(self, session: Session, now: datetime) -> bool:
        if self.backend_pid is None:
            return False
        # A bigint advisory key shows in pg_locks as classid (high half), objid (low half).
        return bool(session.execute(text(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = :hi AND objid = :lo AND objsubid = 1 AND pid = :pid)"),
            {"hi": self.key >> 32, "lo": self.key & 0xFFFFFFFF, "pid": self.backend_pid},
        ).scalar())


def leadership_for(engine: Engine, *, holder: str, lease_seconds: float) -> Leadership:
    if engine.dialect.name == "postgresql":
        return PgAdvisoryLock(engine, holder=holder)
    return SqliteLease(engine, holder=holder, lease_seconds=lease_seconds)


# --- scheduling -------------------------------------------------------------------------


def first_run_at(last_started: datetime | None, now: datetime, every: timedelta) -> datetime:
    """When the first run after (re)gaining leadership is due: one interval after the
    last recorded run, or now if that moment has passed (one catch-up run, however long
    the downtime was)."""
    if last_started is None:
        return now
    due = as_utc(last_started) + every
    return now if due <= now else due


def last_run(engine: Engine, job: str, *, ok_only: bool = False) -> datetime | None:
    with session_scope(engine, write=False) as session:
        q = select(func.max(JobRun.started_at)).where(JobRun.job == job)
        if ok_only:
            q = q.where(JobRun.status == JobStatus.OK.value)
        value = session.execute(q).scalar()
    return as_utc(value) if value else None


@dataclass
class WorkerConfig:
    scan_every: timedelta
    lease_seconds: float
    misfire_grace_seconds: int
    timezone: tzinfo
    recompute_hour: int = 2  # local time: quiet, and after midnight's day change
    recompute_minute: int = 30

    @property
    def standby_poll(self) -> float:
        # Often enough that a lapsed lease is noticed well within one scan interval.
        return max(0.2, min(self.lease_seconds / 10, 5.0))

    @property
    def renew_every(self) -> float:
        return self.lease_seconds / 3

    @classmethod
    def from_settings(cls, settings, *, interval_seconds: float | None = None) -> WorkerConfig:  # noqa: ANN001
        every = (timedelta(seconds=interval_seconds) if interval_seconds
                 else timedelta(minutes=settings.scan_interval_minutes))
        return cls(scan_every=every, lease_seconds=settings.worker_lease_seconds,
                   misfire_grace_seconds=settings.scan_misfire_grace_seconds,
                   timezone=settings.tz)


class Worker:
    def __init__(self, engine: Engine, config: WorkerConfig, *, holder: str | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine, self.config, self.clock = engine, config, clock
        self.holder = holder or worker_id()
        self.leadership = leadership_for(engine, holder=self.holder,
                                         lease_seconds=config.lease_seconds)
        self.stop_event = threading.Event()
        self.scheduler: BackgroundScheduler | None = None

    # jobs ---------------------------------------------------------------------------

    def scan_job(self) -> None:
        try:
            result = run_scan(self.engine, now=self.clock(), worker=self.holder,
                              still_leader=self.leadership.still_leader)
        except Exception:
            log.exception("scan failed (recorded as a failed run)")
            return
        if result.skipped:
            log.warning("scan skipped: this worker no longer holds the lease")
        else:
            log.info("scan: raised %d, resolved %d, %d cases examined%s (%.2f s)",
                     result.raised, result.resolved, result.examined,
                     " (full)" if result.full else "", result.seconds)

    def recompute_job(self) -> None:
        # Before the deadlines: a hold whose resume date came gets its deadlines back.
        try:
            holds = resume_due_holds(self.engine, now=self.clock())
            if holds.resumed or holds.skipped:
                log.info("holds past their resume date: %d resumed, %d skipped",
                         len(holds.resumed), len(holds.skipped))
        except Exception:
            log.exception("resuming holds past their resume date failed")
        try:
            changed = run_recompute(self.engine, now=self.clock(), worker=self.holder,
                                    still_leader=self.leadership.still_leader)
        except Exception:
            log.exception("deadline recompute failed (recorded as a failed run)")
            return
        if changed is not None:
            log.info("recomputed deadlines: %d cases changed", changed)
            try:
                # The queue's plans depend on statistics that drift as cases accumulate.
                refresh_planner_statistics(self.engine)
            except Exception:
                log.exception("refreshing the planner statistics failed")

    # leadership transitions ---------------------------------------------------------

    def _start_jobs(self) -> None:
        now = self.clock()
        cfg = self.config
        scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": cfg.misfire_grace_seconds},
        )
        scheduler.add_job(
            self.scan_job, IntervalTrigger(seconds=cfg.scan_every.total_seconds(), timezone=UTC),
            id=SCAN_JOB, name="stalled-case scan", coalesce=True, max_instances=1,
            misfire_grace_time=cfg.misfire_grace_seconds, replace_existing=True,
            next_run_time=first_run_at(last_run(self.engine, SCAN_JOB), now, cfg.scan_every),
        )
        recompute = CronTrigger(hour=cfg.recompute_hour, minute=cfg.recompute_minute,
                                timezone=cfg.timezone)
        extra = {}
        last_recompute = last_run(self.engine, RECOMPUTE_JOB, ok_only=True)
        if last_recompute is None or last_recompute + RECOMPUTE_EVERY <= now:
            extra["next_run_time"] = now + timedelta(seconds=1)  # missed nightly run: once
        scheduler.add_job(
            self.recompute_job, recompute, id=RECOMPUTE_JOB, name="nightly deadline recompute",
            coalesce=True, max_instances=1, misfire_grace_time=3600, replace_existing=True,
            **extra,
        )
        scheduler.start()
        self.scheduler = scheduler
        log.info("%s is the leader: scanning every %s", self.holder, cfg.scan_every)

    def _stop_jobs(self, *, wait: bool) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=wait)
            self.scheduler = None

    @property
    def is_leader(self) -> bool:
        return self.scheduler is not None

    # main loop ----------------------------------------------------------------------

    def request_stop(self, *_args: object) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> None:
        """Stand by, lead, stand by again if the lease is lost; until asked to stop."""
        log.info("worker %s started (standing by for the leader lease)", self.holder)
        try:
            while not self.stop_event.is_set():
                now = self.clock()
                if not self.is_leader:
                    if self.leadership.try_acquire(now):
                        self._start_jobs()
                else:
                    try:
                        kept = self.leadership.renew(now)
                    except Exception:
                        log.exception("could not renew the lease")
                        kept = False
                    if not kept:
                        log.warning("%s lost the leader lease; standing by", self.holder)
                        self._stop_jobs(wait=False)
                wait = self.config.renew_every if self.is_leader else self.config.standby_poll
                self.stop_event.wait(wait)
        finally:
            # Let a running scan finish (it is one transaction), then hand over at once.
            was_leader = self.is_leader
            self._stop_jobs(wait=True)
            if was_leader:
                self.leadership.release()
            elif isinstance(self.leadership, PgAdvisoryLock):
                self.leadership.release()  # closes the polling connection
            log.info("worker %s stopped", self.holder)
