"""Grow a demo database by copying its cases: `factor` copies of every patient, case and
case row (history, records, contacts), each copy with new ids, in SQL on the database
itself (SQLite and PostgreSQL alike). Staff, teams and rules stay as they are.

Why: the demo generator (issue 2) writes ~100,000 cases a minute of one core; on this
shared 2-core machine, under a load of 10 from everyone's test suites and with `nice`, a
1,000,000-case build took far too long. Copying the 100,000-case demo ten times keeps its
every distribution (states, clocks, history, about six events per case, records per
case), only with each case present ten times under new ids and record numbers; the
indexes are what the size exercises, and they see ten times the rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table

# Children before grandchildren; each entry: table, {fk column: parent table}.
TABLES: list[tuple[str, dict[str, str]]] = [
    ("patient", {}),
    ("cases", {"patient_id": "patient"}),
    ("case_event", {"case_id": "cases"}),
    ("record_item", {"case_id": "cases"}),
    ("contact_attempt", {"case_id": "cases"}),
]


def _table(name: str) -> Table:
    from sqlmodel import SQLModel

    from core import models  # noqa: F401 - registers the tables

    return SQLModel.metadata.tables[name]


def statements(dialect: str, max_ids: dict[str, int], copy: int) -> list[str]:
    """INSERT ... SELECT statements making copy number `copy` (1, 2, ...) of the base rows
    (ids 1..max_ids[table])."""
    out = []
    for name, parents in TABLES:
        table = _table(name)
        cols, exprs = [], []
        for col in table.columns:
            c = col.name
            cols.append(f'"{c}"')
            if c == "id":
                exprs.append(f"id + {copy * max_ids[name]}")
            elif c in parents:
                exprs.append(f"{c} + {copy * max_ids[parents[c]]}")
            elif name == "patient" and c == "mrn":
                new_id = f"id + {copy * max_ids[name]}"
                exprs.append(f"printf('CD%08d', {new_id})" if dialect == "sqlite"
                             else f"'CD' || lpad(({new_id})::text, 8, '0')")
            else:
                exprs.append(f'"{c}"')
        out.append(f'INSERT INTO "{name}" ({", ".join(cols)}) '  # noqa: S608
                   f'SELECT {", ".join(exprs)} FROM "{name}" '
                   f"WHERE id <= {max_ids[name]} ORDER BY id")
    return out


def recount_stays(dialect: str) -> list[str]:
    """stage_stay_count recomputed from the history (migration 0012's triggers keep it
    row by row; a bulk copy with triggers off, as PostgreSQL's replica role, does not)."""
    from core.analytics.stay_percentiles import bucket_sql

    bucket = bucket_sql("days_in_from_state", dialect)
    return ["DELETE FROM stage_stay_count",
            "INSERT INTO stage_stay_count (team_id, state, bucket, stays) "  # noqa: S608
            f"SELECT team_id, from_state, {bucket}, count(*) FROM case_event "
            "WHERE from_state IS NOT NULL AND days_in_from_state IS NOT NULL "
            "GROUP BY 1, 2, 3"]


def base_ids(execute: Any) -> dict[str, int]:
    """max(id) of each copied table, through `execute(sql) -> scalar`."""
    return {name: int(execute(f'SELECT coalesce(max(id), 0) FROM "{name}"') or 0)  # noqa: S608
            for name, _ in TABLES}


def replicate_sqlite(path: str, factor: int, log: Any) -> None:
    """Make `factor - 1` more copies in the SQLite file, secondary indexes dropped during
    the copy and rebuilt after (much faster than updating them row by row)."""
    import sqlite3
    import time

    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA cache_size=-524288")
        con.execute("PRAGMA temp_store=MEMORY")
        indexes = con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('patient', 'cases', 'case_event', 'record_item', "
            "'contact_attempt')").fetchall()
        # The copies carry their own derived columns (failed_contacts, scan_dirty): the
        # triggers that keep them (migration 0005) would recount each copied contact
        # attempt without the dropped indexes. Dropped for the copy, restored after.
        triggers = con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
            "AND tbl_name IN ('cases', 'contact_attempt')").fetchall()
        ids = base_ids(lambda sql: con.execute(sql).fetchone()[0])
        start = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        for name, _ in triggers:
            con.execute(f'DROP TRIGGER "{name}"')
        for copy in range(1, factor):
            for sql in statements("sqlite", ids, copy):
                con.execute(sql)
        log(f"    copied x{factor} in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        for _, sql in indexes:
            con.execute(sql)
        for _, sql in triggers:
            con.execute(sql)
        con.execute("COMMIT")
        log(f"    rebuilt {len(indexes)} indexes in {time.perf_counter() - start:.0f} s")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
