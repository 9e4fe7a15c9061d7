"""A scan process SIGKILLed half-way (after some of its statements ran) leaves nothing
behind - no flag, no JobRun row - and the next scan does the whole job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from sqlalchemy import func, select

from core.config import PROJECT_ROOT
from core.db import session_scope
from core.models import CaseFlag, JobRun
from core.scan import run_scan
from core.timeutil import utcnow
from tests.factories import make_case, make_team

# Runs the real scan, but stops for good after the first flag kind's statements (the
# SLA flags are written inside the open transaction) and says so.
SLOW_SCAN = textwrap.dedent("""
    import sys, time
    from core.db import create_db_engine
    from core.scan import run_scan, sweep
    from core.timeutil import utcnow

    real = sweep._sweep_kind
    def stuck(session, rule, ctx, *direct):
        counts = real(session, rule, ctx, *direct)
        print("midway", rule.kind, counts["raised"], flush=True)
        time.sleep(60)
        return counts
    sweep._sweep_kind = stuck
    run_scan(create_db_engine(sys.argv[1]), now=utcnow(), worker="doomed")
""")


def count(engine, model) -> int:
    with session_scope(engine, write=False) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def test_scan_killed_midway_leaves_no_partial_result_and_the_next_completes_it(engine):
    now = utcnow()
    with session_scope(engine) as session:
        team = make_team(session, now=now)
        for days in (6, 8, 12):
            make_case(session, now=now, team=team, state="referral", days_in_state=days,
                      biopsy_days_ago=50)
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SCAN, engine.url.render_as_string(hide_password=False)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("midway sla 3"), line + proc.stdout.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert count(engine, CaseFlag) == 0
    assert count(engine, JobRun) == 0
    result = run_scan(engine, now=utcnow())
    assert result.raised == 6  # three SLA flags and three patient-clock flags
    assert count(engine, CaseFlag) == 6
