"""`python -m benchmarks` (`make bench`): build or reuse the databases, measure every
figure beside the naive way and the floor, print the table, keep the latest results of
each size and backend under benchmarks/results/ (in git: the README's table is built from
them, so a later run of some suites, from any clone, keeps the other suites' rows) and
regenerate the README's bench section. Scratch files and this machine's remembered pace
go to benchmarks/out/ (git-ignored).

    python -m benchmarks --sizes 100000,1000000 --backends sqlite,postgresql --runs 5
    python -m benchmarks --smoke      # a few hundred cases, both backends, seconds
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path

from benchmarks import build, machine, report
from benchmarks.context import Ctx
from benchmarks.report import Row
from core.config import PROJECT_ROOT
from core.db import create_db_engine

OUT_DIR = PROJECT_ROOT / "benchmarks" / "out"
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
README = PROJECT_ROOT / "README.md"
SMOKE_SIZE = 300


def _suites() -> list[tuple[str, object]]:
    from benchmarks.suites import analytics, casepage, export, scan, transitions, triage

    # The scan goes first: the queue and the case page are then read with the flags a
    # running service has (the built database has none).
    return [("scan", scan.run), ("triage", triage.run), ("case page", casepage.run),
            ("analytics", analytics.run), ("export", export.run),
            ("transitions", transitions.run)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000",
                   help="comma-separated case counts (default: 100000,1000000)")
    p.add_argument("--backends", default="sqlite,postgresql",
                   help="comma-separated: sqlite, postgresql (default: both)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per figure (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--naive-runs", type=int, default=None,
                   help="timed runs of the naive ways, with no warm-up when fewer than "
                        "--runs (default: as --runs; they take minutes each at 1,000,000)")
    p.add_argument("--seed", type=int, default=build.DEFAULT_SEED)
    p.add_argument("--only", default="",
                   help="comma-separated suites to run: triage, case page, analytics, scan, "
                        "export, transitions (default: all)")
    p.add_argument("--smoke", action="store_true",
                   help=f"{SMOKE_SIZE} cases on both backends in a temporary folder, one run "
                        "and no warm-up; "
                        "never touches benchmarks/data or the README")
    p.add_argument("--max-wait", type=float, default=300.0,
                   help="seconds to wait, before each suite, for a slow stretch of the "
                        "machine to pass (benchmarks/machine.py: Pace; default 300, 0: never)")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite README.md")
    p.add_argument("--build-only", action="store_true",
                   help="build (or check) the databases, say how long that took, measure nothing")
    p.add_argument("--data-dir", type=Path, default=build.DATA_DIR)
    p.add_argument("--out-dir", type=Path, default=OUT_DIR,
                   help="scratch files and the machine's remembered pace (git-ignored)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                   help="the latest results per size and backend, which the README's "
                        "table is built from (kept in git)")
    args = p.parse_args(argv)
    args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in args.backends:
        if b not in ("sqlite", "postgresql"):
            p.error(f"unknown backend {b!r}")
    if args.smoke:
        # One timed run, no warm-up: the smoke run checks that every figure comes out,
        # not what it is, and runs inside `make test`.
        args.sizes, args.runs, args.warmup, args.no_readme = [SMOKE_SIZE], 1, 0, True
    return args


def log(message: str) -> None:
    print(message, flush=True)


def run_suites(ctx: Ctx, only: set[str], pace: machine.Pace,
               info: dict[str, dict] | None = None) -> list[Row]:
    """Every suite asked for, in order. `info` receives, per suite, the machine's speed
    before and after it and how long the bench waited for a slow stretch to pass
    (`machine.Pace`), and how many warm-up runs its figures had."""
    rows: list[Row] = []
    for name, fn in _suites():
        if only and name not in only:
            continue
        log(f"  - {name} ({ctx.size:,} cases, {ctx.backend})")
        upkeep = ctx.catch_up_maintenance()
        if upkeep:
            log(f"    {upkeep}")
        before, waited = pace.settle()
        log(f"    machine: calibration {before:.0f} ms (fastest seen "
            f"{pace.fastest:.0f} ms)" + (f", waited {waited:.0f} s for it" if waited >= 1
                                          else ""))
        start = time.perf_counter()
        try:
            got = fn(ctx)
        except Exception as exc:  # one broken suite must not hide the others' figures
            traceback.print_exc()
            got = [Row(name, name, error=f"{type(exc).__name__}: {exc}"[:300])]
        for row in got:
            row.size, row.backend = ctx.size, ctx.backend
        rows += got
        after = pace.reading()
        if info is not None:
            warmups = getattr(sys.modules[fn.__module__], "warmup_text", None)
            info[name] = {"pace": f"{before:.0f} ms before, {after:.0f} ms after"
                                  + (f" (waited {waited:.0f} s)" if waited >= 1 else ""),
                          "warmup_text": warmups(ctx.warmup) if warmups else None}
        log(f"    {time.perf_counter() - start:.1f} s; calibration after {after:.0f} ms")
        log(report.render_text(got))  # as it comes: a long run killed half-way still told
    return rows


def main(argv: list[str] | None = None) -> int:
    rows = run(parse_args(argv))
    return 1 if any(r.error for r in rows) else 0


def run(args: argparse.Namespace) -> list[Row]:
    """Everything `make bench` does; returns every row measured."""
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    tmp: Path | None = None
    if args.smoke:
        tmp = Path(tempfile.mkdtemp(prefix="casedesk-bench-smoke-"))
        args.data_dir, args.out_dir = tmp / "data", tmp / "out"
        args.results_dir = tmp / "results"
    cluster = None
    all_rows: list[Row] = []
    # The smoke run checks that every figure comes out, not its value: it never waits
    # (and keeps no speed of its own).
    pace = machine.Pace(max_wait=0 if args.smoke else args.max_wait,
                        remember=None if args.smoke else args.out_dir / "machine-pace.json")
    try:
        for size in args.sizes:
            log(f"== {size:,} cases")
            start = time.perf_counter()
            sqlite_db = build.build_sqlite(size, seed=args.seed, data_dir=args.data_dir,
                                           log=log)
            now = datetime.fromisoformat(sqlite_db.manifest["now"])
            for backend in args.backends:
                if backend == "sqlite":
                    db = sqlite_db
                    if args.build_only:
                        continue
                    work_url = build.sqlite_work_copy(db, log=log)
                else:
                    if cluster is None:
                        cluster = _start_pg(args, tmp)
                        if cluster is None:
                            continue
                    db = build.build_postgresql(size, sqlite_db=sqlite_db, cluster=cluster,
                                                data_dir=args.data_dir, log=log)
                    if args.build_only:
                        continue
                    work_url = build.pg_work_copy(db, cluster=cluster, log=log)
                log(f"  databases ready after {time.perf_counter() - start:.0f} s")
                load_before = os.getloadavg()[0]
                calibration = machine.calibrate()
                per_suite: dict[str, dict] = {}
                engine = create_db_engine(work_url)
                ctx = Ctx(backend=backend, size=size, url=work_url, engine=engine,
                          runs=args.runs, warmup=args.warmup, now=now, log=log,
                          naive_runs=args.naive_runs,
                          out_dir=args.out_dir, smoke=args.smoke, cluster=cluster)
                try:
                    rows = run_suites(ctx, only, pace, per_suite)
                finally:
                    ctx.close()
                    engine.dispose()
                    if backend == "sqlite":
                        _drop_sqlite_copy(work_url)
                meta = {"size": size, "backend": backend,
                        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "reused": db.reused, "build_seconds": db.manifest.get("build_seconds"),
                        "runs": args.runs, "warmup": args.warmup,
                        "naive_runs": args.naive_runs, "now": now.isoformat(),
                        "method": db.manifest.get("method")
                        or sqlite_db.manifest.get("method", ""),
                        # two cores shared with everyone's test suites: say how busy
                        "load": f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}",
                        "calibration": calibration}
                meta["commit"] = _commit()
                measured = sorted({name for name, _ in _suites() if not only or name in only})
                report.save_results(args.results_dir, size=size, backend=backend, rows=rows,
                                    meta=meta, suites=measured, per_suite=per_suite)
                all_rows += rows
                log("")
                log(report.render_text(rows))
                log("")
    finally:
        if cluster is not None:
            cluster.stop() if args.smoke else cluster.release(log)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    if not args.no_readme and not args.build_only:
        results = report.load_results(args.results_dir)
        section = report.readme_section(results, machine.describe())
        if report.update_readme(README, section):
            log(f"README.md bench section regenerated from {len(results)} result set(s).")
        else:
            log("README.md does not exist yet: bench section not written.")
    return all_rows


def _start_pg(args: argparse.Namespace, tmp: Path | None):  # noqa: ANN202
    from benchmarks.pg import start_kept_cluster
    from tests.support.pgcluster import PostgresUnavailable

    try:
        root = (tmp / "pg") if tmp else args.data_dir / "pg"
        cluster = start_kept_cluster(root)
    except PostgresUnavailable as exc:
        log(f"  PostgreSQL unavailable, skipped: {exc}")
        return None
    log(f"  PostgreSQL {cluster.port} on {cluster.root}")
    return cluster


def _commit() -> str | None:
    """The commit measured, with "+changes" when the working tree differs from it."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        # the bench's own outputs (results kept in git, the README's table) do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!benchmarks/results", ":!README.md"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty.strip() else "")


def _drop_sqlite_copy(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
