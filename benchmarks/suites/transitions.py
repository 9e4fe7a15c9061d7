"""Sustained transitions per second (issue 3's `move_case`): one after another, each in
its own transaction with its compare-and-set update, history row and audit row, by the
demo manager on cases of their team. The moves cycle through close, reopen, record
missing and no-show (moves whose guards need only a reason, and for record missing the
record found missing - the case's first received one, requested again by the move - so
every one succeeds).

floor: the same writes as bare SQL on a bare connection - read the case, compare-and-set
UPDATE, INSERT the history row, read the last audit hash, INSERT the audit row, commit.
There is no naive way here: the issue names none for writes."""

from __future__ import annotations

import hashlib
import json
import statistics
from datetime import timedelta

from sqlalchemy import func, select

from benchmarks.common import actor
from benchmarks.context import Ctx
from benchmarks.report import Row, Target
from benchmarks.timing import Stat, Timer
from core.db import session_scope
from core.models import Case, RecordItem
from core.vocab import Role

BATCH = 200
SMOKE_BATCH = 10


def _candidates(ctx: Ctx, team_id: int, state: str, n: int, skip: int = 0) -> list[int]:
    with session_scope(ctx.engine, write=False) as session:
        return list(session.execute(
            select(Case.id).where(Case.team_id == team_id, Case.state == state)
            .order_by(Case.id).offset(skip).limit(n)).scalars())


def _plan(ctx: Ctx, team_id: int, n: int) -> list[tuple[int, str, dict]]:
    """n (case, move, params) on distinct cases, the four moves in turn."""
    per = n // 4 + 1
    pools = {
        "close": (_candidates(ctx, team_id, "referral", per),
                  {"close_reason": "other", "close_note": "benchmark"}),
        "reopen": (_candidates(ctx, team_id, "closed", per),
                   {"reason": "benchmark: reopened"}),
        "record_missing": (_candidates(ctx, team_id, "records_received", per),
                           {"reason": "benchmark: slides missing"}),
        "no_show": (_candidates(ctx, team_id, "scheduled", per),
                    {"reason": "benchmark: no-show"}),
    }
    # "record missing" names the record found missing: the case's first received one
    first_received = _first_received(ctx, pools["record_missing"][0])
    pools["record_missing"] = ([c for c in pools["record_missing"][0] if c in first_received],
                               pools["record_missing"][1])
    plan = []
    for i in range(per):
        for move, (ids, params) in pools.items():
            if i < len(ids):
                extra = ({"missing_items": [first_received[ids[i]]]}
                         if move == "record_missing" else {})
                plan.append((ids[i], move, {**params, **extra}))
    return plan[:n]


def _first_received(ctx: Ctx, case_ids: list[int]) -> dict[int, int]:
    if not case_ids:
        return {}
    with session_scope(ctx.engine, write=False) as session:
        return dict(session.execute(
            select(RecordItem.case_id, func.min(RecordItem.id))
            .where(RecordItem.case_id.in_(case_ids), RecordItem.status == "received")
            .group_by(RecordItem.case_id)).all())


def _floor_plan(ctx: Ctx, team_id: int, n: int) -> list[int]:
    # open cases no move above touches
    return _candidates(ctx, team_id, "records_requested", n)


def _floor_move(ctx: Ctx, con, case_id: int, user_id: int, now) -> None:  # noqa: ANN001
    """Close one case with bare SQL: what `move_case` must do at the least."""
    sql = ctx.sql
    con.execute("BEGIN IMMEDIATE" if ctx.is_sqlite else "BEGIN")
    try:
        state, version, entered, team_id = con.execute(sql(
            "SELECT state, version, state_entered_at, team_id FROM cases WHERE id = ?"),
            (case_id,)).fetchone()
        ts = ctx.ts(now)
        cur = con.execute(sql(
            "UPDATE cases SET state = 'closed', close_reason = 'other', close_note = ?, "
            "closed_from_state = ?, version = version + 1, state_entered_at = ?, "
            "paused_seconds = 0, due_soon_at = NULL, due_at = NULL, escalate_at = NULL, "
            "updated_at = ?, updated_by_id = ? WHERE id = ? AND version = ?"),
            ("benchmark", state, ts, ts, user_id, case_id, version))
        assert cur.rowcount == 1
        con.execute(sql(
            "INSERT INTO case_event (case_id, from_state, to_state, at, actor_id, reason, "
            "days_in_from_state, version, team_id) VALUES (?, ?, 'closed', ?, ?, ?, ?, ?, ?)"),
            (case_id, state, ts, user_id, "other: benchmark", 1.0, version + 1, team_id))
        if not ctx.is_sqlite:
            con.execute("SELECT pg_advisory_xact_lock(4242001)")
        row = con.execute("SELECT row_hash FROM audit_entry ORDER BY id DESC LIMIT 1") \
            .fetchone()
        prev = row[0] if row else "0" * 64
        detail = json.dumps({"from": state, "move": "close", "to": "closed",
                             "version": version + 1}, sort_keys=True)
        digest = hashlib.sha256(json.dumps([prev, str(now), user_id, "manager", None,
                                            "case.move", case_id, "ok", detail])
                                .encode()).hexdigest()
        con.execute(sql(
            "INSERT INTO audit_entry (at, user_id, role, session_id, action, case_id, "
            "outcome, detail, prev_hash, row_hash) VALUES (?, ?, 'manager', NULL, "
            "'case.move', ?, 'ok', ?, ?, ?)"), (ts, user_id, case_id, detail, prev, digest))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def run(ctx: Ctx) -> list[Row]:
    from core.workflows.engine import move_case

    manager = actor(ctx, Role.MANAGER)
    batch = SMOKE_BATCH if ctx.smoke else BATCH
    batches = ctx.warmup + ctx.runs
    plan = _plan(ctx, manager.team_id, batch * batches)
    batch = min(batch, len(plan) // batches)
    if batch < 5:
        raise RuntimeError(f"only {len(plan)} cases to move in the manager's team")
    # Moves happen a little after the demo's `now`, each a second after the last.
    clock = [ctx.now + timedelta(hours=9)]

    def tick():  # noqa: ANN202
        clock[0] += timedelta(seconds=1)
        return clock[0]

    ours, cpu_rates = [], []
    for b in range(batches):
        chunk = plan[b * batch:(b + 1) * batch]
        with Timer() as t:
            for case_id, move, params in chunk:
                with session_scope(ctx.engine) as session:
                    move_case(session, case_id=case_id, move=move, actor=manager,
                              now=tick(), **params)
        if b >= ctx.warmup:
            ours.append(len(chunk) / (t.ms / 1000.0))
            cpu_rates.append(len(chunk) / max(t.cpu_ms / 1000.0, 1e-9))

    floor_ids = _floor_plan(ctx, manager.team_id, batch * batches)
    floor = []
    with ctx.bare_connection() as con:
        for b in range(batches):
            chunk = floor_ids[b * batch:(b + 1) * batch]
            if not chunk:
                break
            with Timer() as t:
                for case_id in chunk:
                    _floor_move(ctx, con, case_id, manager.user_id, tick())
            if b >= ctx.warmup:
                floor.append(len(chunk) / (t.ms / 1000.0))
    targets = [Target("value", 300, "≥ 300/s")] if ctx.is_sqlite else []
    return [Row("transitions", "transitions per second (own transaction each)",
                Stat(ours, "/s"), None, Stat(floor, "/s") if floor else None,
                targets=targets,
                note=f"{batch} moves per run; {statistics.median(cpu_rates):,.0f} per "
                     "second of this process's CPU")]
