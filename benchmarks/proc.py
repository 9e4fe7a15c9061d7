"""Run a whole process and read its wall time and peak memory (ru_maxrss of that child,
from wait4): what an export costs end to end, interpreter and libraries included."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ProcResult:
    seconds: float
    peak_mb: float
    returncode: int
    stderr: str


def run_measured(cmd: list[str], *, stdout_path: Path | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> ProcResult:
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
        # Read stderr before waiting so a chatty child cannot block on a full pipe.
        err = proc.stderr.read() if proc.stderr else b""
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if stdout_path:
            out.close()
    # Linux reports ru_maxrss in kilobytes.
    return ProcResult(seconds, usage.ru_maxrss / 1024.0, proc.returncode,
                      err.decode("utf-8", "replace")[-3000:])
