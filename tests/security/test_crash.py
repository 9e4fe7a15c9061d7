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
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.models import AuditEntry
from tests.security import invariants
from tests.workflows.helpers import make_world, new_case

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 100


class Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.security.crash_driver"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, "the crash driver died (see captured stderr)"
        return answer

    def start(self, url: str, seed: int, ops: int = 0, result_file: str | None = None) -> int:
        return int(self._ask(f"run {url} {seed} {ops} {result_file or ''}").split()[1])

    def start_and_wait_ready(self, url: str, seed: int, flag_file: Path) -> int:
        """Fork a worker that runs until killed; return once it is about to write. Its
        "ready" line and the zygote's "pid" line may come in either order."""
        lines = [self._ask(f"run {url} {seed} 0 - {flag_file}"),
                 self.proc.stdout.readline().strip()]
        words = dict(line.split() for line in lines)
        assert words["pid"] == words["ready"], lines
        return int(words["pid"])

    def warm(self, url: str, ops: int = 30) -> None:
        assert self._ask(f"warm {url} 0 {ops}") == "warm"

    def wait(self, pid: int) -> str:
        return self._ask(f"wait {pid}")

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


def seed_world(engine, now, cases: int = 8) -> None:
    with session_scope(engine) as session:
        world = make_world(session, now)
        for _ in range(cases):
            new_case(session, world, now)


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
