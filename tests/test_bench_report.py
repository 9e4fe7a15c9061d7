"""The bench's results files: a run of some suites replaces only their rows, and the README
section says when each suite was measured."""

import json

from benchmarks import report
from benchmarks.report import Row
from benchmarks.timing import Stat


def _row(group: str, name: str, ms: float) -> Row:
    return Row(group, name, Stat([ms]), None, Stat([ms / 2]), size=1000, backend="sqlite")


def _meta(when: str) -> dict:
    return {"size": 1000, "backend": "sqlite", "finished_at": when, "runs": 3, "warmup": 1,
            "reused": True, "build_seconds": 5, "method": "demo", "commit": when[-5:]}


def test_a_partial_run_replaces_only_its_suites(tmp_path):
    report.save_results(tmp_path, size=1000, backend="sqlite", meta=_meta("day 1 10:00"),
                        rows=[_row("scan", "scan: x", 100), _row("triage", "triage: y", 7)],
                        suites=["scan", "triage"])
    report.save_results(tmp_path, size=1000, backend="sqlite", meta=_meta("day 2 11:00"),
                        rows=[_row("triage", "triage: y", 2)], suites=["triage"])
    data = json.loads((tmp_path / "latest-1000-sqlite.json").read_text())
    assert [(d["group"], d["ours"]["median"]) for d in data["rows"]] == [("scan", 100),
                                                                         ("triage", 2)]
    assert data["meta"]["suites"]["scan"]["finished_at"] == "day 1 10:00"
    assert data["meta"]["suites"]["triage"]["finished_at"] == "day 2 11:00"

    section = report.readme_section(report.load_results(tmp_path), {"CPU": "2 cores"})
    assert "  - scan: measured day 1 10:00 at commit 10:00" in section
    assert "  - triage: measured day 2 11:00 at commit 11:00" in section
    assert section.index("scan: x") < section.index("triage: y")


def test_a_full_run_after_partial_ones_keeps_one_run_line(tmp_path):
    report.save_results(tmp_path, size=1000, backend="sqlite", meta=_meta("day 1 10:00"),
                        rows=[_row("triage", "triage: y", 7)], suites=["triage"])
    report.save_results(tmp_path, size=1000, backend="sqlite", meta=_meta("day 3 09:00"),
                        rows=[_row("scan", "scan: x", 90), _row("triage", "triage: y", 3)],
                        suites=["scan", "triage"])
    section = report.readme_section(report.load_results(tmp_path), {"CPU": "2 cores"})
    assert "  - scan, triage: measured day 3 09:00" in section
    assert "day 1" not in section


def test_verdicts_are_shown_only_at_the_size_the_targets_are_set_for():
    from benchmarks.report import Target

    rows = []
    for size in (100_000, 1_000_000):
        row = Row("scan", "scan: nothing changed", Stat([250.0]), None, None, size=size,
                  backend="sqlite", targets=[Target("value", 200, "≤ 200 ms")])
        rows.append(report.table_rows([row])[0][-1])
    assert rows == ["—", "≤ 200 ms: MISSED"]


def test_each_suite_keeps_its_own_speed_reading_and_warm_up(tmp_path):
    report.save_results(
        tmp_path, size=1000, backend="sqlite", meta=_meta("day 4 08:00"),
        rows=[_row("scan", "scan: x", 90), _row("triage", "triage: y", 3)],
        suites=["scan", "triage"],
        per_suite={"scan": {"pace": "19 ms before, 20 ms after", "warmup_text": None},
                   "triage": {"pace": "31 ms before, 19 ms after (waited 40 s)",
                              "warmup_text": "6 warm-up runs for the queue's pages"}})
    section = report.readme_section(report.load_results(tmp_path), {"CPU": "2 cores"})
    scan_line = next(line for line in section.splitlines() if line.startswith("  - scan:"))
    triage_line = next(line for line in section.splitlines()
                       if line.startswith("  - triage:"))
    assert "1 warm-up(s)" in scan_line and "19 ms before, 20 ms after" in scan_line
    assert "after 6 warm-up runs for the queue's pages" in triage_line
    assert "31 ms before, 19 ms after (waited 40 s)" in triage_line


class _FakeMachine:
    """Calibration readings from a list, and a clock that moves only when slept."""

    def __init__(self, readings):
        self.readings, self.now, self.slept = list(readings), 0.0, []

    def read(self):
        return self.readings.pop(0)

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def _pace(fake, **kw):
    from benchmarks.machine import Pace

    return Pace(read=fake.read, sleep=fake.sleep, clock=lambda: fake.now, every=10, **kw)


def test_pace_waits_while_the_machine_runs_slower_than_its_fastest_reading():
    fake = _FakeMachine([18, 19, 33, 30, 20])
    pace = _pace(fake, max_wait=300)
    assert pace.settle() == (18, 0)
    assert pace.settle() == (19, 0)  # within 1.25x of 18
    assert pace.settle() == (20, 20)  # 33 and 30 are slow: two waits of 10 s
    assert fake.slept == [10, 10] and pace.fastest == 18


def test_pace_measures_anyway_when_the_slow_stretch_outlasts_the_wait():
    fake = _FakeMachine([18, 35, 34, 33, 32])
    pace = _pace(fake, max_wait=25)
    assert pace.settle() == (18, 0)
    assert pace.settle() == (33, 20)  # a third wait of 10 s would pass 25 s
    never = _pace(_FakeMachine([18, 40]), max_wait=0)
    never.settle()
    assert never.settle() == (40, 0)


def test_pace_remembers_the_fastest_reading_of_this_machine_between_runs(tmp_path):
    kept = tmp_path / "machine-pace.json"
    first = _FakeMachine([19, 18])
    pace = _pace(first, max_wait=300, remember=kept)
    pace.settle()
    pace.settle()
    # The next run starts on a slow stretch: it waits for a reading near 18 ms, which
    # the fastest reading of that run alone (31) would not have asked for.
    slow_start = _FakeMachine([31, 30, 21])
    again = _pace(slow_start, max_wait=300, remember=kept)
    assert again.fastest == 18
    assert again.settle() == (21, 20)

    data = json.loads(kept.read_text())
    kept.write_text(json.dumps({**data, "machine": "another machine"}))
    elsewhere = _pace(_FakeMachine([31]), max_wait=300, remember=kept)
    assert elsewhere.fastest is None and elsewhere.settle() == (31, 0)


def test_the_commit_measured_ignores_the_bench_s_own_outputs(tmp_path, monkeypatch):
    import subprocess

    import benchmarks.__main__ as bench

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
                       cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("README.md", "benchmarks/results/latest-1-sqlite.json", "core.py"):
        (tmp_path / name).write_text("before\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "start")
    monkeypatch.setattr(bench, "PROJECT_ROOT", tmp_path)
    # a run writes its results and the README's table: still the commit measured
    (tmp_path / "README.md").write_text("table\n")
    (tmp_path / "benchmarks/results/latest-1-sqlite.json").write_text("{}\n")
    assert not bench._commit().endswith("+changes")
    (tmp_path / "core.py").write_text("edited\n")  # code measured that is not committed
    assert bench._commit().endswith("+changes")
