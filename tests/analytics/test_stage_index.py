"""Stage times read off the index (no period, no split: `stats.index_percentiles`) against
the general path that ranks every stay in SQL, and both against numpy, on random data with
ties, a single value, two values, an empty state and a team with no history - on SQLite
and on PostgreSQL."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from core.analytics import CaseFilter, stage_times
from core.analytics.stage_times import stage_percentiles
from core.db import session_scope
from core.errors import PermissionDenied
from core.models import CaseEvent
from core.vocab import FUNNEL, Role
from tests.factories import actor_for, make_case, make_team, make_user

# A period wide enough to hold every case: same cohort, but the general (ranking) path.
EVERYTHING = date(2000, 1, 1)
STATES = [s.value for s in FUNNEL]
# stays per state and team: 0 leaves the state empty; 1 and 2 are the edge ranks
SIZES = {
    "A": {"assessed": 1, "referral": 17, "records_requested": 40, "records_received": 2,
          "scheduled": 41, "seen": 0},
    "B": {"assessed": 33, "referral": 0, "records_requested": 5, "records_received": 64,
          "scheduled": 3, "seen": 12},
}


@dataclass
class World:
    teams: dict[str, int]
    actors: dict[str, object]
    values: dict[tuple[str, str], list[float]]  # (team, state) -> stored days


def _days(rnd: random.Random, state: str) -> float:
    if state in ("referral", "records_received"):
        return rnd.choice([1.0, 2.0, 2.5, 7.25])  # heavy ties
    return round(rnd.uniform(0.1, 30.0), 4)


@pytest.fixture
def world(engine, now) -> World:
    rnd = random.Random(8)
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    with session_scope(engine) as session:
        teams = {name: make_team(session, now=now, name=f"Team {name}")
                 for name in ("A", "B", "Empty")}
        actors = {name: actor_for(make_user(session, now=now, team=team, role=Role.MANAGER))
                  for name, team in teams.items()}
        actors["admin"] = actor_for(make_user(session, now=now, team=None, role=Role.ADMIN))
        actors["coordinator"] = actor_for(make_user(session, now=now, team=teams["A"]))
        make_case(session, now=now, team=teams["Empty"], days_in_state=3)  # intake row only
        for name, sizes in SIZES.items():
            cases = [make_case(session, now=now, team=teams[name], days_in_state=40)
                     for _ in range(4)]
            version = 1
            for state, n in sizes.items():
                for i in range(n):
                    version += 1
                    days = _days(rnd, state)
                    values[(name, state)].append(days)
                    case = cases[i % len(cases)]
                    session.add(CaseEvent(case_id=case.id, team_id=case.team_id,
                                          from_state=state, to_state="closed",
                                          at=now - timedelta(days=1), days_in_from_state=days,
                                          version=version))
            # neither counts: a stay of unknown length, and time spent closed
            for from_state, days in (("referral", None), ("closed", 5.0)):
                version += 1
                session.add(CaseEvent(case_id=cases[0].id, team_id=cases[0].team_id,
                                      from_state=from_state, to_state="assessed",
                                      at=now, days_in_from_state=days, version=version))
        session.flush()
        return World({k: t.id for k, t in teams.items()}, actors, dict(values))


def _expected(world: World, teams: list[str], state: str | None = None) -> pd.DataFrame:
    rows = []
    for s in STATES:
        vals = [v for t in teams for v in world.values.get((t, s), [])]
        if vals and state in (None, s):
            rows.append((s, len(vals), float(np.percentile(vals, 50)),
                         float(np.percentile(vals, 90))))
    return pd.DataFrame(rows, columns=["state", "n", "median_days", "p90_days"])


def _both_paths(engine, actor, **filt) -> tuple[pd.DataFrame, pd.DataFrame]:
    with session_scope(engine, write=False) as session:
        fast = stage_times(session, actor, CaseFilter(**filt))
        ranked = stage_times(session, actor, CaseFilter(start=EVERYTHING, **filt))
    return fast, ranked


def _check(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got["state"].tolist() == want["state"].tolist()
    assert got["n"].tolist() == want["n"].tolist()
    for col in ("median_days", "p90_days"):
        assert got[col].tolist() == pytest.approx(want[col].tolist(), abs=1e-9)


@pytest.mark.parametrize("who, filt, teams", [
    ("A", {}, ["A"]),
    ("B", {}, ["B"]),
    ("B", {"team_id": "B"}, ["B"]),
    ("admin", {}, ["A", "B"]),
    ("admin", {"team_id": "A"}, ["A"]),
])
def test_index_path_equals_ranking_path_and_numpy(engine, world, who, filt, teams):
    filt = {k: world.teams[v] for k, v in filt.items()}
    fast, ranked = _both_paths(engine, world.actors[who], **filt)
    want = _expected(world, teams)
    _check(fast, want)
    _check(ranked, want)
    assert fast.drop(columns=["median_days", "p90_days"]).equals(
        ranked.drop(columns=["median_days", "p90_days"]))


@pytest.mark.parametrize("state", ["assessed", "referral", "records_received", "seen", "closed"])
def test_index_path_for_one_stage(engine, world, state):
    fast, ranked = _both_paths(engine, world.actors["A"], state=state)
    want = _expected(world, ["A"], state)
    _check(fast, want)
    _check(ranked, want)


def test_a_team_with_no_history_gets_an_empty_table(engine, world):
    fast, ranked = _both_paths(engine, world.actors["Empty"])
    assert fast.empty and ranked.empty
    assert list(fast.columns) == list(ranked.columns)


def test_the_index_path_keeps_the_reach_inside_the_statement(engine, world):
    with session_scope(engine, write=False) as session:
        with pytest.raises(PermissionDenied):
            stage_times(session, world.actors["A"], CaseFilter(team_id=world.teams["B"]))
        with pytest.raises(PermissionDenied):
            stage_times(session, world.actors["coordinator"], CaseFilter())


def test_stage_percentiles_for_the_scan_cover_every_team_or_one(engine, world):
    fractions = (0.0, 0.25, 0.5, 0.9, 1.0)
    with session_scope(engine, write=False) as session:
        everyone = stage_percentiles(session, fractions=fractions)
        team_a = stage_percentiles(session, team_id=world.teams["A"], fractions=(0.5,))
        nobody = stage_percentiles(session, team_id=world.teams["Empty"])
    assert nobody == {}
    for got, teams, fr in ((everyone, ["A", "B"], fractions), (team_a, ["A"], (0.5,))):
        want = {s: [v for t in teams for v in world.values.get((t, s), [])] for s in STATES}
        assert set(got) == {s for s, v in want.items() if v}
        for s, p in got.items():
            assert p.n == len(want[s])
            assert list(p.values) == pytest.approx(
                [float(np.percentile(want[s], 100 * f)) for f in fr], abs=1e-9)



@pytest.mark.parametrize("who, filt, teams", [
    ("admin", {}, ["A", "B"]),
    ("admin", {"team_id": "B"}, ["B"]),
    ("A", {}, ["A"]),
])
def test_split_by_team_reads_each_team_off_the_index_and_equals_ranking(
        engine, world, who, filt, teams):
    filt = {k: world.teams[v] for k, v in filt.items()}
    with session_scope(engine, write=False) as session:
        fast = stage_times(session, world.actors[who], CaseFilter(**filt), by="team")
        ranked = stage_times(session, world.actors[who], CaseFilter(start=EVERYTHING, **filt),
                             by="team")
    assert sorted(set(fast["group"])) == [f"Team {t}" for t in teams]  # never "Team Empty"
    for t in teams:
        _check(fast[fast["group"] == f"Team {t}"].reset_index(drop=True), _expected(world, [t]))
    assert fast.drop(columns=["median_days", "p90_days"]).equals(
        ranked.drop(columns=["median_days", "p90_days"]))
    assert fast["median_days"].tolist() == pytest.approx(ranked["median_days"].tolist())
