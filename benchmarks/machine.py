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


def loop_ms() -> tuple[float, float]:
    """One reading of the machine's speed: a fixed piece of pure Python (ten runs of
    `sum(range(10**6))`), in milliseconds per run by this process's CPU clock and by the
    wall clock (their ratio is roughly how many processes want each core)."""
    import time

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(10):
        sum(range(1_000_000))
    return (time.process_time() - cpu) * 100.0, (time.perf_counter() - wall) * 100.0


def calibrate() -> str:
    """How busy the machine is, in one line."""
    cpu, wall = loop_ms()
    return f"sum(range(10**6)): {cpu:.0f} ms CPU, {wall:.0f} ms wall"


def machine_key() -> str:
    """Which machine a remembered speed belongs to."""
    return f"{platform.node()} | {_cpu_model()} | {os.cpu_count()} cores"


class Pace:
    """Keeps latency figures from being taken while the machine runs slow.

    This shared virtual machine's speed moves by 2-2.5x over stretches of minutes (the
    calibration loop has read 18 to 35 ms, with nothing of ours running), and every part
    of a measured call slows together. A figure taken on such a stretch measures the
    host, not the code. So before each suite the loop is read; while it is more than
    `tolerance` times the fastest reading of this machine, the bench waits and reads
    again, for at most `max_wait` seconds, then measures anyway. The fastest reading is
    kept between runs in `remember` (a JSON file under benchmarks/out, for this machine
    only: its name, CPU model and core count), so a run that starts on a slow stretch
    still knows what quick is; without it, the fastest reading of this run. What was
    read and how long it waited are kept with the suite's results and shown in the
    README, so a figure taken on a slow stretch says so. The readings decide when to
    measure, before any figure is seen; no figure is ever measured again or dropped."""

    def __init__(self, *, tolerance: float = 1.25, max_wait: float = 300.0,
                 every: float = 10.0, remember=None, read=None, sleep=None,  # noqa: ANN001
                 clock=None) -> None:  # noqa: ANN001
        import time

        self.tolerance, self.max_wait, self.every = tolerance, max_wait, every
        self._read = read or (lambda: loop_ms()[1])
        self._sleep = sleep or time.sleep
        self._clock = clock or time.monotonic
        self._remember = remember
        self.fastest: float | None = self._remembered()

    def _remembered(self) -> float | None:
        import json

        if self._remember is None or not self._remember.exists():
            return None
        try:
            kept = json.loads(self._remember.read_text())
        except (OSError, ValueError):
            return None
        if kept.get("machine") != machine_key() or not kept.get("fastest_ms"):
            return None
        return float(kept["fastest_ms"])

    def reading(self) -> float:
        value = self._read()
        if self.fastest is None or value < self.fastest:
            self.fastest = value
            if self._remember is not None:
                import json

                self._remember.parent.mkdir(parents=True, exist_ok=True)
                self._remember.write_text(json.dumps(
                    {"machine": machine_key(), "fastest_ms": round(value, 2)}))
        return value

    def settle(self) -> tuple[float, float]:
        """Wait until the machine runs near its fastest speed seen in this run (or the
        time allowed is up). Returns (the last reading in ms, seconds waited)."""
        start = self._clock()
        value = self.reading()
        while value > self.tolerance * self.fastest:
            waited = self._clock() - start
            if waited + self.every > self.max_wait:
                break
            self._sleep(self.every)
            value = self.reading()
        return value, self._clock() - start
