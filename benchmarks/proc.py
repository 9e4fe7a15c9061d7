"""Run a whole process and read its wall time and peak memory: what an export costs end
to end, interpreter and libraries included.

Peak memory is the child's maximum resident set size as `/usr/bin/time -v` reports it.
Reading ru_maxrss from our own wait4() would be wrong: Linux carries the high-water mark
of the memory a child was forked from across exec, so every child of this (large) Python
process would seem to use at least as much as the benchmark itself. /usr/bin/time is a
small process, so its child starts from a small mark. Without it, a small Python helper
does the same fork, exec and wait4 (its own ~10 MB then sets the smallest figure)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TIME = "/usr/bin/time"


@dataclass
class ProcResult:
    seconds: float
    peak_mb: float
    returncode: int
    stderr: str
    cpu_seconds: float = float("nan")  # user + system of the child


def run_measured(cmd: list[str], *, stdout_path: Path | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> ProcResult:
    with tempfile.NamedTemporaryFile("r", suffix=".rss", delete=False) as fh:
        report = Path(fh.name)
    try:
        if Path(TIME).exists():
            wrapped = [TIME, "-f", "%M %U %S", "-o", str(report), *cmd]
        else:
            wrapped = [sys.executable, "-S", __file__, str(report), *cmd]
        out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            start = time.perf_counter()
            done = subprocess.run(wrapped, stdout=out, stderr=subprocess.PIPE, env=env,
                                  cwd=cwd)
            seconds = time.perf_counter() - start
        finally:
            if stdout_path:
                out.close()
        lines = [ln for ln in report.read_text().splitlines() if ln.strip()]
        # /usr/bin/time prints "Command exited with non-zero status N" before the figure.
        fields = lines[-1].split() if lines else []
        kb = float(fields[0]) if fields else float("nan")
        cpu = float(fields[1]) + float(fields[2]) if len(fields) >= 3 else float("nan")
        return ProcResult(seconds, kb / 1024.0, done.returncode,
                          done.stderr.decode("utf-8", "replace")[-3000:], cpu)
    finally:
        report.unlink(missing_ok=True)


def _helper(argv: list[str]) -> int:
    """`python -S proc.py REPORT CMD...`: fork, exec CMD, write its peak RSS (KB)."""
    report, cmd = argv[0], argv[1:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    Path(report).write_text(f"{usage.ru_maxrss} {usage.ru_utime} {usage.ru_stime}\n")
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(_helper(sys.argv[1:]))
