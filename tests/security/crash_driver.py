"""Workload for the crash and concurrency tests: real writes through core.workflows on one
database, in a process that may be SIGKILLed at any moment.

Importing Case Desk costs seconds on a busy 2-core machine, so this file also runs as a
*zygote*: `python -m tests.security.crash_driver` imports everything once, opens no
database, and forks a fresh worker for each request it reads on stdin:

    warm URL SEED OPS              ->  "warm"     do OPS operations here, then dispose
    run URL SEED OPS RESULT|- [FLAG] -> "pid N"   fork a worker (OPS 0: run until killed,
                                                  and the worker says "ready N" first;
                                                  FLAG holds 1 while it is mid-transaction)
    wait PID                       ->  "exit N" | "signal N"
    quit

A worker builds its own engine after the fork (no connection crosses a fork) and writes
what it saw to RESULT_FILE as JSON when it finishes normally.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import signal
import sys
import traceback
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from core.actor import Actor
from core.db import create_db_engine, session_scope
from core.errors import CaseDeskError, StaleCaseError
from core.models import Case, RecordItem, Specialist, Team, User
from core.timeutil import utcnow
from core.vocab import CaseState, CloseReason, RecordKind, RecordStatus, Requirement, Role
from core.workflows import case_ops, contacts, records
from core.workflows.engine import move_case
from core.workflows.intake import Assessment, create_case_from_assessment
from core.workflows.states import Move


def _actor(user: User) -> Actor:
    return Actor(user_id=user.id, username=user.username, role=Role(user.role),
                 team_id=user.team_id, session_id=f"w{os.getpid()}")


class Workload:
    """Random everyday work on the cases of one team, each operation one transaction."""

    def __init__(self, engine: Engine, rng: random.Random):
        self.engine, self.rng = engine, rng
        with session_scope(engine, write=False) as s:
            team = s.exec(select(Team).order_by(Team.id)).first()
            users = s.exec(select(User).where(User.team_id == team.id)).all()
            self.team_id = team.id
            self.coord = _actor(next(u for u in users if u.role == Role.COORDINATOR.value))
            self.mgr = _actor(next(u for u in users if u.role == Role.MANAGER.value))
            self.specialist_id = s.exec(select(Specialist.id)).first()
        self.seen_version = 0

    # -- time: real time, so two workers never write a case's history out of order
    def now(self) -> datetime:
        return utcnow()

    def _case_ids(self, s) -> list[int]:  # noqa: ANN001
        return list(s.exec(select(Case.id).where(Case.team_id == self.team_id)).all())

    def step(self) -> str:
        """One operation on a random case; returns its name."""
        op = self.rng.choices(
            ["advance", "note", "contact", "hold", "close", "intake", "stale_move"],
            weights=[8, 4, 3, 2, 1, 1, 2])[0]
        # What the page showed: read first, in its own transaction; others may write
        # before the change below is made (that is what compare-and-set is for).
        with session_scope(self.engine, write=False) as r:
            case_id = self.rng.choice(self._case_ids(r))
            self.seen_version = r.get(Case, case_id).version
        with session_scope(self.engine) as s:
            getattr(self, f"_{op}")(s, case_id)
        return op

    def _advance(self, s, case_id: int) -> None:  # noqa: ANN001
        case = s.get(Case, case_id)
        state, now, a = CaseState(case.state), self.now(), self.coord
        if state is CaseState.ASSESSED:
            move_case(s, case_id=case_id, move=Move.START_REFERRAL, actor=a, now=now)
        elif state is CaseState.REFERRAL:
            if case.specialist_id is None:
                case_ops.choose_specialist(s, case_id=case_id, specialist_id=self.specialist_id,
                                           actor=a, now=now)
            for item in self._items(s, case_id, kind=RecordKind.SIGNED_RELEASE):
                if item.status in (RecordStatus.NEEDED, RecordStatus.REQUESTED):
                    records.receive_record(s, item_id=item.id, actor=a, now=now)
            move_case(s, case_id=case_id, move=Move.REQUEST_RECORDS, actor=a, now=now)
        elif state is CaseState.RECORDS_REQUESTED:
            for item in self._items(s, case_id, requirement=Requirement.REQUIRED):
                if item.status == RecordStatus.NEEDED:
                    records.request_record(s, item_id=item.id, actor=a, now=now)
                if item.status in (RecordStatus.NEEDED, RecordStatus.REQUESTED):
                    records.receive_record(s, item_id=item.id, actor=a, now=now)
            move_case(s, case_id=case_id, move=Move.RECORDS_COMPLETE, actor=a, now=now)
        elif state is CaseState.RECORDS_RECEIVED:
            if self.rng.random() < 0.2:
                broken = [i.id for i in self._items(s, case_id)
                          if i.status == RecordStatus.RECEIVED][:1]
                move_case(s, case_id=case_id, move=Move.RECORD_MISSING, actor=a, now=now,
                          reason="slides broken in transit", missing_items=broken)
            else:
                move_case(s, case_id=case_id, move=Move.SCHEDULE, actor=a, now=now,
                          appointment_at=now + timedelta(milliseconds=50),
                          specialist_id=self.specialist_id)
        elif state is CaseState.SCHEDULED:
            if self.rng.random() < 0.2:
                move_case(s, case_id=case_id, move=Move.NO_SHOW, actor=a, now=now,
                          reason="no-show")
            else:
                at = max(now, case.appointment_at)  # the visit has happened by then
                move_case(s, case_id=case_id, move=Move.MARK_SEEN, actor=a, now=at)
        elif state is CaseState.SEEN:
            if case.outcome_recorded_at is None:
                case_ops.record_outcome(s, case_id=case_id, diagnosis="refined",
                                        plan="minor_change", sources=["pathology"],
                                        additional_cancer_found=False, actor=a, now=now)
            move_case(s, case_id=case_id, move=Move.CLOSE, actor=a, now=now,
                      close_reason=CloseReason.COMPLETED)
        else:
            move_case(s, case_id=case_id, move=Move.REOPEN, actor=self.mgr, now=now,
                      reason="closed by mistake")

    @staticmethod
    def _items(s, case_id: int, *, kind=None, requirement=None) -> list[RecordItem]:  # noqa: ANN001
        q = select(RecordItem).where(RecordItem.case_id == case_id)
        if kind is not None:
            q = q.where(RecordItem.kind == kind.value)
        if requirement is not None:
            q = q.where(RecordItem.requirement == requirement.value)
        return list(s.exec(q.order_by(RecordItem.id)).all())

    def _note(self, s, case_id: int) -> None:  # noqa: ANN001
        case_ops.add_note(s, case_id=case_id, body=f"called pathology lab ({os.getpid()})",
                          actor=self.coord, now=self.now())

    def _contact(self, s, case_id: int) -> None:  # noqa: ANN001
        contacts.log_contact(s, case_id=case_id, channel="phone", outcome="no_answer",
                             actor=self.coord, now=self.now(), note="voicemail full")

    def _hold(self, s, case_id: int) -> None:  # noqa: ANN001
        case, now = s.get(Case, case_id), self.now()
        if case.on_hold:
            case_ops.resume(s, case_id=case_id, actor=self.coord, now=now)
        else:
            case_ops.put_on_hold(s, case_id=case_id, reason="waiting on insurer",
                                 resume_on=(now + timedelta(days=3)).date(), actor=self.coord,
                                 now=now)

    def _close(self, s, case_id: int) -> None:  # noqa: ANN001
        move_case(s, case_id=case_id, move=Move.CLOSE, actor=self.coord, now=self.now(),
                  close_reason=CloseReason.DECLINED)

    def _intake(self, s, case_id: int) -> None:  # noqa: ANN001, ARG002
        now = self.now()
        create_case_from_assessment(
            s, assessment=Assessment(
                first_name="Ana", last_name=f"Worker{os.getpid()}",
                diagnosis_category="invasive", biopsy_date=(now - timedelta(days=7)).date(),
                reasons=("wants_confirmation",), biopsy_facility="St. Mary's",
                imaging_facility="Valley Radiology"),
            team_id=self.team_id, assignee_id=self.coord.user_id, actor=self.coord, now=now)

    def _stale_move(self, s, case_id: int) -> None:  # noqa: ANN001
        """A change made from the version the page showed (refused if it moved on)."""
        case_ops.set_priority(s, case_id=case_id, priority=self.rng.choice(["routine", "urgent"]),
                              actor=self.coord, now=self.now(),
                              expected_version=self.seen_version)


def _flag_write_transactions(engine: Engine, path: str) -> None:
    """Keep one byte in `path` at 1 while a write transaction is open, so the test can
    tell a kill that landed mid-transaction from one between transactions."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        if conn.get_execution_options().get("casedesk_write"):
            os.pwrite(fd, b"1", 0)

    @event.listens_for(engine, "commit")
    def _commit(conn) -> None:  # noqa: ANN001
        os.pwrite(fd, b"0", 0)

    @event.listens_for(engine, "rollback")
    def _rollback(conn) -> None:  # noqa: ANN001
        os.pwrite(fd, b"0", 0)


def _say(line: str) -> None:
    """One line to the test in one write(2): the forked worker's "ready" and the zygote's
    "pid" share the pipe, and a line written in pieces could interleave with the other
    (seen once as a garbled line). Writes up to PIPE_BUF bytes to a pipe are atomic."""
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


def run_worker(url: str, seed: int, ops: int, result_file: str | None,
               flag_file: str | None = None) -> None:
    engine = create_db_engine(url)
    if flag_file:
        _flag_write_transactions(engine, flag_file)
    work = Workload(engine, random.Random(seed))
    if ops == 0:
        # Tell the test the worker is about to write, so its kill lands in the work and
        # not in the worker's start-up.
        _say(f"ready {os.getpid()}")
    done = 0
    result: Counter[str] = Counter()
    while ops == 0 or done < ops:
        done += 1
        try:
            op = work.step()
            result[f"ok.{op}"] += 1
        except StaleCaseError:
            result["stale"] += 1  # the user is told to reload: expected under contention
        except CaseDeskError:
            result["refused"] += 1  # a guard or rule said no: nothing written
        except OperationalError as exc:
            key = "locked" if "locked" in str(exc).lower() else "operational"
            result[key] += 1
            result[f"error:{str(exc.orig)[:80]}"] += 1
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it
            result["unexpected"] += 1
            result["trace:" + traceback.format_exc()[-300:]] += 1
    if result_file:
        with open(result_file, "w") as fh:
            json.dump(dict(result), fh)
    engine.dispose()


def zygote() -> None:
    children: set[int] = set()
    try:
        _serve(children)
    finally:
        # A test that failed half-way never leaves a worker that runs until killed.
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def _serve(children: set[int]) -> None:
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] == "run":
            url, seed, ops = parts[1], int(parts[2]), int(parts[3])
            result_file = parts[4] if len(parts) > 4 and parts[4] != "-" else None
            flag_file = parts[5] if len(parts) > 5 else None
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    run_worker(url, seed, ops, result_file, flag_file)
                except BaseException:  # noqa: BLE001
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            children.add(pid)
            _say(f"pid {pid}")
        elif parts[0] == "warm":
            # Run a little work in this process first: the lazy imports, settings and
            # SQLAlchemy's statement cache are then inherited warm by every fork. The
            # engine is disposed afterwards, so no connection crosses a fork.
            run_worker(parts[1], int(parts[2]), int(parts[3]), None)
            gc.collect()
            print("warm", flush=True)
        elif parts[0] == "wait":
            _, status = os.waitpid(int(parts[1]), 0)
            children.discard(int(parts[1]))
            if os.WIFSIGNALED(status):
                print(f"signal {os.WTERMSIG(status)}", flush=True)
            else:
                print(f"exit {os.WEXITSTATUS(status)}", flush=True)


if __name__ == "__main__":
    zygote()
