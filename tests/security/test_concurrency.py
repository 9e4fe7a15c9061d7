"""Twenty processes moving and editing the same cases at once on one SQLite file (and
twenty threads on PostgreSQL): nobody sees "database is locked", no update is lost (each
case version was written and audited exactly once; counts add up), every change is
audited and the chain verifies."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.errors import CaseDeskError, StaleCaseError
from core.models import Case, ContactAttempt, Note
from tests.security import invariants
from tests.security.conftest import seed_world
from tests.security.crash_driver import Workload

PROCESSES = 20
OPS_EACH = 10


def _counts(engine) -> dict[str, int]:
    with session_scope(engine, write=False) as s:
        def n(model):
            return s.execute(select(func.count()).select_from(model)).scalar_one()
        return {"notes": n(Note), "contacts": n(ContactAttempt), "cases": n(Case)}


def _assert_clean(totals: Counter, before: dict, after: dict) -> None:
    failures = {k: v for k, v in totals.items()
                if k in ("locked", "operational", "unexpected") or k.startswith(("error:",
                                                                                 "trace:"))}
    assert not failures, failures
    # Counters add up: every note, contact and intake a worker was told succeeded is there.
    assert after["notes"] - before["notes"] == totals["ok.note"]
    assert after["contacts"] - before["contacts"] == totals["ok.contact"]
    assert after["cases"] - before["cases"] == totals["ok.intake"]


@pytest.mark.slow
def test_twenty_processes_at_once_on_one_sqlite_file(sqlite_engine, now, zygote, tmp_path):
    seed_world(sqlite_engine, now, cases=6)  # few cases: many writers on each
    url = sqlite_engine.url.render_as_string(hide_password=False)
    zygote.warm(url)
    before = _counts(sqlite_engine)
    results = [tmp_path / f"worker{i}.json" for i in range(PROCESSES)]
    pids = [zygote.start(url, seed=1000 + i, ops=OPS_EACH, result_file=str(results[i]))
            for i in range(PROCESSES)]
    outcomes = [zygote.wait(pid) for pid in pids]
    assert outcomes == ["exit 0"] * PROCESSES, outcomes
    totals: Counter = Counter()
    for path in results:
        totals.update(json.loads(path.read_text()))
    print(dict(totals))
    _assert_clean(totals, before, _counts(sqlite_engine))
    assert sum(v for k, v in totals.items() if k.startswith("ok.")) > PROCESSES * OPS_EACH // 2
    problems = invariants.check(sqlite_engine)
    assert not problems, problems[:5]


@pytest.mark.postgres
@pytest.mark.slow
def test_twenty_threads_at_once_on_postgresql(pg_engine, now):
    seed_world(pg_engine, now, cases=6)
    before = _counts(pg_engine)
    totals: Counter = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(PROCESSES)

    def worker(seed: int) -> None:
        work = Workload(pg_engine, random.Random(seed))
        mine: Counter = Counter()
        barrier.wait()
        for _ in range(OPS_EACH):
            try:
                mine[f"ok.{work.step()}"] += 1
            except StaleCaseError:
                mine["stale"] += 1
            except CaseDeskError:
                mine["refused"] += 1
            except Exception as exc:  # noqa: BLE001 - the test fails on any of these
                mine["unexpected"] += 1
                mine[f"error:{type(exc).__name__}: {str(exc)[:120]}"] += 1
        with lock:
            totals.update(mine)

    threads = [threading.Thread(target=worker, args=(2000 + i,)) for i in range(PROCESSES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    print(dict(totals))
    _assert_clean(totals, before, _counts(pg_engine))
    problems = invariants.check(pg_engine)
    assert not problems, problems[:5]
