"""The benchmark's PostgreSQL: the test harness's throwaway cluster (tests/support/
pgcluster.py: non-root, 127.0.0.1, a free port), but with its data directory kept under
benchmarks/data/pg so a 1,000,000-case database built once is reused by later runs.

Settings differ from the test cluster on purpose: fsync stays on and
`synchronous_commit=off`, which is what the embedded SQLite does in WAL mode with
`synchronous=NORMAL` (a commit is not flushed, nothing is ever corrupted), so the two
backends' transitions per second compare fairly. Memory is sized for a 24 GB machine
shared with others: 512 MB of shared buffers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.pgcluster import PgCluster, PostgresUnavailable, find_bindir, free_port

SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=off "
    "-c shared_buffers=512MB -c work_mem=64MB -c maintenance_work_mem=512MB "
    "-c max_wal_size=4GB -c checkpoint_timeout=15min -c max_connections=50 "
    "-c max_parallel_workers_per_gather=2 -c jit=off"
)


class KeptCluster(PgCluster):
    """A PgCluster whose data directory outlives the process."""

    def start(self) -> KeptCluster:  # type: ignore[override]
        datadir = self.root / "data"
        if not (datadir / "PG_VERSION").exists():
            shutil.rmtree(datadir, ignore_errors=True)
            subprocess.run(
                self._cmd(str(self.bindir / "initdb"), "-D", str(datadir), "-A", "trust",
                          "-U", self.superuser, "-E", "UTF8", "--locale", "C.UTF-8"),
                check=True, capture_output=True,
            )
        # Another bench process may be using this data directory right now: join its
        # server rather than restart it under it (a killed run's stale postmaster.pid
        # names a dead process, and pg_ctl start copes with that).
        running = self._running_port()
        if running is not None:
            self.port, self.started_here = running, False
            return self
        self.started_here = True
        subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(datadir), "-l",
                      str(self.root / "log"), "-w", "-t", "120", "start",
                      "-o", f"-p {self.port} -k {self.root} {SERVER_OPTIONS}"),
            check=True, capture_output=True,
        )
        return self

    def _running_port(self) -> int | None:
        pid_file = self.root / "data" / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            os.kill(int(lines[0]), 0)
            return int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

    def release(self, log) -> None:  # noqa: ANN001
        """Stop the server if this process started it and no other bench process is
        connected to it; otherwise leave it running for them."""
        if not getattr(self, "started_here", False):
            return
        import psycopg

        try:
            with psycopg.connect(self.url("postgres").replace("+psycopg", ""),
                                 autocommit=True) as con:
                others = con.execute(
                    "SELECT datname, state, left(query, 60) FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    ).fetchall()
        except psycopg.Error:
            others = []
        if others:
            log(f"  PostgreSQL left running: {len(others)} other connection(s) use it:"
                f" {others}")
            return
        self.stop()

    def stop(self) -> None:
        subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m",
                      "fast", "-w", "stop"),
            capture_output=True,
        )


def start_kept_cluster(root: Path) -> KeptCluster:
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    run_as = None
    if os.geteuid() == 0:
        run_as = "postgres"  # PostgreSQL refuses to run as root
    root.mkdir(parents=True, exist_ok=True)
    if run_as:
        shutil.chown(root, user=run_as)
        # the server must be able to reach its folder through benchmarks/data
        for parent in (root.parent, root.parent.parent):
            parent.chmod(parent.stat().st_mode | 0o011)
    last: Exception | None = None
    for _ in range(3):  # a free port can be taken between bind() and start
        cluster = KeptCluster(root=root, port=free_port(), bindir=bindir, run_as=run_as)
        try:
            return cluster.start()
        except subprocess.CalledProcessError as exc:
            last = exc
    log = root / "log"
    tail = log.read_text()[-2000:] if log.exists() else ""
    raise PostgresUnavailable(f"could not start PostgreSQL in {root}: {last}\n{tail}")
