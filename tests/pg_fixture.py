"""A throwaway PostgreSQL server for the tests (notes/container-ci.md §5).

Fixtures:
  pg_server  (session)   initdb + pg_ctl start on 127.0.0.1:<free port>, -A trust,
                         fsync off; stopped and removed at the end of the session.
  pg_url     (function)  a fresh, empty database on that server (dropped afterwards),
                         as postgresql://postgres:unused-pw@127.0.0.1:<port>/<db>.

Binaries are looked up in /usr/lib/postgresql/<highest version>/bin. If they (or
psycopg) are missing the tests are skipped, unless DPSYNTH_REQUIRE_PG is set to
something other than "" or "0" (CI sets DPSYNTH_REQUIRE_PG=1): then they fail.
As root, initdb and pg_ctl run as the ``postgres`` user via ``su``.

Wire into tests/conftest.py with:  from pg_fixture import pg_server, pg_url  # noqa: F401
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_ROOT = Path("/usr/lib/postgresql")


def _require_pg() -> bool:
    return os.environ.get("DPSYNTH_REQUIRE_PG", "") not in ("", "0")


def _unavailable(reason: str) -> None:
    if _require_pg():
        pytest.fail(f"PostgreSQL required (DPSYNTH_REQUIRE_PG is set) but {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason} (set DPSYNTH_REQUIRE_PG=1 to fail instead)")


def find_pg_bin() -> Path | None:
    """The bin directory of the highest PostgreSQL version installed, or None."""
    found = []
    for initdb in PG_ROOT.glob("*/bin/initdb"):
        version = initdb.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and (initdb.parent / "pg_ctl").exists():
            found.append((tuple(int(p) for p in version.split(".")), initdb.parent))
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    host: str
    port: int
    datadir: Path

    def url(self, dbname: str = "postgres") -> str:
        # -A trust: the password is never checked, but callers' redaction is tested with it.
        return f"postgresql://postgres:unused-pw@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)


def _run(cmd: list[str], as_postgres: bool) -> subprocess.CompletedProcess[str]:
    if as_postgres:
        cmd = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    pgbin = find_pg_bin()
    if pgbin is None:
        _unavailable(f"no initdb/pg_ctl under {PG_ROOT}/<version>/bin (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'dpsynth[postgres]')")
    assert pgbin is not None
    as_postgres = os.geteuid() == 0
    work = Path(tempfile.mkdtemp(prefix="dpsynth-pg-"))
    work.chmod(0o755)  # the postgres user must be able to enter it
    datadir = work / "data"
    datadir.mkdir(mode=0o700)
    if as_postgres:
        shutil.chown(datadir, "postgres", "postgres")
    started = False
    try:
        r = _run(
            [str(pgbin / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust",
             "--no-sync", "-E", "UTF8", "--locale=C"],
            as_postgres,
        )
        if r.returncode != 0:
            pytest.fail(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        for _ in range(3):  # the free port can be taken between probe and start
            port = _free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {datadir} -c fsync=off "
                "-c full_page_writes=off -c synchronous_commit=off"
            )
            r = _run(
                [str(pgbin / "pg_ctl"), "-D", str(datadir), "-l", str(datadir / "server.log"),
                 "-w", "-t", "30", "-o", opts, "start"],
                as_postgres,
            )
            if r.returncode == 0:
                started = True
                break
        if not started:
            log = (datadir / "server.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{log}")
        yield PgServer("127.0.0.1", port, datadir)
    finally:
        if started:
            _run([str(pgbin / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"],
                 as_postgres)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty database for one test; dropped (connections forced off) afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.admin(f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.url(name)
    finally:
        with contextlib.suppress(Exception):
            pg_server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
