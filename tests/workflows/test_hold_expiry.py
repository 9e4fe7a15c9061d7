"""A hold ends on its resume date: the nightly job resumes it as the service, the pause
ending at the start of that day, and a case someone resumed first is left alone."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlmodel import select

from core.config import get_settings
from core.db import session_scope
from core.models import AuditEntry, Case
from core.worker import Worker, WorkerConfig
from core.workflows import case_ops, hold_expiry
from core.workflows.hold_expiry import resume_day_start, resume_due_holds
from tests.workflows.helpers import make_world, new_case


def _held_case(engine, now, days: int) -> tuple[int, object]:
    with session_scope(engine) as s:
        world = make_world(s, now)
        case = new_case(s, world, now)
        case_ops.put_on_hold(s, case_id=case.id, reason="waiting for the slides",
                             resume_on=now.date() + timedelta(days=days), actor=world.coord,
                             now=now)
        return case.id, world


def test_a_hold_is_resumed_on_its_resume_date_and_not_before(engine, now):
    case_id, _ = _held_case(engine, now, days=3)
    assert resume_due_holds(engine, now=now + timedelta(days=2)).resumed == []
    with session_scope(engine, write=False) as s:
        assert s.get(Case, case_id).on_hold
    later = now + timedelta(days=5)  # the worker was down for two days
    got = resume_due_holds(engine, now=later)
    assert got.resumed == [case_id] and got.skipped == []
    ended = resume_day_start(now.date() + timedelta(days=3))
    with session_scope(engine, write=False) as s:
        case = s.get(Case, case_id)
        assert not case.on_hold and case.hold_until is None
        # paused until the resume day began, not until the job ran
        assert case.paused_seconds == int((ended - now).total_seconds())
        assert case.due_at == now + timedelta(days=2) + (ended - now)
        entry = s.exec(select(AuditEntry).where(AuditEntry.case_id == case_id)
                       .order_by(AuditEntry.id.desc())).first()
    assert (entry.action, entry.user_id) == ("case.resume", None)
    assert json.loads(entry.detail)["resume_date"] is True
    assert resume_due_holds(engine, now=later).resumed == []  # nothing left to do


def test_a_case_resumed_by_someone_else_first_is_skipped(engine, now, monkeypatch):
    case_id, world = _held_case(engine, now, days=1)
    due = hold_expiry.due_holds(engine, now=now + timedelta(days=1))
    assert [c for c, _ in due] == [case_id]
    with session_scope(engine) as s:  # a coordinator resumes it after the job listed it
        case_ops.resume(s, case_id=case_id, actor=world.coord, now=now + timedelta(hours=20))
    monkeypatch.setattr(hold_expiry, "due_holds", lambda engine, now: due)
    got = resume_due_holds(engine, now=now + timedelta(days=1))
    assert got.resumed == [] and got.skipped == [case_id]
    with session_scope(engine, write=False) as s:
        assert s.get(Case, case_id).paused_seconds == 20 * 3600  # the coordinator's resume


def test_the_nightly_job_resumes_due_holds(sqlite_engine, now):
    case_id, _ = _held_case(sqlite_engine, now, days=2)
    config = WorkerConfig(scan_every=timedelta(minutes=5), lease_seconds=30,
                          misfire_grace_seconds=60, timezone=get_settings().tz)
    later = now + timedelta(days=2, hours=1)
    worker = Worker(sqlite_engine, config, holder="test", clock=lambda: later)
    assert worker.leadership.try_acquire(later)
    worker.recompute_job()
    with session_scope(sqlite_engine, write=False) as s:
        assert not s.get(Case, case_id).on_hold
