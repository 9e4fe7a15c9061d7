"""Test harness: every test that asks for `engine` gets a fresh, migrated database, once on
SQLite and once on a throwaway PostgreSQL cluster started by the harness itself.

Outside CI the PostgreSQL half skips when the server binaries are absent; with CI=true it
fails instead, so CI can never go green without having run it.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from core.db import create_db_engine, migrate, session_scope
from core.workflows.clocks import ensure_default_rules
from tests.support.pgcluster import PostgresUnavailable, start_cluster

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_counter = itertools.count()
TEMPLATE_DB = "casedesk_template"


def _prepare(engine: Engine) -> None:
    migrate(engine)
    with session_scope(engine) as session:
        ensure_default_rules(session, now=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    _prepare(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_cluster():
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI must run the PostgreSQL tests: {exc}")
        pytest.skip(str(exc))
    admin = create_db_engine(cluster.admin_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"CREATE DATABASE {TEMPLATE_DB}"))
    template = create_db_engine(cluster.url(TEMPLATE_DB))
    _prepare(template)
    template.dispose()
    yield cluster, admin
    admin.dispose()
    cluster.stop()


def _sqlite_engine(tmp_path: Path, template: Path) -> Engine:
    path = tmp_path / "casedesk.db"
    shutil.copyfile(template, path)
    return create_db_engine(f"sqlite:///{path}")


def _pg_engine(pg_cluster) -> tuple[Engine, str]:
    cluster, admin = pg_cluster
    name = f"t_{os.getpid()}_{next(_counter)}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
    return create_db_engine(cluster.url(name)), name


def _drop_pg(pg_cluster, name: str) -> None:
    _, admin = pg_cluster
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request, tmp_path, sqlite_template) -> Iterator[Engine]:
    """A fresh migrated database with the default SLA rules, on each backend."""
    if request.param == "sqlite":
        eng = _sqlite_engine(tmp_path, sqlite_template)
        yield eng
        eng.dispose()
    else:
        pg = request.getfixturevalue("pg_cluster")
        eng, name = _pg_engine(pg)
        yield eng
        eng.dispose()
        _drop_pg(pg, name)


@pytest.fixture
def sqlite_engine(tmp_path, sqlite_template) -> Iterator[Engine]:
    """SQLite only: for tests of behaviour that does not depend on the backend."""
    eng = _sqlite_engine(tmp_path, sqlite_template)
    yield eng
    eng.dispose()


@pytest.fixture
def pg_engine(pg_cluster) -> Iterator[Engine]:
    eng, name = _pg_engine(pg_cluster)
    yield eng
    eng.dispose()
    _drop_pg(pg_cluster, name)


@pytest.fixture
def now() -> datetime:
    """A fixed 'now' (a Wednesday) for rules that take time as an argument."""
    return datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
