"""Statistics the read models share: percentiles computed in SQL, and Wilson intervals.

Percentiles are the continuous kind (linear interpolation between closest ranks), the
definition of PostgreSQL's `percentile_cont` and of numpy's default, so both databases
give the same number. SQLite has no `percentile_cont`: there the values of each group are
ranked with window functions and the two neighbouring ranks are picked out and
interpolated in the same statement - the database still does all the work.

Stage times without a period or a split do not rank every stay: they use the stay counts
(`core.analytics.stay_percentiles`), with the same definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sqlalchemy import (
    Float,
    Integer,
    Select,
    case,
    cast,
    func,
    select,
)
from sqlalchemy.engine import Dialect

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
