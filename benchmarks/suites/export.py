"""Exporting every event (issue 6's `casedesk export events --out FILE`), timed and
measured as whole processes: wall time and peak resident memory (ru_maxrss from wait4),
interpreter and libraries included.

naive: a Python process doing `pandas.read_sql` + `to_csv` of the same columns.
floor: the `sqlite3` command-line tool's CSV output, or `psql`'s `\\copy ... TO STDOUT`
(PostgreSQL `COPY`), of the same columns in the same order."""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path

from sqlalchemy import inspect

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


def _columns(ctx: Ctx, header: list[str]) -> list[str]:
    """The export's columns where they are case_event's own; the whole row otherwise."""
    have = [c["name"] for c in inspect(ctx.engine).get_columns("case_event")]
    picked = [c for c in header if c in have]
    return picked if len(picked) >= max(3, len(header) // 2) else have


def _select(cols: list[str]) -> str:
    return f"SELECT {', '.join(cols)} FROM case_event ORDER BY id"  # noqa: S608


def _floor_cmd(ctx: Ctx, cols: list[str]) -> list[str] | None:
    if ctx.is_sqlite:
        exe = shutil.which("sqlite3")
        if not exe:
            return None
        return [exe, "-readonly", "-csv", "-header", ctx.sqlite_path, _select(cols)]
    psql = ctx.cluster.bindir / "psql"
    return [str(psql), "-X", "-q", "-h", "127.0.0.1", "-p", str(ctx.cluster.port), "-U",
            ctx.cluster.superuser, "-d", ctx.url.rsplit("/", 1)[1], "-c",
            f"\\copy ({_select(cols)}) TO STDOUT WITH (FORMAT csv, HEADER)"]


_NAIVE = (
    "import sys, pandas\n"
    "from core.db import create_db_engine\n"
    "engine = create_db_engine(sys.argv[1])\n"
    "with engine.connect() as con:\n"
    "    frame = pandas.read_sql(sys.argv[2], con)\n"
    "frame.to_csv(sys.argv[3], index=False)\n"
)


def _naive_cmd(ctx: Ctx, cols: list[str], out: Path) -> list[str]:
    return [sys.executable, "-c", _NAIVE, ctx.url, _select(cols), str(out)]


def _series(ctx: Ctx, make_cmd, tmp: Path, *, to_stdout: bool,  # noqa: ANN001
            header: list | None = None) -> tuple[Stat, Stat, int]:
    """Warm-up, then the runs: (seconds as ms, peak MB, rows written). The first file's
    CSV header goes into `header` when one is given."""
    times, peaks, cpu, rows = [], [], [], 0
    total = ctx.warmup + ctx.runs
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
        if k >= ctx.warmup:
            times.append(res.seconds * 1000.0)
            peaks.append(res.peak_mb)
            cpu.append(res.cpu_seconds * 1000.0)
        elif res.seconds > SLOW_SECONDS:
            total = min(total, ctx.warmup + SLOW_RUNS)
        k += 1
    return Stat(times, cpu=cpu), Stat(peaks, "MB"), rows


def run(ctx: Ctx) -> list[Row]:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)  # git-ignored, on the same disk
    tmp = Path(tempfile.mkdtemp(prefix="export-", dir=ctx.out_dir))
    try:
        header: list[str] = []
        o_time, o_mem, o_rows = _series(ctx, lambda out: _ours_cmd(ctx, out), tmp,
                                        to_stdout=False, header=header)
        # the floor and the naive way write the same columns, where they are the table's
        cols = _columns(ctx, header)
        n_time, n_mem, _ = _series(ctx, lambda out: _naive_cmd(ctx, cols, out), tmp,
                                   to_stdout=False)
        note = f"{o_rows:,} events"
        if _floor_cmd(ctx, cols) is None:
            f_time = f_mem = None
            note += "; " + SQLITE3_MISSING
        else:
            f_time, f_mem, _ = _series(ctx, lambda out: _floor_cmd(ctx, cols), tmp,
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
