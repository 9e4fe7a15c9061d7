"""Benchmark page (the naive way): every open case into pandas, sorted there, 50 shown."""

import os
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from benchmarks.suites.triage import naive_page  # noqa: E402
from core.actor import Actor  # noqa: E402
from core.db import get_engine  # noqa: E402
from core.vocab import Role  # noqa: E402

who = Actor(user_id=int(os.environ["BENCH_USER_ID"]), username="bench",
            role=Role.COORDINATOR, team_id=int(os.environ["BENCH_TEAM_ID"]))
ctx = SimpleNamespace(engine=get_engine(), now=datetime.fromisoformat(os.environ["BENCH_NOW"]))
page = naive_page(ctx, who, 0)
st.title("My day (naive)")
st.dataframe(page[["id_x", "state", "first_name", "last_name", "mrn", "due_at"]],
             hide_index=True)
