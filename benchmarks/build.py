"""Build the benchmark databases once and reuse them; hand out throwaway working copies.

SQLite: `casedesk demo --cases N --seed S` (issue 2's bulk generator, the same code a
demo uses) writes benchmarks/data/cases-N.db, with a manifest beside it saying how long
the build took. PostgreSQL: the SQLite database is loaded into the kept cluster with
COPY (indexes dropped during the load and rebuilt after, foreign-key triggers off), so
both backends hold exactly the same rows and the figures compare like for like.

A reused database is brought to the newest migration first. Measurements that write
(scans, transitions) run on a copy: `cp` of the SQLite file, `CREATE DATABASE ... TEMPLATE`
on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from core.config import PROJECT_ROOT
from core.db import create_db_engine, migrate, session_scope
from core.demo_limits import DATA_VERSION

DATA_DIR = PROJECT_ROOT / "benchmarks" / "data"
DEFAULT_SEED = 8
# Bigger databases are this demo-built size copied in SQL (benchmarks/replicate.py).
REPLICATE_BASE = 100_000
# The demo's reference time (a Wednesday, start of the UTC day).
DEMO_NOW = datetime(2026, 11, 25, tzinfo=UTC)
# Sizes at or above this are built under `nice -n 10`: two cores are shared by everyone.
NICE_FROM = 50_000

Log = Callable[[str], None]


@dataclass
class BuiltDb:
    backend: str
    size: int
    url: str  # the pristine database (read-only measurements may use it directly)
    path: Path | None = None  # SQLite file
    manifest: dict[str, Any] = field(default_factory=dict)
    reused: bool = False


def _casedesk() -> list[str]:
    exe = Path(sys.executable).with_name("casedesk")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "core.cli"]


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _count_cases_sqlite(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM cases").fetchone()[0]
    finally:
        con.close()


def replication_base(size: int) -> int | None:
    """The demo-built size a bigger database is copied from, or None to run the demo."""
    if size > REPLICATE_BASE and size % REPLICATE_BASE == 0:
        return REPLICATE_BASE
    return None


def build_sqlite(size: int, *, seed: int, data_dir: Path, log: Log) -> BuiltDb:
    path = data_dir / f"cases-{size}.db"
    manifest_path = path.with_suffix(".json")
    manifest = _read_manifest(manifest_path)
    url = f"sqlite:///{path}"
    # Reused only if the demo generator still writes what it wrote then (DATA_VERSION).
    if path.exists() and manifest and manifest.get("cases") == size and \
            manifest.get("seed") == seed and manifest.get("demo_version") == DATA_VERSION:
        engine = create_db_engine(url)
        migrate(engine)  # a reused database follows the newest schema
        _ensure_statistics(engine, log)
        engine.dispose()
        log(f"  sqlite {size:,}: reusing {path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path} "  # noqa: E501
            f"(built in {manifest['build_seconds']:.0f} s on {manifest['built_at']})")
        return BuiltDb("sqlite", size, url, path, manifest, reused=True)

    data_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".building")
    for stale in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        stale.unlink(missing_ok=True)
    base = replication_base(size)
    if base is not None:
        return _build_sqlite_by_copies(size, base, seed=seed, data_dir=data_dir, log=log)
    _prepare_empty(partial)
    cmd = _demo_command(size, seed)
    if size >= NICE_FROM and shutil.which("nice"):
        cmd = ["nice", "-n", "10", *cmd]
    env = {**os.environ, "CASEDESK_DATABASE_URL": f"sqlite:///{partial}"}
    log(f"  sqlite {size:,}: building with `{' '.join(cmd[-8:])}` ...")
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"demo data generation failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    demo_seconds = time.perf_counter() - start
    # Fold the WAL into the file so a plain copy of it is a whole database.
    con = sqlite3.connect(partial)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    cases = _count_cases_sqlite(partial)
    if cases != size:
        raise RuntimeError(f"casedesk demo --cases {size} made {cases} cases")
    for suffix in ("-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    partial.replace(path)
    manifest = {"cases": size, "seed": seed, "demo_version": DATA_VERSION,
                "build_seconds": round(demo_seconds, 1),
                "now": _demo_now(path).isoformat(), "method": "casedesk demo",
                "built_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "bytes": path.stat().st_size, "demo_output": done.stdout[-1500:]}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    log(f"  sqlite {size:,}: built in {demo_seconds:.1f} s "
        f"({path.stat().st_size / 1e6:,.0f} MB)")
    return BuiltDb("sqlite", size, url, path, manifest)


def _build_sqlite_by_copies(size: int, base: int, *, seed: int, data_dir: Path,
                            log: Log) -> BuiltDb:
    """`size // base` copies of the demo-built `base` database (benchmarks/replicate.py)."""

    source = build_sqlite(base, seed=seed, data_dir=data_dir, log=log)
    assert source.path is not None
    path = data_dir / f"cases-{size}.db"
    partial = path.with_name(path.name + ".building")
    factor = size // base
    log(f"  sqlite {size:,}: copying the {base:,}-case demo database x{factor} "
        f"(nice -n 10) ...")
    start = time.perf_counter()
    shutil.copyfile(source.path, partial)
    # In a child under `nice`: the copy is minutes of CPU on a shared machine.
    script = ("import sys; from benchmarks.replicate import replicate_sqlite; "
              "replicate_sqlite(sys.argv[1], int(sys.argv[2]), print)")
    cmd = [sys.executable, "-c", script, str(partial), str(factor)]
    if shutil.which("nice"):
        cmd = ["nice", "-n", "10", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"copying failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    log(done.stdout.rstrip())
    seconds = time.perf_counter() - start
    cases = _count_cases_sqlite(partial)
    if cases != size:
        raise RuntimeError(f"copying made {cases} cases, not {size}")
    for suffix in ("-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    partial.replace(path)
    manifest = {"cases": size, "seed": seed, "demo_version": DATA_VERSION,
                "build_seconds": round(seconds, 1),
                "base_build_seconds": source.manifest.get("build_seconds"),
                "method": f"the {base:,}-case demo database copied x{factor} in SQL",
                "base": base, "factor": factor, "now": source.manifest["now"],
                "built_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "bytes": path.stat().st_size}
    path.with_suffix(".json").write_text(json.dumps(manifest, indent=2))
    log(f"  sqlite {size:,}: built in {seconds:.1f} s ({path.stat().st_size / 1e6:,.0f} MB)")
    return BuiltDb("sqlite", size, f"sqlite:///{path}", path, manifest)


def _ensure_statistics(engine, log: Log) -> None:  # noqa: ANN001
    """The planner statistics the demo leaves (core.demo.refresh_statistics), for a
    database built before it did or grown by copying."""
    from sqlalchemy import inspect

    with engine.connect() as conn:
        have = inspect(conn).has_table("sqlite_stat1") and conn.exec_driver_sql(
            "SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'cases'").scalar()
    if not have:
        from core.demo import refresh_statistics

        start = time.perf_counter()
        refresh_statistics(engine)
        log(f"    planner statistics (ANALYZE) in {time.perf_counter() - start:.1f} s")


def _demo_command(size: int, seed: int) -> list[str]:
    """`casedesk demo` (issue 2) with the reference time pinned, so a rebuild on another
    day gives the same rows; straight `generate_demo` while the command is not there."""
    cli = _casedesk()
    probe = subprocess.run(cli + ["demo", "--help"], capture_output=True, text=True,
                           cwd=PROJECT_ROOT)
    if probe.returncode == 0:
        cmd = cli + ["demo", "--cases", str(size), "--seed", str(seed)]
        if "--now" in probe.stdout:
            cmd += ["--now", DEMO_NOW.isoformat()]
        return cmd
    return [sys.executable, "-c",
            "import sys; from benchmarks.build import demo_child; demo_child(sys.argv[1:])",
            str(size), str(seed)]


def demo_child(argv: list[str]) -> None:
    from core.config import get_settings
    from core.db import get_engine
    from core.demo import generate_demo

    size, seed = int(argv[0]), int(argv[1])
    summary = generate_demo(get_engine(get_settings().database_url), cases=size,
                            seed=seed, now=DEMO_NOW)
    print(f"{summary.cases} cases, {summary.events} events in {summary.seconds:.1f} s")


def _prepare_empty(path: Path) -> None:
    from core.workflows.clocks import ensure_default_rules

    engine = create_db_engine(f"sqlite:///{path}")
    migrate(engine)
    with session_scope(engine) as session:
        ensure_default_rules(session, now=DEMO_NOW)
    engine.dispose()


def _demo_now(path: Path) -> datetime:
    """The demo's reference time: every open case's clock runs up to it. The demo writes
    it on its `demo.seed` audit row."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT at FROM audit_entry WHERE action = 'demo.seed' "
                          "ORDER BY id LIMIT 1").fetchone()
        if row is None:
            row = con.execute("SELECT max(at) FROM case_event").fetchone()
    finally:
        con.close()
    return datetime.fromisoformat(row[0]).replace(tzinfo=UTC)


def sqlite_work_copy(db: BuiltDb, *, log: Log) -> str:
    """A fresh copy of the pristine file for measurements that write."""
    assert db.path is not None
    work = db.path.with_name(f"work-{db.size}.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    start = time.perf_counter()
    shutil.copyfile(db.path, work)
    log(f"  sqlite {db.size:,}: working copy in {time.perf_counter() - start:.1f} s")
    return f"sqlite:///{work}"


# --- PostgreSQL -------------------------------------------------------------------------


def _pg_admin(cluster):  # noqa: ANN001, ANN202
    return create_db_engine(cluster.admin_url).execution_options(isolation_level="AUTOCOMMIT")


def _pg_manifest_path(data_dir: Path, size: int) -> Path:
    return data_dir / f"pg-cases-{size}.json"


def build_postgresql(size: int, *, sqlite_db: BuiltDb, cluster, data_dir: Path,  # noqa: ANN001
                     log: Log) -> BuiltDb:
    name = f"cases_{size}"
    url = cluster.url(name)
    manifest_path = _pg_manifest_path(data_dir, size)
    manifest = _read_manifest(manifest_path)
    admin = _pg_admin(cluster)
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                              {"n": name}).first() is not None
    source_built = sqlite_db.manifest.get("built_at")
    if exists and manifest and manifest.get("cases") == size and \
            manifest.get("source_built_at") == source_built:
        engine = create_db_engine(url)
        migrate(engine)
        engine.dispose()
        admin.dispose()
        log(f"  postgresql {size:,}: reusing database {name} "
            f"(loaded in {manifest['build_seconds']:.0f} s on {manifest['built_at']})")
        return BuiltDb("postgresql", size, url, None, manifest, reused=True)

    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    source, factor = sqlite_db.path, 1
    base = sqlite_db.manifest.get("base")
    if base:  # load the demo-built base and copy it in PostgreSQL, as on SQLite
        source, factor = data_dir / f"cases-{base}.db", int(sqlite_db.manifest["factor"])
    log(f"  postgresql {size:,}: loading {source.name} with COPY"
        + (f", then copying it x{factor} in SQL" if factor > 1 else "") + " ...")
    start = time.perf_counter()
    engine = create_db_engine(url)
    migrate(engine)
    engine.dispose()
    rows = load_sqlite_into_postgresql(source, url, log=log, factor=factor)
    seconds = time.perf_counter() - start
    manifest = {"cases": size, "source_built_at": source_built, "rows": rows,
                "build_seconds": round(seconds, 1),
                "built_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    log(f"  postgresql {size:,}: loaded {sum(rows.values()):,} rows in {seconds:.1f} s")
    return BuiltDb("postgresql", size, url, None, manifest)


def load_sqlite_into_postgresql(sqlite_path: Path, pg_url: str, *, log: Log,
                                factor: int = 1) -> dict[str, int]:
    """Copy every table's rows from the SQLite file into the (migrated, empty) PostgreSQL
    database. Values go over as SQLite stores them: timestamps as UTC text (the session
    runs in UTC), booleans as 0/1, which PostgreSQL's COPY accepts."""
    import psycopg
    from sqlmodel import SQLModel

    from core import models  # noqa: F401 - registers the tables

    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    rows: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute("SET TIME ZONE 'UTC'")
        indexes = pg.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
        ).fetchall()
        for index_name, _ in indexes:
            pg.execute(f"DROP INDEX {index_name}")
        with pg.transaction():
            # replica role: no foreign-key or audit triggers while rows arrive in bulk
            pg.execute("SET LOCAL session_replication_role = replica")
            for table in SQLModel.metadata.sorted_tables:
                present = src.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                      "name = ?", (table.name,)).fetchone()
                if not present:
                    continue
                cols = [c.name for c in table.columns]
                quoted = ", ".join(f'"{c}"' for c in cols)
                cursor = src.execute(f'SELECT {quoted} FROM "{table.name}"')  # noqa: S608
                count = 0
                with pg.cursor().copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
                    while batch := cursor.fetchmany(20_000):
                        for row in batch:
                            copy.write_row(row)
                        count += len(batch)
                rows[table.name] = count
            if factor > 1:
                from benchmarks.replicate import base_ids, recount_stays, statements

                ids = base_ids(lambda sql: pg.execute(sql).fetchone()[0])
                copy_start = time.perf_counter()
                for copy in range(1, factor):
                    for sql in statements("postgresql", ids, copy):
                        pg.execute(sql)
                log(f"    copied x{factor} in {time.perf_counter() - copy_start:.0f} s")
                # The stay counts are kept by a trigger, which the replica role silenced.
                for sql in recount_stays("postgresql"):
                    pg.execute(sql)
        start = time.perf_counter()
        for _, definition in indexes:
            pg.execute(definition)
        log(f"    rebuilt {len(indexes)} indexes in {time.perf_counter() - start:.1f} s")
        for table in SQLModel.metadata.sorted_tables:
            id_col = table.columns.get("id")
            if id_col is not None and id_col.autoincrement in (True, "auto") and \
                    id_col.primary_key and str(id_col.type) == "INTEGER":
                pg.execute(
                    f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', 'id'), "  # noqa: S608
                    f"coalesce((SELECT max(id) FROM \"{table.name}\"), 0) + 1, false)"
                )
        pg.execute("VACUUM (ANALYZE)")
        if factor > 1:
            for name in list(rows):
                rows[name] = pg.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]  # noqa: S608
    src.close()
    return rows


def pg_work_copy(db: BuiltDb, *, cluster, log: Log) -> str:  # noqa: ANN001
    name = f"work_{db.size}"
    admin = _pg_admin(cluster)
    start = time.perf_counter()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        # the template must have no other sessions: end any left by a killed run
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :n AND pid <> pg_backend_pid()"),
                     {"n": f"cases_{db.size}"})
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE cases_{db.size}"))
    admin.dispose()
    log(f"  postgresql {db.size:,}: working copy in {time.perf_counter() - start:.1f} s")
    return cluster.url(name)
