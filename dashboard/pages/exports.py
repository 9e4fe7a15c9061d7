"""Exports: the same CSV files as `casedesk export`, for the filter shown (item 6).

The file is streamed to a private temporary file by core.exports (never built as a
DataFrame), audited there, and offered for download; the download button reads the file
only when clicked. The same filter gives the same bytes as the CLI.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

import streamlit as st

from core.db import get_engine
from core.errors import CaseDeskError
from core.exports import ExportKind, ExportRequest, export_to_file, headers, safe_file_name
from core.permissions import Action, can
from core.timeutil import utcnow
from dashboard import insight, ui
from dashboard.guard import require_page

actor = require_page(Action.EXPORT_DEIDENTIFIED)
ui.header("Exports", actor,
          subtitle="CSV files for reporting: de-identified unless you need names and say why.")

EXPORT_DIR = Path(tempfile.gettempdir()) / "casedesk-exports"
KEEP_SECONDS = 3600  # prepared files older than this are removed at the next export
READY = "export_ready"

KIND_NAMES = {ExportKind.CASES: "Cases (one row per case)",
              ExportKind.EVENTS: "Events (one row per move)",
              ExportKind.STAGE_TIMES: "Stage times (median and 90th percentile per month)"}


def _sweep() -> None:
    """Prepared files hold health data: keep them only as long as needed."""
    cutoff = time.time() - KEEP_SECONDS
    for old in EXPORT_DIR.glob("*.csv"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass


def _forget_previous() -> None:
    previous = st.session_state.pop(READY, None)
    if previous:
        Path(previous["path"]).unlink(missing_ok=True)


kind = st.radio("What", list(KIND_NAMES), key="export_kind",
                format_func=lambda k: KIND_NAMES[k], horizontal=True)
filt = insight.filter_bar(actor, key="export", action=Action.EXPORT_DEIDENTIFIED, state=True,
                          state_label="Stage" if kind is ExportKind.STAGE_TIMES
                          else "Current state")
identified = False
reason = None
if can(actor, Action.EXPORT_IDENTIFIED) and kind is not ExportKind.STAGE_TIMES:
    identified = st.toggle("Include identity (names, contact details, exact dates)",
                           key="export_identified")
    if identified:
        reason = st.text_input("Why is an identified export needed?", key="export_reason",
                               max_chars=500)
        st.warning("This file identifies patients. It is audited with your reason; keep it "
                   "encrypted and delete it when done.")
st.caption(insight.caption(filt) + " Columns: " + ", ".join(headers(kind, identified)))

request = ExportRequest(kind, filt, identified=identified, reason=reason)
if st.button("Prepare export", key="export_go", type="primary",
             icon=":material/download:"):
    _forget_previous()
    EXPORT_DIR.mkdir(mode=0o700, exist_ok=True)
    _sweep()
    path = EXPORT_DIR / f"{secrets.token_hex(16)}.csv"
    try:
        with st.spinner("Writing the file..."):
            result = export_to_file(get_engine(), actor, request, path, now=utcnow())
    except CaseDeskError as exc:
        ui.show_error(exc)
        st.stop()
    st.session_state[READY] = {"path": str(result.path), "rows": result.rows,
                               "sha256": result.sha256, "bytes": result.bytes,
                               "name": safe_file_name(request.file_name()),
                               "request": request}

ready = st.session_state.get(READY)
if ready and ready["request"] != request:
    _forget_previous()  # the filter changed since: never offer a file for another filter
    ready = None
if ready and os.path.exists(ready["path"]):
    st.success(f"{ready['rows']:,} rows ready ({ready['bytes']:,} bytes).")
    st.caption(f"SHA-256 {ready['sha256']} (recorded in the audit log).")
    ready_path = Path(ready["path"])
    st.download_button("Download CSV", data=lambda: ready_path.read_bytes(),
                       file_name=ready["name"], mime="text/csv", key="export_download",
                       on_click="ignore", icon=":material/file_download:")
