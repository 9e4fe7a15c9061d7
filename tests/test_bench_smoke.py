"""The benchmark harness cannot rot: `python -m benchmarks --smoke` (a few hundred cases,
SQLite and, when its binaries are there, PostgreSQL) must give every figure of issue 8,
each with sane numbers, beside its naive way and its floor."""

from __future__ import annotations

import math

import pytest

from benchmarks.__main__ import README, RESULTS_DIR, parse_args, run
from tests.support.pgcluster import find_bindir

# Every figure `make bench` reports; a suite that breaks or drops one fails here.
EXPECTED = {
    "triage: first page",
    "triage: first page, a new connection",
    "triage: a deep page",
    "triage page rerun (AppTest)",
    "case page queries",
    "analytics: funnel",
    "analytics: stage-time median + p90",
    "analytics together (naive: replay events in pandas)",
    "scan: first scan of the built database",
    "scan: full, after the clock moves a day",
    "scan: nothing changed",
    "export every event: peak memory of the process",
    "transitions per second (own transaction each)",
}
EXPORT_TIME = "export every event: time"


def _sane(stat, *, what: str) -> None:
    assert stat.n >= 1, what
    for value in stat.values:
        assert math.isfinite(value) and value > 0, f"{what}: {value}"
        if stat.unit == "ms":
            assert value < 120_000, f"{what}: {value} ms"
        elif stat.unit == "MB":
            assert value < 4_000, f"{what}: {value} MB"


@pytest.mark.slow
def test_smoke_run_measures_every_figure_on_each_backend(capsys):
    def kept() -> tuple:
        # What a real run leaves for others (in git): the smoke run must change none of it.
        files = sorted(RESULTS_DIR.glob("*")) if RESULTS_DIR.exists() else []
        return README.read_bytes(), [(f.name, f.read_bytes()) for f in files]

    before = kept()
    rows = run(parse_args(["--smoke"]))
    assert kept() == before, "the smoke run rewrote the README or the kept results"
    backends = {"sqlite"} | ({"postgresql"} if find_bindir() else set())
    assert {r.backend for r in rows} == backends
    for backend in backends:
        mine = [r for r in rows if r.backend == backend]
        errors = [f"{r.name}: {r.error}" for r in mine if r.error]
        assert not errors, errors
        names = {r.name.split(" (floor:")[0] for r in mine}
        assert EXPECTED | {EXPORT_TIME} <= names, sorted((EXPECTED | {EXPORT_TIME}) - names)
        for r in mine:
            assert r.ours is not None, r.name
            _sane(r.ours, what=f"{backend} {r.name} ours")
            for other, label in ((r.naive, "naive"), (r.floor, "floor")):
                if other is not None:
                    _sane(other, what=f"{backend} {r.name} {label}")
        # the comparisons the issue asks for are there, as ratios
        by_name = {r.name.split(" (floor:")[0]: r for r in mine}
        assert by_name["triage: first page"].vs_naive is not None
        assert by_name["triage: first page"].vs_floor is not None
        assert by_name["analytics together (naive: replay events in pandas)"].vs_naive
        assert by_name["scan: full, after the clock moves a day"].naive is not None
        assert by_name[EXPORT_TIME].naive is not None
    assert "transitions per second" in capsys.readouterr().out
