"""`casedesk run --demo` end to end: seeds an empty database, prints the demo accounts,
serves the dashboard on 127.0.0.1, and stops everything on SIGTERM with status 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from core.config import PROJECT_ROOT
from core.db import create_db_engine
from core.models import Case, User


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.read().decode().strip() == "ok"
    except OSError:
        return False


@pytest.mark.slow
def test_run_demo_seeds_serves_and_stops_cleanly(tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEDESK_")}
    env.update(CASEDESK_DATABASE_URL=url)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from core.cli import main; main()", "run", "--demo",
         "--port", str(port), "--demo-cases", "300"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not _healthy(port):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
        engine = create_db_engine(url)
        with Session(engine) as session:
            assert session.execute(select(func.count()).select_from(Case)).scalar() == 300
            demo = session.execute(select(User.username).where(User.password_hash.is_not(None))
                                   ).scalars().all()
        engine.dispose()
        assert sorted(demo) == ["admin", "coordinator", "manager"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "coordinator-demo" in out and f"http://127.0.0.1:{port}" in out
