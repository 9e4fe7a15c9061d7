"""A throwaway PostgreSQL cluster for tests and benchmarks.

initdb into a temporary folder as a non-root user (the `postgres` system account when we
run as root: PostgreSQL refuses to run as root), listen on 127.0.0.1 at a free port and
on a unix socket in the same folder, trust authentication, fsync off (a test cluster
needs no durability). `stop()` shuts it down and removes the folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def find_bindir() -> Path | None:
    for pattern in ("/usr/lib/postgresql/*/bin",):
        for candidate in sorted(glob.glob(pattern), reverse=True):
            if Path(candidate, "initdb").exists():
                return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    root: Path
    port: int
    bindir: Path
    run_as: str | None

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://{self.superuser}@127.0.0.1:{self.port}/postgres"

    @property
    def superuser(self) -> str:
        return self.run_as or pwd.getpwuid(os.getuid()).pw_name

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *args]
        return list(args)

    def start(self) -> PgCluster:
        datadir = self.root / "data"
        subprocess.run(
            self._cmd(str(self.bindir / "initdb"), "-D", str(datadir), "-A", "trust",
                      "-U", self.superuser, "-E", "UTF8", "--locale", "C.UTF-8"),
            check=True, capture_output=True,
        )
        subprocess.run(
            self._cmd(
                str(self.bindir / "pg_ctl"), "-D", str(datadir), "-l", str(self.root / "log"),
                "-w", "-t", "60", "start",
                "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                      "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                      "-c max_connections=200",
            ),
            check=True, capture_output=True,
        )
        return self

    def stop(self) -> None:
        subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m",
                      "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PgCluster:
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root and no 'postgres' user to run as") from None
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="casedesk-pg-"))
    if run_as:
        shutil.chown(root, user=run_as)
    cluster = PgCluster(root=root, port=free_port(), bindir=bindir, run_as=run_as)
    last: Exception | None = None
    for _ in range(3):  # a free port can be taken between bind() and start
        try:
            return cluster.start()
        except subprocess.CalledProcessError as exc:
            last = exc
            cluster.port = free_port()
            shutil.rmtree(root / "data", ignore_errors=True)
            time.sleep(0.2)
    shutil.rmtree(root, ignore_errors=True)
    raise PostgresUnavailable(f"could not start PostgreSQL: {last}")
