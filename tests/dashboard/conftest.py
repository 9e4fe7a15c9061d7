"""AppTest harness: the real entry script against a fresh temp SQLite database.

`app_db` points CASEDESK_DATABASE_URL at a copy of the migrated template and clears the
settings and engine caches, so the dashboard (which runs in this process under AppTest)
uses it. `make_app()` gives an AppTest of dashboard/app.py; `sign_in(at, user, pw)`
fills the form. `add_user(...)` creates an account with a known password.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine
from streamlit.testing.v1 import AppTest

import core.config
import core.db
from core.db import session_scope
from core.models import Team, User
from core.timeutil import utcnow
from core.vocab import Role
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
PASSWORD = "correct horse battery"
# Fast argon2id parameters for tests only: the real ones cost ~50 ms a hash.
_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_HASH_CACHE: dict[str, str] = {}


def password_hash(password: str = PASSWORD) -> str:
    if password not in _HASH_CACHE:
        _HASH_CACHE[password] = _HASHER.hash(password)
    return _HASH_CACHE[password]


def clear_caches() -> None:
    core.config.get_settings.cache_clear()
    core.db._cached_engine.cache_clear()


@dataclass
class AppDb:
    engine: Engine
    url: str
    now: datetime

    def add_user(self, username: str, *, role: Role = Role.COORDINATOR,
                 team: Team | None = None, password: str = PASSWORD,
                 full_name: str | None = None) -> User:
        with session_scope(self.engine) as session:
            if team is None and role is not Role.ADMIN:
                team = self.team(session)
            user = factories.make_user(session, now=self.now, team=team, role=role,
                                       username=username, password_hash=password_hash(password))
            if full_name:
                user.full_name = full_name
                session.add(user)
            session.flush()
            session.expunge(user)
            return user

    def team(self, session, name: str = "Breast team") -> Team:  # noqa: ANN001
        from sqlmodel import select

        team = session.exec(select(Team).where(Team.name == name)).first()
        return team or factories.make_team(session, now=self.now, name=name)

    def session(self, write: bool = True):  # noqa: ANN201
        return session_scope(self.engine, write=write)


@pytest.fixture
def app_db(tmp_path, sqlite_template, monkeypatch) -> Iterator[AppDb]:
    path = tmp_path / "dashboard.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("CASEDESK_DATABASE_URL", url)
    monkeypatch.delenv("CASEDESK_DEMO_MODE", raising=False)
    clear_caches()
    engine = core.db.get_engine(url)
    yield AppDb(engine=engine, url=url, now=utcnow())
    engine.dispose()
    clear_caches()


@pytest.fixture
def make_app(app_db) -> Callable[[], AppTest]:
    def _make() -> AppTest:
        return AppTest.from_file(APP, default_timeout=30)

    return _make


def sign_in(at: AppTest, username: str, password: str = PASSWORD) -> AppTest:
    """Fill and submit the sign-in form; returns the AppTest after the rerun."""
    try:
        at.text_input(key="login_username")
    except KeyError:
        at.run()
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(password)
    click(at, "Sign in")
    return at.run()


def click(at: AppTest, label: str) -> None:
    """Click the first button with this label (form submit buttons included)."""
    for button in at.button:
        if button.label == label:
            button.click()
            return
    raise AssertionError(f"no button {label!r}; have {[b.label for b in at.button]}")


def texts(at: AppTest) -> str:
    """Everything the page shows as text, for 'assert "..." in texts(at)'."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning",
                 "info", "success", "text", "exception"):
        for el in at.get(kind):
            parts.append(str(getattr(el, "value", "")))
    for el in at.get("badge") if hasattr(at, "get") else []:
        parts.append(str(getattr(el, "label", "")))
    return "\n".join(parts)


@pytest.fixture(autouse=True)
def _navigation_like_the_server(monkeypatch):
    """Keep AppTest on the entry script for every rerun, as the server does.

    Streamlit treats a `pages/` folder next to the entry script as an old-style
    multipage app until the first `st.navigation` call clears a class-wide flag; the
    server keeps it cleared for the life of the process, but AppTest resets it before
    every run, so without this each rerun after the first would run the page file
    directly and skip app.py. (tests/dashboard/test_guard.py covers a page run directly.)
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
