"""SIGKILL in the middle of real transitions, 100 times, on one SQLite file: after each
kill the database is intact, every case's history replays to its state, every stored
change has its audit row and the audit chain verifies (tests/security/invariants.py).

The workers are forked by a zygote (tests/security/crash_driver.py) that has imported
Case Desk once, so each round costs a fork, not a multi-second interpreter start.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.models import AuditEntry
from tests.security import invariants
from tests.security.conftest import seed_world

ROUNDS = 100


def _audit_rows(engine) -> int:
    with session_scope(engine, write=False) as s:
        return s.execute(select(func.count()).select_from(AuditEntry)).scalar_one()


@pytest.mark.slow
def test_sigkill_mid_transition_never_leaves_a_broken_or_unaudited_database(
        sqlite_engine, now, zygote, tmp_path):
    seed_world(sqlite_engine, now)
    url = sqlite_engine.url.render_as_string(hide_password=False)
    zygote.warm(url)
    rng = random.Random(7)
    flag = tmp_path / "in_transaction"
    mid_transaction = 0
    before = _audit_rows(sqlite_engine)
    started = time.monotonic()
    for round_no in range(ROUNDS):
        flag.write_bytes(b"0")
        pid = zygote.start_and_wait_ready(url, seed=round_no, flag_file=flag)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        outcome = zygote.wait(pid)
        mid_transaction += flag.read_bytes() == b"1"
        assert outcome == f"signal {signal.SIGKILL}", f"round {round_no}: worker {outcome}"
        problems = invariants.check(sqlite_engine)
        assert not problems, f"after kill {round_no + 1}: {problems[:5]}"
    written = _audit_rows(sqlite_engine) - before
    print(f"{ROUNDS} kills ({mid_transaction} inside an open write transaction), "
          f"{written} audited changes committed, {time.monotonic() - started:.1f} s")
    # The kills landed in real work, most of them with a write transaction open.
    assert mid_transaction >= ROUNDS // 2 and written >= ROUNDS // 2, (mid_transaction,
                                                                      written)
