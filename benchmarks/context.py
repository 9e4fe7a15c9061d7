"""What every measurement gets: the working database (engine and bare DBAPI connection),
the run settings, and the bench's frozen `now`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url


@dataclass
class Ctx:
    backend: str  # "sqlite" | "postgresql"
    size: int
    url: str  # the working copy
    engine: Engine
    runs: int
    now: datetime
    log: Callable[[str], None]
    out_dir: Path
    smoke: bool = False
    warmup: int = 1
    naive_runs: int | None = None  # fewer runs for the naive ways (they take minutes at 1M)
    cluster: Any = None  # the PostgreSQL cluster (for psql)
    cache: dict[str, Any] = field(default_factory=dict)

    def naive_kw(self) -> dict[str, int]:
        """measure() arguments for a naive way: its own run count, and no warm-up when
        that is capped (the naive ways read what the measured ways already warmed)."""
        if self.naive_runs is None or self.naive_runs >= self.runs:
            return {"runs": self.runs, "warmup": self.warmup}
        return {"runs": self.naive_runs, "warmup": 0}

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def sqlite_path(self) -> str:
        return make_url(self.url).database or ""

    @property
    def pg_dsn(self) -> str:
        return self.url.replace("postgresql+psycopg://", "postgresql://")

    def bare(self) -> Any:
        """A bare DBAPI connection (sqlite3 / psycopg): the floor uses nothing else."""
        if self.is_sqlite:
            con = sqlite3.connect(self.sqlite_path, isolation_level=None,
                                  check_same_thread=False)
            con.execute("PRAGMA busy_timeout=30000")
            return con
        import psycopg

        con = psycopg.connect(self.pg_dsn, autocommit=True)
        con.execute("SET TIME ZONE 'UTC'")
        return con

    @contextmanager
    def bare_connection(self) -> Iterator[Any]:
        """The suite's one bare connection, opened once: Case Desk's engine keeps a pool,
        so the floor must not pay for connecting either."""
        con = self.cache.get("bare")
        if con is None:
            con = self.cache["bare"] = self.bare()
        yield con

    def close(self) -> None:
        con = self.cache.pop("bare", None)
        if con is not None:
            con.close()

    def catch_up_maintenance(self, *, wait_seconds: float = 600) -> str:
        """PostgreSQL: do now the upkeep autovacuum would start on its own during the
        next suite, then wait for any autovacuum worker still running, so that no suite
        shares the two cores with the upkeep of the one before. (In one run autovacuum
        worked on `cases` and `case_flag` during the triage suite's first minutes, after
        the scan suite's first scan. It was not what kept the queue page slow: the next
        run, with this in place, gave the same figures on a slow stretch of the machine.)
        SQLite has no background upkeep. Returns what was done, for the log."""
        if self.is_sqlite:
            return ""
        import psycopg

        start = time.monotonic()
        with psycopg.connect(self.pg_dsn, autocommit=True) as con:
            stale = [r[0] for r in con.execute(
                "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables"
                " WHERE n_dead_tup > 0 OR n_mod_since_analyze > 0 ORDER BY 1")]
            for table in stale:
                con.execute(f"VACUUM (ANALYZE) {table}")
            while time.monotonic() - start < wait_seconds and con.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE backend_type = 'autovacuum worker'").fetchone()[0]:
                time.sleep(1)
        return (f"vacuumed and analysed {len(stale)} table(s), waited for autovacuum:"
                f" {time.monotonic() - start:.1f} s")

    def ts(self, value: datetime) -> Any:
        """A datetime bound the way each backend stores it: SQLAlchemy keeps SQLite
        timestamps as UTC text, so a bare query must compare with the same text."""
        if self.is_sqlite:
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value

    def sql(self, statement: str) -> str:
        """Bare SQL is written with `?` placeholders; psycopg wants `%s`."""
        return statement if self.is_sqlite else statement.replace("?", "%s")
