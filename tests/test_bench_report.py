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
