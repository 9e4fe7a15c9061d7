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
                "unit": self.unit, "values": self.values, "note": self.note, **self.extra}


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
    values = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        fn()
        values.append((time.perf_counter() - start) * 1000.0)
    return Stat(values)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(milliseconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000.0, result
