"""Stage-time percentiles from the stay counts: read few index entries, not every stay.

`stage_stay_count` (migration 0012, kept by triggers on case_event) holds, per team,
state left and eighth of a day, how many stays there are. For a scope (one team, or every
team) the counts per state give n, and the cumulative counts tell which bucket holds the
value of a given rank and how far into it: that value, and its neighbour for the
interpolation, are then read with `ORDER BY days LIMIT 2 OFFSET k` starting at the
bucket's lower bound, on ix_case_event_team_stage_days (one team) or
ix_case_event_stage_days (every team). The walk is at most one bucket long.

Continuous percentiles, as `stats.percentile_select` and numpy compute them: the value at
zero-based rank h = (n - 1) * p, interpolated between ranks floor(h) and floor(h) + 1.

At a million cases (a team's 300,000 stays) this replaced PostgreSQL's percentile_cont
over the team's whole index range (~145 ms) and SQLite's count-and-offset reads, which
walked half of every state's entries.

The counts and the index entries are read by separate statements: on SQLite one
transaction is one snapshot; on PostgreSQL the counts are read again afterwards and the
values too if they moved (see `stay_percentiles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Connection, Select, bindparam, func, select
from sqlalchemy.orm import Session

from core.models import CaseEvent, StageStayCount

_EVENT = CaseEvent.__table__
_COUNT = StageStayCount.__table__
BUCKETS_PER_DAY = 8  # a power of two: bucket bounds are exact floating-point numbers


def bucket_sql(days: str, dialect: str) -> str:
    """A stay's bucket in SQL, floor(days * BUCKETS_PER_DAY) as an integer, for a bulk
    recount (benchmarks/replicate.py); migration 0012's triggers spell the same with
    their own frozen copy, as a migration must. SQLite has no floor() without its math
    extension: CAST truncates toward zero, so one is taken off a negative fraction."""
    scaled = f"{days} * {BUCKETS_PER_DAY}"
    if dialect == "postgresql":
        return f"floor({scaled})::integer"
    return f"(CAST({scaled} AS INTEGER) - ({scaled} < CAST({scaled} AS INTEGER)))"


@dataclass(frozen=True)
class Percentiles:
    n: int
    values: tuple[float, ...]  # one per requested fraction, in the same order


def stay_percentiles(
    session: Session, *, team_id: int | None, states: Sequence[str],
    fractions: Sequence[float] = (0.5, 0.9),
) -> dict[str, Percentiles]:
    """Per state left (only those with stays): the number of stays and their continuous
    percentiles, for one team or (None) every team together. The caller has checked that
    the actor may see this scope."""
    con = session.connection()
    scope = [_COUNT.c.state.in_(list(states)), _COUNT.c.stays > 0]
    if team_id is not None:
        scope.append(_COUNT.c.team_id == team_id)
    stays = func.sum(_COUNT.c.stays)
    counts = (select(_COUNT.c.state, _COUNT.c.bucket, stays).where(*scope)
              .group_by(_COUNT.c.state, _COUNT.c.bucket)
              .order_by(_COUNT.c.state, _COUNT.c.bucket))
    totals = select(_COUNT.c.state, stays).where(*scope).group_by(_COUNT.c.state)

    def read_counts() -> dict[str, list[tuple[int, int]]]:
        found: dict[str, list[tuple[int, int]]] = {}
        for state, bucket, n in con.execute(counts).all():  # all(): one fetch, not per row
            found.setdefault(state, []).append((int(bucket), int(n)))
        return found

    buckets = read_counts()
    # SQLite reads one snapshot for the whole transaction. PostgreSQL (READ COMMITTED)
    # takes one per statement: if a move committed while the values were read (moves only
    # add history rows, so a state's total grows), a rank may have shifted - read again
    # (rare next to these few milliseconds; the last try's numbers stand).
    for _ in range(3):
        out = _from_buckets(con, buckets, team_id, states, fractions)
        if con.dialect.name == "sqlite":
            break
        now = {state: int(n) for state, n in con.execute(totals).all()}
        if now == {state: sum(n for _, n in found) for state, found in buckets.items()}:
            break
        buckets = read_counts()
    return out


def _from_buckets(
    con: Connection, buckets: dict[str, list[tuple[int, int]]], team_id: int | None,
    states: Sequence[str], fractions: Sequence[float],
) -> dict[str, Percentiles]:
    read = _value_read(team_id is not None)
    out = {}
    for state in states:
        found = buckets.get(state)
        if not found:
            continue
        n = sum(stays for _, stays in found)
        values = []
        for p in fractions:
            h = float(n - 1) * p
            lo = int(h)
            bucket, skip = _locate(found, lo)
            params = {"state": state, "low": bucket / BUCKETS_PER_DAY, "skip": skip}
            if team_id is not None:
                params["team"] = team_id
            got = [float(v) for v in con.execute(read, params).scalars()]
            if not got:  # the counts promised a stay the index does not hold
                raise RuntimeError(f"stage_stay_count disagrees with case_event ({state})")
            at_lo = got[0]
            at_hi = got[1] if len(got) > 1 and lo + 1 < n else at_lo
            # the same arithmetic as percentile_select: v[lo] + frac * (v[lo+1] - v[lo])
            values.append(at_lo + (h - lo) * (at_hi - at_lo))
        out[state] = Percentiles(n, tuple(values))
    return out


def _locate(buckets: list[tuple[int, int]], rank: int) -> tuple[int, int]:
    """The bucket holding zero-based `rank` and the rank's position inside it."""
    before = 0
    for bucket, stays in buckets:
        if rank < before + stays:
            return bucket, rank - before
        before += stays
    raise ValueError(f"rank {rank} is past the last stay ({before})")


@lru_cache(maxsize=2)
def _value_read(one_team: bool) -> Select:
    """The stays from a bucket's lower bound up, in order: the rank's value and the next.
    Built once; on one team's index range or the every-team index."""
    days = _EVENT.c.days_in_from_state
    conds = [_EVENT.c.from_state == bindparam("state"), days >= bindparam("low")]
    if one_team:
        conds.insert(0, _EVENT.c.team_id == bindparam("team"))
    return select(days).where(*conds).order_by(days).limit(2).offset(bindparam("skip"))
