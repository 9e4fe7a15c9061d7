"""Statistics the read models share: percentiles computed in SQL, and Wilson intervals.

Percentiles are the continuous kind (linear interpolation between closest ranks), the
definition of PostgreSQL's `percentile_cont` and of numpy's default, so both databases
give the same number. SQLite has no `percentile_cont`: there the values of each group are
ranked with window functions and the two neighbouring ranks are picked out and
interpolated in the same statement - the database still does all the work.

When the values sit in an index ordered by (key, value), `index_percentiles` computes the
same numbers without ranking every row: one grouped count per key, then the one or two
values at the needed ranks, each read with ORDER BY value LIMIT 1-2 OFFSET k from
whichever end of the key's index range is nearer. SQLite walks only index entries, and
the 90th percentile a tenth of them (FIELD-NOTES.md: ranking every row with window
functions was the slow part at a million cases). PostgreSQL runs its percentile_cont over
the same index range, which measured a little faster there than the same reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    bindparam,
    case,
    cast,
    func,
    select,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

Z95 = 1.959963984540054


def percentile_select(
    base: Select, keys: Sequence[str], value: str, dialect: Dialect,
    fractions: Sequence[float] = (0.5, 0.9),
) -> Select:
    """From `base` (a SELECT with the key columns and a numeric `value` column) build a
    SELECT of keys, `n` and one column `p50`, `p90`... per fraction, grouped by the keys."""
    sub = base.subquery("pv")
    kcols = [sub.c[k] for k in keys]
    v = sub.c[value]
    if dialect.name == "postgresql":
        cols = [
            func.percentile_cont(p).within_group(v.asc()).label(_label(p)) for p in fractions
        ]
        return select(*kcols, func.count(v).label("n"), *cols).group_by(*kcols)

    ranked = select(
        *kcols,
        v.label("v"),
        (func.row_number().over(partition_by=kcols, order_by=v) - 1).label("i"),
        func.count().over(partition_by=kcols).label("cnt"),
    ).subquery("ranked")
    rk = [ranked.c[k] for k in keys]
    i, n, rv = ranked.c.i, ranked.c.cnt, ranked.c.v
    cols = []
    for p in fractions:
        h = cast(n - 1, Float) * p  # zero-based fractional rank
        lo = cast(h, Integer)  # floor: h is never negative
        at_lo = func.max(case((i == lo, rv)))
        at_hi = func.coalesce(func.max(case((i == lo + 1, rv))), at_lo)
        frac = func.max(h - lo)
        cols.append((at_lo + frac * (at_hi - at_lo)).label(_label(p)))
    return select(*rk, func.max(n).label("n"), *cols).group_by(*rk)


@dataclass(frozen=True)
class Percentiles:
    n: int
    values: tuple[float, ...]  # one per requested fraction, in the same order


def index_percentiles(
    session: Session, key: ColumnElement, value: ColumnElement, keys: Sequence[str],
    where: Sequence[ColumnElement[bool]] = (), fractions: Sequence[float] = (0.5, 0.9),
) -> dict[str, Percentiles]:
    """Continuous percentiles of `value` per `key` (only the given keys; keys without a
    value are left out), equal to `percentile_select`'s but read off an index on
    (conditions..., key, value): per key a count, then per fraction the one or two values
    at its rank. Three statements, built once and run with each key's parameters."""
    # Core, not ORM, execution, and no per-key statements to build: at 100k cases building
    # and keying a dozen-part UNION cost three times more than running it.
    con = session.connection()
    if con.dialect.name == "postgresql":
        return _percentile_cont(con, key, value, keys, where, fractions)
    base = [*where, key == bindparam("k"), value.is_not(None)]
    count = select(func.count()).where(*base)
    # OFFSET walks the index one entry at a time: read from the nearer end.
    up = select(value).where(*base).order_by(value)
    down = select(value).where(*base).order_by(value.desc())
    up, down = (s.limit(bindparam("size")).offset(bindparam("skip")) for s in (up, down))
    out = {}
    for k in keys:
        n = con.execute(count, {"k": k}).scalar_one()
        if not n:
            continue
        vals = []
        for p in fractions:
            first, size = _window(n, p)
            last = n - (first + size)  # values above the window
            if first <= last:
                got = con.execute(up, {"k": k, "size": size, "skip": first}).scalars().all()
            else:
                got = con.execute(down, {"k": k, "size": size, "skip": last}).scalars().all()
            lo, hi = min(got), max(got)
            # the same arithmetic as percentile_select: v[lo] + frac * (v[lo+1] - v[lo])
            vals.append(float(lo) + (float(n - 1) * p - first) * (float(hi) - float(lo)))
        out[k] = Percentiles(int(n), tuple(vals))
    return out


def _percentile_cont(
    con: Connection, key: ColumnElement, value: ColumnElement, keys: Sequence[str],
    where: Sequence[ColumnElement[bool]], fractions: Sequence[float],
) -> dict[str, Percentiles]:
    """PostgreSQL: its own percentile_cont over the same index range, one statement.
    Measured at a million cases (a team's 305k stays): 240-260 ms against 270-300 ms
    for the count-and-offset reads, whose index-only scans cost PostgreSQL more per
    entry than SQLite."""
    cols = [func.percentile_cont(p).within_group(value.asc()) for p in fractions]
    rows = con.execute(
        select(key, func.count(), *cols)
        .where(*where, key.in_(list(keys)), value.is_not(None)).group_by(key)
    ).all()
    got = {r[0]: Percentiles(int(r[1]), tuple(float(v) for v in r[2:])) for r in rows}
    return {k: got[k] for k in keys if k in got}


def _window(n: int, p: float) -> tuple[int, int]:
    """Zero-based first rank and number of values (1 or 2) needed for fraction p of n."""
    h = float(n - 1) * p
    lo = int(h)
    return lo, (2 if h > lo and lo + 1 < n else 1)


def _label(p: float) -> str:
    return f"p{round(p * 100):d}"


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion; (nan, nan) when there is no data.
    Chosen over the normal approximation because it stays inside [0, 1] for small teams
    and proportions near 0 or 1."""
    if total <= 0:
        return (math.nan, math.nan)
    p = successes / total
    z2 = z * z
    denom = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
