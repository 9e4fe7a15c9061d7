"""The shipped .streamlit/config.toml keeps the protections the security model needs."""

from __future__ import annotations

import tomllib

from tests.dashboard.conftest import ROOT


def test_streamlit_config_keeps_xsrf_on_and_hides_errors_toolbar_and_table_downloads():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableXsrfProtection"] is True
    assert config["client"]["showErrorDetails"] == "none"
    assert config["client"]["toolbarMode"] in ("viewer", "minimal")
    assert config["client"]["disableDataExport"] is True
    assert config["browser"]["gatherUsageStats"] is False


def test_no_page_renders_html():
    for path in (ROOT / "dashboard").rglob("*.py"):
        assert "unsafe_allow_html=True" not in path.read_text(), path
