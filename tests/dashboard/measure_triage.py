"""Measure My day's rerun time in AppTest on a large demo database (not a pytest test).

    casedesk demo --cases 100000   # with CASEDESK_DATABASE_URL=sqlite:////tmp/demo100k.db
    .venv/bin/python -m tests.dashboard.measure_triage /tmp/demo100k.db

Works on a copy of the database (signing in writes session and audit rows; the demo
accounts get their demo passwords there). Prints the
median of 7 reruns per demo role, then a search rerun and the second page.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(source: str) -> None:
    copy = Path(tempfile.mkdtemp()) / "measure.db"
    shutil.copyfile(source, copy)
    os.environ["CASEDESK_DATABASE_URL"] = f"sqlite:///{copy}"
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    from core.db import get_engine, session_scope
    from core.demo import DEMO_PASSWORDS, ensure_demo_accounts
    from core.timeutil import utcnow

    # `casedesk demo` leaves the demo accounts without passwords until `casedesk run
    # --demo` sets them; set them on the copy.
    with session_scope(get_engine()) as session:
        ensure_demo_accounts(session, utcnow(), demo_mode=True)

    # As in tests/dashboard/conftest.py: stay on the entry script for every rerun.
    original = PagesManager.__init__

    def init(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init

    def timed(at: AppTest) -> float:
        start = time.perf_counter()
        at.run()
        return (time.perf_counter() - start) * 1000

    for role, password in DEMO_PASSWORDS.items():
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        at.run()
        at.text_input(key="login_username").input(role.value)
        at.text_input(key="login_password").input(password)
        next(b for b in at.button if b.label == "Sign in").click()
        at.run()
        if at.exception or not at.dataframe:
            print(f"{role.value}: could not open My day ({at.exception})")
            continue
        reruns = [timed(at) for _ in range(7)]
        print(f"{role.value}: My day rerun median {statistics.median(reruns):.0f} ms "
              f"(min {min(reruns):.0f}, max {max(reruns):.0f}), "
              f"{len(at.dataframe[0].value)} rows")
        at.text_input(key="triage_search").input("mar")
        print(f"  search rerun {timed(at):.0f} ms")
        at.text_input(key="triage_search").input("")
        at.run()
        nxt = next((b for b in at.button if b.label == "Next page" and not b.disabled), None)
        if nxt is not None:
            nxt.click()
            print(f"  next page {timed(at):.0f} ms")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/demo100k.db")
