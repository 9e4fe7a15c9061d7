"""The machine a result was measured on, for the README."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gb() -> str:
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GB"
    except OSError:
        pass
    return "unknown"


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def _postgres_version() -> str:
    from tests.support.pgcluster import find_bindir

    bindir = find_bindir()
    if not bindir:
        return "absent"
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                         text=True)
    return out.stdout.split("(PostgreSQL)")[-1].split()[0] if out.returncode == 0 else "unknown"


def describe() -> dict[str, str]:
    return {
        "CPU": f"{os.cpu_count()} cores ({_cpu_model()})",
        "memory": _memory_gb(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": _postgres_version(),
        "SQLAlchemy": _pkg("SQLAlchemy"),
        "sqlmodel": _pkg("sqlmodel"),
        "psycopg": _pkg("psycopg"),
        "pandas": _pkg("pandas"),
        "streamlit": _pkg("streamlit"),
    }


def calibrate() -> str:
    """How busy the machine is, in one line: a fixed piece of pure Python, timed by the
    wall clock and by this process's CPU clock (their ratio is roughly how many processes
    want each core)."""
    import time

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(10):
        sum(range(1_000_000))
    wall = (time.perf_counter() - wall) * 100.0
    cpu = (time.process_time() - cpu) * 100.0
    return f"sum(range(10**6)): {cpu:.0f} ms CPU, {wall:.0f} ms wall"
