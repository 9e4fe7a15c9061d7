"""Exporting every event (issue 6's `casedesk export events --out FILE`), timed and
measured as whole processes: wall time, CPU and peak resident memory (`/usr/bin/time`),
interpreter and libraries included.

Every way writes the same nine de-identified columns in the same order (case, event
number, team, states, year, days since assessment, days in the state left, time zone):
naive: a Python process doing `pandas.read_sql` + `to_csv` of the SQL below.
floor: that SQL through the `sqlite3` command-line tool's CSV output, or `psql`'s
`\\copy ... TO STDOUT` (PostgreSQL `COPY`)."""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.context import Ctx
from benchmarks.proc import ProcResult, run_measured
from benchmarks.report import Row, Target
from benchmarks.timing import SLOW_RUNS, SLOW_SECONDS, Stat
from core.config import PROJECT_ROOT

SQLITE3_MISSING = ("the sqlite3 command-line tool is not installed (Debian: apt-get install "
                   "-y sqlite3): no floor for the SQLite export")


def _casedesk() -> list[str]:
    exe = Path(sys.executable).with_name("casedesk")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "core.cli"]


def _env(ctx: Ctx) -> dict[str, str]:
    return {**os.environ, "CASEDESK_DATABASE_URL": ctx.url}


def _ours_cmd(ctx: Ctx, out: Path) -> list[str]:
    return _casedesk() + ["export", "events", "--out", str(out)]


# The export's nine de-identified columns, computed in SQL by the database itself.
_FLOOR_SQL = {
    "sqlite": (
        "SELECT e.case_id, row_number() OVER (PARTITION BY e.case_id ORDER BY e.at, e.id) "
        "AS event_no, t.name AS team, e.from_state, e.to_state, "
        "CAST(strftime('%Y', e.at) AS INTEGER) AS year, "
        "round(julianday(e.at) - julianday(c.assessed_at), 3) AS days_since_assessment, "
        "round(e.days_in_from_state, 3) AS days_in_from_state, 'UTC' AS timezone "
        "FROM case_event e JOIN cases c ON c.id = e.case_id JOIN team t ON t.id = c.team_id "
        "ORDER BY e.case_id, e.at, e.id"
    ),
    "postgresql": (
        "SELECT e.case_id, row_number() OVER (PARTITION BY e.case_id ORDER BY e.at, e.id) "
        "AS event_no, t.name AS team, e.from_state, e.to_state, "
        "extract(year FROM e.at AT TIME ZONE 'UTC')::int AS year, "
        "round((extract(epoch FROM e.at - c.assessed_at) / 86400)::numeric, 3) "
        "AS days_since_assessment, round(e.days_in_from_state::numeric, 3) "
        "AS days_in_from_state, 'UTC' AS timezone "
        "FROM case_event e JOIN cases c ON c.id = e.case_id JOIN team t ON t.id = c.team_id "
        "ORDER BY e.case_id, e.at, e.id"
    ),
}


def _select(ctx: Ctx) -> str:
    return _FLOOR_SQL[ctx.backend]


def _floor_cmd(ctx: Ctx) -> list[str] | None:
    if ctx.is_sqlite:
        exe = shutil.which("sqlite3")
        if not exe:
            return None
        return [exe, "-readonly", "-csv", "-header", ctx.sqlite_path, _select(ctx)]
    psql = ctx.cluster.bindir / "psql"
    return [str(psql), "-X", "-q", "-h", "127.0.0.1", "-p", str(ctx.cluster.port), "-U",
            ctx.cluster.superuser, "-d", ctx.url.rsplit("/", 1)[1], "-c",
            f"\\copy ({_select(ctx)}) TO STDOUT WITH (FORMAT csv, HEADER)"]


_NAIVE = (
    "import sys, pandas\n"
    "from core.db import create_db_engine\n"
    "engine = create_db_engine(sys.argv[1])\n"
    "with engine.connect() as con:\n"
    "    frame = pandas.read_sql(sys.argv[2], con)\n"
    "frame.to_csv(sys.argv[3], index=False)\n"
)


def _naive_cmd(ctx: Ctx, out: Path) -> list[str]:
    return [sys.executable, "-c", _NAIVE, ctx.url, _select(ctx), str(out)]


def _series(ctx: Ctx, make_cmd, tmp: Path, *, to_stdout: bool,  # noqa: ANN001
            header: list | None = None, runs: int | None = None,
            warmup: int | None = None) -> tuple[Stat, Stat, int]:
    """Warm-up, then the runs: (seconds as ms, peak MB, rows written). The first file's
    CSV header goes into `header` when one is given."""
    times, peaks, cpu, rows = [], [], [], 0
    warmup = ctx.warmup if warmup is None else warmup
    total = warmup + (ctx.runs if runs is None else runs)
    k = 0
    while k < total:
        out = tmp / f"export-{k}.csv"
        cmd = make_cmd(out)
        res: ProcResult = run_measured(cmd, stdout_path=out if to_stdout else None,
                                       env=_env(ctx), cwd=PROJECT_ROOT)
        if res.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exited {res.returncode}: {res.stderr}")
        if header is not None and not header:
            with open(out, newline="", encoding="utf-8") as fh:
                header.extend(next(csv.reader(fh)))
        with open(out, "rb") as fh:
            rows = sum(1 for _ in fh) - 1
        out.unlink()
        if k >= warmup:
            times.append(res.seconds * 1000.0)
            peaks.append(res.peak_mb)
            cpu.append(res.cpu_seconds * 1000.0)
        elif res.seconds > SLOW_SECONDS:
            total = min(total, warmup + SLOW_RUNS)
        k += 1
    return Stat(times, cpu=cpu), Stat(peaks, "MB"), rows


def run(ctx: Ctx) -> list[Row]:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)  # git-ignored, on the same disk
    tmp = Path(tempfile.mkdtemp(prefix="export-", dir=ctx.out_dir))
    try:
        header: list[str] = []
        o_time, o_mem, o_rows = _series(ctx, lambda out: _ours_cmd(ctx, out), tmp,
                                        to_stdout=False, header=header)
        n_time, n_mem, n_rows = _series(ctx, lambda out: _naive_cmd(ctx, out), tmp,
                                        to_stdout=False, **ctx.naive_kw())
        if n_rows != o_rows:
            raise RuntimeError(f"the naive export wrote {n_rows} rows, ours {o_rows}")
        note = f"{o_rows:,} events"
        if _floor_cmd(ctx) is None:
            f_time = f_mem = None
            note += "; " + SQLITE3_MISSING
        else:
            f_time, f_mem, _ = _series(ctx, lambda out: _floor_cmd(ctx), tmp,
                                       to_stdout=True)
        floor_name = "sqlite3 CSV dump" if ctx.is_sqlite else "COPY TO STDOUT"
        limit = 1.5 if ctx.is_sqlite else 2.0
        return [
            Row("export", f"export every event: time (floor: {floor_name})", o_time, n_time,
                f_time, targets=[Target("vs_floor", limit, f"≤ {limit}× floor")], note=note),
            Row("export", "export every event: peak memory of the process", o_mem, n_mem,
                f_mem, targets=[Target("value", 150, "≤ 150 MB")]),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
