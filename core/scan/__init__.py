"""Stalled-case detection: the set-based scan, flag acknowledgement, the scan summary."""

from core.scan.flags import ScanSummary, acknowledge_flag, scan_summary
from core.scan.sweep import (
    RECOMPUTE_JOB,
    SCAN_JOB,
    ScanResult,
    run_recompute,
    run_scan,
    scan_session,
)

__all__ = [
    "RECOMPUTE_JOB",
    "SCAN_JOB",
    "ScanResult",
    "ScanSummary",
    "acknowledge_flag",
    "run_recompute",
    "run_scan",
    "scan_session",
    "scan_summary",
]
