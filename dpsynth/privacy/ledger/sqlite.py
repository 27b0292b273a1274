"""The SQLite backend of the ledger (stdlib ``sqlite3``, the embedded default).

What this module owns
---------------------
* Opening ``sqlite:///path`` files: the directory must exist, the file is
  created on first use; foreign keys on and a 60 s busy timeout.
* The SQLite tables and their guards (``SQLITE_DDL``): CHECK constraints,
  triggers that refuse deleting anything, changing a dataset's total, and any
  status move other than reserved -> spent | cancelled, spent -> released |
  spent-failed (the same rule as ``core._TRANSITIONS``).
* Serialising writers: every write transaction is ``BEGIN IMMEDIATE``, which
  takes the database's write lock up front (waiting up to the busy timeout), so
  the ledger's check-then-insert can never interleave; the finer locks the
  ledger asks for are therefore already held.
* Turning ``sqlite3`` errors into :class:`~dpsynth.errors.StorageError`.

What it must not do
-------------------
* Decide anything about budgets or statuses (``core`` does), or keep a
  connection shared between threads or processes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dpsynth.errors import StorageError
from dpsynth.privacy.ledger.backend import Transaction
from dpsynth.privacy.ledger.records import KINDS, STATUSES

__all__ = ["SQLITE_DDL", "SQLITE_MIGRATIONS", "SqliteBackend"]

_BUSY_TIMEOUT_S = 60.0

_FORWARD_ONLY = """CREATE TRIGGER IF NOT EXISTS charges_forward_only BEFORE UPDATE ON charges
       WHEN NOT (
            (OLD.status = 'reserved' AND NEW.status IN ('spent', 'cancelled'))
         OR (OLD.status = 'spent' AND NEW.status IN ('released', 'spent-failed')))
         OR NEW.release_id IS NOT OLD.release_id OR NEW.dataset_id IS NOT OLD.dataset_id
         OR NEW.rho IS NOT OLD.rho OR NEW.epsilon IS NOT OLD.epsilon
         OR NEW.delta IS NOT OLD.delta OR NEW.engine IS NOT OLD.engine
         OR NEW.dpsynth_version IS NOT OLD.dpsynth_version
         OR NEW.schema_hash IS NOT OLD.schema_hash OR NEW.created_at IS NOT OLD.created_at
         OR NEW.kind IS NOT OLD.kind OR NEW.extra_delta IS NOT OLD.extra_delta
         OR (OLD.input_hash IS NOT NULL AND NEW.input_hash IS NOT OLD.input_hash)
       BEGIN SELECT RAISE(ABORT, 'ledger charges only move forward'); END"""

SQLITE_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS ledger_schema_version (
        version INTEGER PRIMARY KEY,
        applied_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS datasets (
        dataset_id TEXT PRIMARY KEY,
        total_epsilon REAL NOT NULL CHECK (total_epsilon > 0),
        total_delta REAL NOT NULL CHECK (total_delta > 0 AND total_delta < 1),
        total_rho REAL NOT NULL CHECK (total_rho > 0),
        created_at TEXT NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS charges (
        release_id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL REFERENCES datasets (dataset_id),
        rho REAL NOT NULL CHECK (rho > 0),
        epsilon REAL NOT NULL CHECK (epsilon > 0),
        delta REAL NOT NULL CHECK (delta > 0 AND delta < 1),
        engine TEXT NOT NULL,
        dpsynth_version TEXT NOT NULL,
        schema_hash TEXT NOT NULL,
        input_hash TEXT,
        status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        detail TEXT,
        kind TEXT NOT NULL DEFAULT 'release' CHECK (kind IN ({", ".join(repr(k) for k in KINDS)})),
        extra_delta REAL NOT NULL DEFAULT 0 CHECK (extra_delta >= 0 AND extra_delta < delta))""",
    "CREATE INDEX IF NOT EXISTS charges_dataset ON charges (dataset_id)",
    """CREATE TRIGGER IF NOT EXISTS datasets_no_delete BEFORE DELETE ON datasets
       BEGIN SELECT RAISE(ABORT, 'ledger datasets cannot be deleted'); END""",
    """CREATE TRIGGER IF NOT EXISTS datasets_no_update BEFORE UPDATE ON datasets
       BEGIN SELECT RAISE(ABORT, 'a dataset total is set once'); END""",
    """CREATE TRIGGER IF NOT EXISTS charges_no_delete BEFORE DELETE ON charges
       BEGIN SELECT RAISE(ABORT, 'ledger charges are append-only'); END""",
    _FORWARD_ONLY,
)


SQLITE_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: charge kinds and the delta a schema draft spends outside rho
    1: (
        f"""ALTER TABLE charges ADD COLUMN kind TEXT NOT NULL DEFAULT 'release'
            CHECK (kind IN ({", ".join(repr(k) for k in KINDS)}))""",
        """ALTER TABLE charges ADD COLUMN extra_delta REAL NOT NULL DEFAULT 0
            CHECK (extra_delta >= 0 AND extra_delta < delta)""",
        "DROP TRIGGER IF EXISTS charges_forward_only",
        _FORWARD_ONLY,
    ),
}
"""Statements that bring the tables from version ``v`` to ``v + 1``."""


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(sql, tuple(params))
        try:
            return list(cur.fetchall())
        finally:
            cur.close()


class SqliteBackend:
    """A ledger in one SQLite file (``path``; ``:memory:`` for a private one)."""

    name = "sqlite"
    ddl = SQLITE_DDL
    migrations = SQLITE_MIGRATIONS

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        if path != ":memory:":
            p = Path(path).expanduser()
            if not p.parent.is_dir():
                raise StorageError(
                    f"ledger {url}: directory {str(p.parent)!r} does not exist "
                    "(the ledger file is created on first use, its directory is not)"
                )
            if p.exists() and not p.is_file():
                raise StorageError(f"ledger {url}: {str(p)!r} is not a file")
            path = str(p)
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            self._conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"ledger {url}: cannot open SQLite database: {exc}") from None
        try:
            self._conn.execute("PRAGMA foreign_keys = ON").close()
            ms = int(_BUSY_TIMEOUT_S * 1000)
            self._conn.execute(f"PRAGMA busy_timeout = {ms}").close()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StorageError(f"ledger {url}: not a usable SQLite database: {exc}") from None

    @contextmanager
    def transaction(
        self,
        *,
        write: bool,
        lock_dataset: str | None = None,
        lock_charge: str | None = None,
        lock_schema: bool = False,
    ) -> Iterator[Transaction]:
        # A write transaction holds the whole database's write lock: the dataset,
        # charge and schema locks asked for are implied.
        del lock_dataset, lock_charge, lock_schema
        try:
            with self._begin(write) as tx:
                yield tx
        except sqlite3.Error as exc:
            if self.is_unique_violation(exc):
                raise
            raise StorageError(f"ledger {self.url}: SQLite error: {exc}") from None

    @contextmanager
    def _begin(self, write: bool) -> Iterator[Transaction]:
        try:
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN").close()
        except sqlite3.Error as exc:
            raise StorageError(f"ledger {self.url}: cannot start a transaction: {exc}") from None
        try:
            yield _SqliteTx(self._conn)
        except BaseException:
            self._conn.rollback()
            raise
        try:
            self._conn.commit()
        except sqlite3.Error as exc:
            self._conn.rollback()
            raise StorageError(f"ledger {self.url}: commit failed: {exc}") from None

    def table_exists(self, tx: Transaction, table: str) -> bool:
        rows = tx.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))
        return bool(rows)

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    def close(self) -> None:
        self._conn.close()
