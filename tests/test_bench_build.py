"""The bench's kept databases are reused only while the demo generator still writes the
same rows: a database built by an older generator is built again."""

from __future__ import annotations

import json

import pytest

from benchmarks import build
from core.demo_limits import DATA_VERSION


@pytest.mark.slow
def test_a_database_of_an_older_demo_generator_is_built_again(tmp_path):
    said: list[str] = []
    first = build.build_sqlite(120, seed=3, data_dir=tmp_path, log=said.append)
    assert not first.reused and first.manifest["demo_version"] == DATA_VERSION
    assert build.build_sqlite(120, seed=3, data_dir=tmp_path, log=said.append).reused

    manifest = tmp_path / "cases-120.json"
    older = {**json.loads(manifest.read_text()), "demo_version": DATA_VERSION - 1}
    manifest.write_text(json.dumps(older))
    again = build.build_sqlite(120, seed=3, data_dir=tmp_path, log=said.append)
    assert not again.reused
    assert json.loads(manifest.read_text())["demo_version"] == DATA_VERSION
