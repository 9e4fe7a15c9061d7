"""Helpers for the security tests: run the real `casedesk` CLI against a test database."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from core.cli import app
from core.config import get_settings


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
