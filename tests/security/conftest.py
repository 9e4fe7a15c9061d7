"""Helpers for the security tests: run the real `casedesk` CLI against a test database."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from core.cli import app
from core.config import get_settings
from core.db import session_scope
from tests.workflows.helpers import make_world, new_case

ROOT = Path(__file__).resolve().parents[2]


def engine_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def cli(monkeypatch) -> Callable[..., Result]:
    """`cli(engine, "audit", "verify")` runs the command with CASEDESK_DATABASE_URL pointed
    at `engine`'s database, the way an operator would."""
    from core import db

    used: list[str] = []

    def run(engine: Engine, *args: str, input: str | None = None) -> Result:
        url = engine_url(engine)
        used.append(url)
        monkeypatch.setenv("CASEDESK_DATABASE_URL", url)
        get_settings.cache_clear()
        return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)

    yield run
    get_settings.cache_clear()
    # The CLI's cached engines hold pooled connections; close them so PostgreSQL test
    # databases can be dropped and SQLite files closed.
    for url in used:
        db.get_engine(url).dispose()
    db._cached_engine.cache_clear()


# --- the crash and concurrency workers (tests/security/crash_driver.py) ------------------


class Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.security.crash_driver"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.warmed = False

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, "the crash driver died (see captured stderr)"
        return answer

    def start(self, url: str, seed: int, ops: int = 0, result_file: str | None = None) -> int:
        return int(self._ask(f"run {url} {seed} {ops} {result_file or '-'}").split()[1])

    def start_and_wait_ready(self, url: str, seed: int, flag_file: Path) -> int:
        """Fork a worker that runs until killed; return once it is about to write. Its
        "ready" line and the zygote's "pid" line may come in either order."""
        lines = [self._ask(f"run {url} {seed} 0 - {flag_file}"),
                 self.proc.stdout.readline().strip()]
        words = dict(line.split() for line in lines)
        assert words["pid"] == words["ready"], lines
        return int(words["pid"])

    def warm(self, url: str, ops: int = 30) -> None:
        """Once per zygote: do some work in it so every fork starts warm."""
        if not self.warmed:
            assert self._ask(f"warm {url} 0 {ops}") == "warm"
            self.warmed = True

    def wait(self, pid: int) -> str:
        return self._ask(f"wait {pid}")

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def zygote():
    z = Zygote()
    yield z
    z.close()


def seed_world(engine, now, cases: int = 8) -> None:
    with session_scope(engine) as session:
        world = make_world(session, now)
        for _ in range(cases):
            new_case(session, world, now)
