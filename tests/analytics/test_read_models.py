"""The analytics numbers, checked against values computed here in plain Python from the
known dataset (tests/analytics/dataset.py), on SQLite and on PostgreSQL."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import date, timedelta

import numpy as np
import pytest

from core import analytics
from core.analytics import CaseFilter
from core.analytics.stats import wilson_interval
from core.db import session_scope
from core.errors import PermissionDenied
from core.vocab import FUNNEL
from tests.analytics.dataset import seed

RANK = {s.value: i for i, s in enumerate(FUNNEL)}


@pytest.fixture
def data(engine, now):
    with session_scope(engine) as session:
        return seed(session, now)


def _in_period(spec, start: date | None, end: date | None) -> bool:
    day = spec.assessed_at.date()
    return (start is None or day >= start) and (end is None or day <= end)


def expected_funnel(specs, team=None, start=None, end=None) -> list[int]:
    furthest = [
        max([RANK[m.to_state] for m in s.moves if m.to_state in RANK] + [0])
        for s in specs
        if (team is None or s.team == team) and _in_period(s, start, end)
    ]
    return [sum(1 for f in furthest if f >= k) for k in range(len(FUNNEL))]


def test_funnel_counts_each_stage_reached_by_the_teams_cohort(engine, data, now):
    start, end = (now - timedelta(days=60)).date(), (now - timedelta(days=10)).date()
    want = expected_funnel(data.specs, team="North", start=start, end=end)
    assert want[0] > 10 and want[-1] > 0  # the dataset exercises every stage
    with session_scope(engine, write=False) as session:
        got = analytics.funnel(session, data.actor("north_manager"),
                               CaseFilter(start=start, end=end))
    assert got["reached"].tolist() == want
    assert got["conversion"].iloc[0] is None or math.isnan(got["conversion"].iloc[0])
    for k in range(1, len(FUNNEL)):
        assert got["conversion"].iloc[k] == pytest.approx(want[k] / want[k - 1])


def test_funnel_for_an_admin_covers_every_team_unless_one_is_chosen(engine, data):
    admin = data.actor("admin")
    with session_scope(engine, write=False) as session:
        everyone = analytics.funnel(session, admin, CaseFilter())
        south = analytics.funnel(session, admin, CaseFilter(team_id=data.teams["South"]))
    assert everyone["reached"].tolist() == expected_funnel(data.specs)
    assert south["reached"].tolist() == expected_funnel(data.specs, team="South")


def test_funnel_without_a_period_counts_the_whole_team(engine, data):
    # no period: one index range per stage (the path the funnel page opens with)
    with session_scope(engine, write=False) as session:
        got = analytics.funnel(session, data.actor("north_manager"), CaseFilter())
    assert got["reached"].tolist() == expected_funnel(data.specs, team="North")


def _stays(data, team=None):
    for s in data.specs:
        if team is not None and s.team != team:
            continue
        for m in s.moves:
            if m.from_state in RANK and m.days is not None:
                yield s, m


def _group_of(data, spec, move, by):
    users = data.users
    if by is None:
        return ["all"]
    if by == "month":
        return [move.at.strftime("%Y-%m")]
    if by == "team":
        return [spec.team]
    if by == "coordinator":
        return [users[spec.coordinator].full_name if spec.coordinator else "Unassigned"]
    if by == "insurer":
        return [spec.insurer or "Unknown"]
    return sorted(set(spec.facilities))


@pytest.mark.parametrize("by", [None, "month", "team", "coordinator", "insurer", "facility"])
def test_stage_times_median_and_p90_match_the_stored_durations(engine, data, by):
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for spec, move in _stays(data):
        for g in _group_of(data, spec, move, by):
            groups[(move.from_state, g)].append(move.days)
    with session_scope(engine, write=False) as session:
        got = analytics.stage_times(session, data.actor("admin"), CaseFilter(), by=by)
    assert len(got) == len(groups)
    for row in got.itertuples():
        values = groups[(row.state, row.group)]
        assert row.n == len(values)
        assert row.median_days == pytest.approx(float(np.percentile(values, 50)), abs=1e-6)
        assert row.p90_days == pytest.approx(float(np.percentile(values, 90)), abs=1e-6)
    limits = {"assessed": 2, "referral": 7, "records_requested": 10, "records_received": 3,
              "scheduled": 14, "seen": 14}
    assert all(row.sla_days == limits[row.state] for row in got.itertuples())


def test_stage_times_for_one_stage_and_one_team(engine, data):
    values = [m.days for s, m in _stays(data, team="North") if m.from_state == "referral"]
    with session_scope(engine, write=False) as session:
        got = analytics.stage_times(session, data.actor("north_manager"),
                                    CaseFilter(state="referral"))
    assert got["state"].tolist() == ["referral"]
    assert got["n"].iloc[0] == len(values)
    assert got["median_days"].iloc[0] == pytest.approx(float(np.median(values)), abs=1e-6)


def test_pipeline_counts_open_cases_and_stalled_ones(engine, data, now):
    want_open, want_stalled = Counter(), Counter()
    limits = {"assessed": 2, "referral": 7, "records_requested": 10, "records_received": 3,
              "scheduled": 14, "seen": 14}
    for s in data.specs:
        if s.team != "North" or s.state == "closed":
            continue
        want_open[s.state] += 1
        overdue = s.entered + timedelta(days=limits[s.state]) <= now
        if s.state == "seen" and s.outcome_diagnosis:
            overdue = False  # the clock stops once the outcome is in
        if overdue or s.stalled_flag:
            want_stalled[s.state] += 1
    with session_scope(engine, write=False) as session:
        got = analytics.pipeline(session, data.actor("north_manager"), CaseFilter(), now=now)
    assert dict(zip(got["state"], got["open"], strict=True)) == {
        s.value: want_open[s.value] for s in FUNNEL}
    assert dict(zip(got["state"], got["stalled"], strict=True)) == {
        s.value: want_stalled[s.value] for s in FUNNEL}


def test_closed_by_reason_counts_the_cohort(engine, data):
    want = Counter(s.close_reason for s in data.specs if s.close_reason)
    with session_scope(engine, write=False) as session:
        got = analytics.closed_by_reason(session, data.actor("admin"), CaseFilter())
    assert dict(zip(got["reason"], got["cases"], strict=True)) == dict(want)


def test_workload_lists_every_coordinator_and_the_unassigned(engine, data, now):
    want = Counter(s.coordinator for s in data.specs
                   if s.team == "North" and s.state != "closed")
    risk = Counter(s.coordinator for s in data.specs
                   if s.team == "North" and s.state != "closed" and s.risk_flag)
    with session_scope(engine, write=False) as session:
        got = analytics.workload(session, data.actor("north_manager"), CaseFilter(), now=now)
    by_user = {r.username if isinstance(r.username, str) else None: r
               for r in got.itertuples()}
    assert set(by_user) == {"n1", "n2", "n3", None}
    assert by_user["n3"].open == 0
    for name in ("n1", "n2"):
        assert by_user[name].open == want[name]
        assert by_user[name].at_risk == risk[name]
    assert by_user[None].open == want[None]
    assert got["coordinator"].iloc[-1] == "Unassigned"


def test_outcomes_mix_with_wilson_intervals(engine, data):
    seen = [s for s in data.specs if s.outcome_diagnosis]
    counts = Counter(s.outcome_diagnosis for s in seen)
    with session_scope(engine, write=False) as session:
        got = analytics.outcomes(session, data.actor("admin"), CaseFilter())
    diag = got[got["kind"] == "diagnosis"].set_index("category")
    n = len(seen)
    assert n > 0
    for cat in ("confirmed", "refined", "changed", "not_assessable"):
        assert diag.loc[cat, "cases"] == counts[cat]
        assert diag.loc[cat, "share"] == pytest.approx(counts[cat] / n)
    assert diag.loc["refined", "benchmark"] == 0.66
    plan = got[got["kind"] == "plan"]
    assert plan["cases"].sum() == n


def test_wilson_interval_matches_the_textbook_example():
    # Newcombe (1998), Stat Med 17:857, table I: 81/263 -> 0.2553 to 0.3662.
    lo, hi = wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    # 0 of 10 stays inside [0, 1] (the normal approximation would not).
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)


def test_time_to_opinion_shares_by_month_seen(engine, data):
    per_month: dict[str, list[int]] = defaultdict(list)
    for s in data.specs:
        seen = [m.at for m in s.moves if m.to_state == "seen"]
        if seen and s.biopsy_date:
            first = min(seen)
            per_month[first.strftime("%Y-%m")].append((first.date() - s.biopsy_date).days)
    with session_scope(engine, write=False) as session:
        got = analytics.time_to_opinion(session, data.actor("admin"), CaseFilter())
    assert got["month"].tolist() == sorted(per_month)
    for row in got.itertuples():
        days = per_month[row.month]
        assert row.seen == len(days)
        assert row.within_45 == sum(1 for d in days if d <= 45)
        assert row.share_60 == pytest.approx(sum(1 for d in days if d <= 60) / len(days))


def test_crossing_soon_lists_open_cases_reaching_45_days_this_week(engine, data, now):
    with session_scope(engine) as session:
        from core.models import Team
        from tests.factories import make_case
        north = session.get(Team, data.teams["North"])
        inside = make_case(session, now=now, team=north, state="referral", biopsy_days_ago=40)
        edge = make_case(session, now=now, team=north, state="referral", biopsy_days_ago=38)
        make_case(session, now=now, team=north, state="referral", biopsy_days_ago=45)  # crossed
        make_case(session, now=now, team=north, state="referral", biopsy_days_ago=37)  # later
        make_case(session, now=now, team=north, state="seen", biopsy_days_ago=40)  # seen
        ids = {inside.id, edge.id}
    with session_scope(engine, write=False) as session:
        got = analytics.crossing_soon(session, data.actor("north_manager"), CaseFilter(),
                                      now=now)
    dataset_ids = {s.case_id for s in data.specs}
    assert set(got["case_id"]) - dataset_ids == ids
    row = got.set_index("case_id").loc[edge.id]
    assert row["days_since_biopsy"] == 38
    assert row["crosses_on"] == now.date() + timedelta(days=7)


def test_a_manager_may_not_pick_another_team_and_a_coordinator_sees_nothing(engine, data):
    with session_scope(engine, write=False) as session:
        with pytest.raises(PermissionDenied):
            analytics.funnel(session, data.actor("north_manager"),
                             CaseFilter(team_id=data.teams["South"]))
        with pytest.raises(PermissionDenied):
            analytics.stage_times(session, data.actor("n1"), CaseFilter())
