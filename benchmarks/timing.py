"""Warm-up, several runs, median and spread: the only way a figure is measured here."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stat:
    """Several measurements of one thing. `unit` is "ms", "MB" or "/s"; for "/s" more is
    better, for the others less is better."""

    values: list[float]
    unit: str = "ms"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # CPU milliseconds this process (or the measured child) spent per run. On two cores
    # shared with everyone's test suites the wall time includes waiting for a core; the
    # CPU time does not (a PostgreSQL server's own CPU is not in it).
    cpu: list[float] = field(default_factory=list)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "/s"

    def cost(self) -> float:
        """The median as a cost (less is better), so ratios read the same for every unit."""
        if self.higher_is_better:
            return 1.0 / self.median if self.median else float("inf")
        return self.median

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n,
                "unit": self.unit, "values": self.values, "note": self.note,
                "cpu": self.cpu, **self.extra}


# A measurement whose warm-up alone takes this long gets fewer runs: the naive ways at
# 1,000,000 cases take tens of seconds each and two cores are shared.
SLOW_SECONDS = 5.0
SLOW_RUNS = 3


def measure(fn: Callable[[], Any], *, runs: int, warmup: int = 1,
            before: Callable[[], Any] | None = None) -> Stat:
    """Call `fn` `warmup` times untimed, then `runs` times timed (milliseconds).

    `before` runs untimed before every call (for example to roll the clock on).
    """
    slow = False
    for _ in range(warmup):
        if before:
            before()
        start = time.perf_counter()
        fn()
        slow = slow or time.perf_counter() - start > SLOW_SECONDS
    if slow:
        runs = min(runs, SLOW_RUNS)
    values, cpu = [], []
    for _ in range(runs):
        if before:
            before()
        with Timer() as t:
            fn()
        values.append(t.ms)
        cpu.append(t.cpu_ms)
    return Stat(values, cpu=cpu)


class Timer:
    """Wall and CPU milliseconds of a block."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ms = (time.perf_counter() - self._wall) * 1000.0
        self.cpu_ms = (time.process_time() - self._cpu) * 1000.0
