"""Stalled-case detection: the set-based scan and flag acknowledgement."""

from core.scan.flags import acknowledge_flag
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
    "acknowledge_flag",
    "run_recompute",
    "run_scan",
    "scan_session",
]
