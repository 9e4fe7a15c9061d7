"""The triage page's rerun under Streamlit's AppTest: the real entry script
(dashboard/app.py: session check, navigation, the "My day" page with its headline,
filters and queue), signed in as the demo coordinator on the working database.

naive: a page that loads every open case into pandas and sorts it there
(benchmarks/pages/naive_triage.py). floor: a page that shows the bare SQL's 50 rows and
nothing else (benchmarks/pages/floor_triage.py) - what any Streamlit rerun costs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import update

from benchmarks.common import actor
from benchmarks.context import Ctx
from benchmarks.report import Row, Target
from benchmarks.timing import measure
from core.config import PROJECT_ROOT
from core.db import session_scope
from core.models import User
from core.vocab import Role

APP = PROJECT_ROOT / "dashboard" / "app.py"
PAGES = Path(__file__).resolve().parent / "pages"
PASSWORD = "benchmark-password"


@contextmanager
def app_environment(ctx: Ctx, extra: dict[str, str] | None = None) -> Iterator[None]:
    """Point the dashboard (which AppTest runs in this process) at the working copy, and
    keep AppTest on the entry script for every rerun as the server does (see
    tests/dashboard/conftest.py)."""
    from streamlit.runtime.pages_manager import PagesManager

    import core.config
    import core.db

    env = {"CASEDESK_DATABASE_URL": ctx.url, "BENCH_NOW": ctx.now.isoformat(),
           **(extra or {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    original = PagesManager.__init__

    def init(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    core.config.get_settings.cache_clear()
    core.db._cached_engine.cache_clear()
    try:
        yield
    finally:
        PagesManager.__init__ = original
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        core.db.get_engine(ctx.url).dispose()
        core.config.get_settings.cache_clear()
        core.db._cached_engine.cache_clear()


def _rerun(at) -> None:  # noqa: ANN001
    at.run()
    if at.exception:
        raise RuntimeError(f"the page raised: {[e.value for e in at.exception]}")


def _sign_in(at, username: str) -> None:  # noqa: ANN001
    at.run()
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(PASSWORD)
    for button in at.button:
        if button.label == "Sign in":
            button.click()
            break
    _rerun(at)
    if not any(getattr(m, "label", "") for m in at.get("metric")):
        raise RuntimeError("signed in, but the triage page showed no headline")


def _set_password(ctx: Ctx, user_id: int) -> None:
    # Cheap argon2id parameters: sign-in speed is not what is measured here.
    from argon2 import PasswordHasher

    hashed = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    with session_scope(ctx.engine) as session:
        session.execute(update(User).where(User.id == user_id)
                        .values(password_hash=hashed, is_active=True, failed_logins=0,
                                locked_until=None))


def run(ctx: Ctx) -> Row:
    from streamlit.testing.v1 import AppTest

    who = actor(ctx, Role.COORDINATOR)
    _set_password(ctx, who.user_id)
    with app_environment(ctx):
        at = AppTest.from_file(str(APP), default_timeout=300)
        _sign_in(at, who.username)
        ours = measure(lambda: _rerun(at), runs=ctx.runs, warmup=ctx.warmup)
    extra = {"BENCH_TEAM_ID": str(who.team_id), "BENCH_USER_ID": str(who.user_id),
             "BENCH_BACKEND": ctx.backend}
    stats = []
    for script, kw in (("naive_triage.py", ctx.naive_kw()),
                       ("floor_triage.py", {"runs": ctx.runs, "warmup": ctx.warmup})):
        with app_environment(ctx, extra):
            page = AppTest.from_file(str(PAGES / script), default_timeout=300)
            _rerun(page)
            stats.append(measure(lambda p=page: _rerun(p), **kw))
    import streamlit as st

    st.cache_resource.clear()  # the floor page's bare connection
    return Row("triage", "triage page rerun (AppTest)", ours, stats[0], stats[1],
               targets=[Target("value", 300, "≤ 300 ms")],
               note="signed in as the coordinator; whole app.py + My day")
