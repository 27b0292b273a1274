"""The PostgreSQL backend of the ledger (psycopg 3, imported lazily: install
``dpsynth[postgres]``).

What this module owns
---------------------
* Connecting to ``postgresql://user:pw@host:port/db`` (10 s connect timeout).
* The PostgreSQL tables and their guards (``POSTGRES_DDL``): CHECK constraints
  and two plpgsql trigger functions that refuse deleting anything, changing a
  dataset's total, and any status move other than reserved -> spent |
  cancelled, spent -> released | spent-failed (the same rule as
  ``core._TRANSITIONS``).
* The locks the ledger asks for: ``SELECT ... FOR UPDATE`` on the dataset's row
  (concurrent reserves of one dataset run one after the other, others in
  parallel) or on the charge's row, and a transaction-scoped advisory lock while
  the tables are created.
* Turning psycopg errors into :class:`~dpsynth.errors.StorageError`: one line,
  with the password scrubbed out.

The tables are called ``ledger_schema_version``, ``datasets`` and ``charges``; to
keep them apart from other applications' tables use a dedicated database, or a
schema via ``?options=-csearch_path%3Ddpsynth``.

What it must not do
-------------------
* Decide anything about budgets or statuses (``core`` does), import psycopg
  before a PostgreSQL ledger is opened, or let the password reach a message.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from dpsynth.errors import StorageError
from dpsynth.privacy.ledger.backend import Transaction
from dpsynth.privacy.ledger.records import KINDS, STATUSES

__all__ = ["POSTGRES_DDL", "POSTGRES_MIGRATIONS", "PostgresBackend"]

_CONNECT_TIMEOUT_S = 10
# Key of the advisory lock that serialises creating the tables.
_SCHEMA_LOCK = 0x6470_7379_6E74  # "dpsynt"

_CHARGES_GUARD = """CREATE OR REPLACE FUNCTION dpsynth_charges_guard() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'DELETE' THEN
           RAISE EXCEPTION 'ledger charges are append-only';
         END IF;
         IF NOT ((OLD.status = 'reserved' AND NEW.status IN ('spent', 'cancelled'))
              OR (OLD.status = 'spent' AND NEW.status IN ('released', 'spent-failed')))
            OR NEW.release_id IS DISTINCT FROM OLD.release_id
            OR NEW.dataset_id IS DISTINCT FROM OLD.dataset_id
            OR NEW.rho IS DISTINCT FROM OLD.rho OR NEW.epsilon IS DISTINCT FROM OLD.epsilon
            OR NEW.delta IS DISTINCT FROM OLD.delta OR NEW.engine IS DISTINCT FROM OLD.engine
            OR NEW.dpsynth_version IS DISTINCT FROM OLD.dpsynth_version
            OR NEW.schema_hash IS DISTINCT FROM OLD.schema_hash
            OR NEW.created_at IS DISTINCT FROM OLD.created_at
            OR NEW.kind IS DISTINCT FROM OLD.kind
            OR NEW.extra_delta IS DISTINCT FROM OLD.extra_delta
            OR (OLD.input_hash IS NOT NULL AND NEW.input_hash IS DISTINCT FROM OLD.input_hash)
         THEN
           RAISE EXCEPTION 'ledger charges only move forward';
         END IF;
         RETURN NEW;
       END $$"""

_CHARGES_TRIGGER = """CREATE TRIGGER charges_guard BEFORE UPDATE OR DELETE ON charges
       FOR EACH ROW EXECUTE FUNCTION dpsynth_charges_guard()"""

POSTGRES_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS ledger_schema_version (
        version INTEGER PRIMARY KEY,
        applied_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS datasets (
        dataset_id TEXT PRIMARY KEY,
        total_epsilon DOUBLE PRECISION NOT NULL CHECK (total_epsilon > 0),
        total_delta DOUBLE PRECISION NOT NULL CHECK (total_delta > 0 AND total_delta < 1),
        total_rho DOUBLE PRECISION NOT NULL CHECK (total_rho > 0),
        created_at TIMESTAMPTZ NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS charges (
        release_id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL REFERENCES datasets (dataset_id),
        rho DOUBLE PRECISION NOT NULL CHECK (rho > 0),
        epsilon DOUBLE PRECISION NOT NULL CHECK (epsilon > 0),
        delta DOUBLE PRECISION NOT NULL CHECK (delta > 0 AND delta < 1),
        engine TEXT NOT NULL,
        dpsynth_version TEXT NOT NULL,
        schema_hash TEXT NOT NULL,
        input_hash TEXT,
        status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        detail TEXT,
        kind TEXT NOT NULL DEFAULT 'release' CHECK (kind IN ({", ".join(repr(k) for k in KINDS)})),
        extra_delta DOUBLE PRECISION NOT NULL DEFAULT 0
            CHECK (extra_delta >= 0 AND extra_delta < delta))""",
    "CREATE INDEX IF NOT EXISTS charges_dataset ON charges (dataset_id)",
    """CREATE OR REPLACE FUNCTION dpsynth_datasets_guard() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'ledger datasets cannot be changed or deleted (totals are set once)';
       END $$""",
    _CHARGES_GUARD,
    "DROP TRIGGER IF EXISTS datasets_guard ON datasets",
    """CREATE TRIGGER datasets_guard BEFORE UPDATE OR DELETE ON datasets
       FOR EACH ROW EXECUTE FUNCTION dpsynth_datasets_guard()""",
    "DROP TRIGGER IF EXISTS charges_guard ON charges",
    _CHARGES_TRIGGER,
)


POSTGRES_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: charge kinds and the delta a schema draft spends outside rho
    1: (
        f"""ALTER TABLE charges ADD COLUMN kind TEXT NOT NULL DEFAULT 'release'
            CHECK (kind IN ({", ".join(repr(k) for k in KINDS)}))""",
        """ALTER TABLE charges ADD COLUMN extra_delta DOUBLE PRECISION NOT NULL DEFAULT 0
            CHECK (extra_delta >= 0 AND extra_delta < delta)""",
        _CHARGES_GUARD,
        "DROP TRIGGER IF EXISTS charges_guard ON charges",
        _CHARGES_TRIGGER,
    ),
}
"""Statements that bring the tables from version ``v`` to ``v + 1``."""


def _scrub(text: str, secrets: Sequence[str]) -> str:
    """The driver's message on one line ("; " between its lines: an error is one
    line, as every dpsynth error), the password replaced by ``***``."""
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s") if params else sql, tuple(params) or None)
            return list(cur.fetchall()) if cur.description is not None else []


class PostgresBackend:
    """A ledger in a PostgreSQL database; ``url`` is redacted, ``raw_url`` is not."""

    name = "postgresql"
    ddl = POSTGRES_DDL
    migrations = POSTGRES_MIGRATIONS

    def __init__(self, url: str, raw_url: str) -> None:
        self.url = url
        try:
            import psycopg
        except ImportError:
            raise StorageError(
                f"ledger {url}: PostgreSQL ledgers need psycopg 3; "
                "install it with: pip install 'dpsynth[postgres]'"
            ) from None
        self._psycopg = psycopg
        parts = urlsplit(raw_url)
        secrets = [parts.password or "", unquote(parts.password or "")]
        self._secrets = [s for s in secrets if s]
        try:
            self._conn = psycopg.connect(raw_url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
        except Exception as exc:  # psycopg.Error, or ValueError for a bad conninfo
            msg = _scrub(str(exc), self._secrets) or type(exc).__name__
            raise StorageError(f"ledger {url}: cannot connect to PostgreSQL: {msg}") from None

    @contextmanager
    def transaction(
        self,
        *,
        write: bool,
        lock_dataset: str | None = None,
        lock_charge: str | None = None,
        lock_schema: bool = False,
    ) -> Iterator[Transaction]:
        del write
        try:
            with self._conn.transaction():
                tx = _PgTx(self._conn)
                if lock_schema:
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                if lock_dataset is not None:
                    tx.execute(
                        "SELECT dataset_id FROM datasets WHERE dataset_id = ? FOR UPDATE",
                        (lock_dataset,),
                    )
                if lock_charge is not None:
                    tx.execute(
                        "SELECT release_id FROM charges WHERE release_id = ? FOR UPDATE",
                        (lock_charge,),
                    )
                yield tx
        except self._psycopg.Error as exc:
            if self.is_unique_violation(exc):
                raise
            msg = _scrub(str(exc), self._secrets)
            raise StorageError(f"ledger {self.url}: PostgreSQL error: {msg}") from None

    def table_exists(self, tx: Transaction, table: str) -> bool:
        rows = tx.execute("SELECT to_regclass(?) IS NOT NULL", (table,))
        return bool(rows[0][0])

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, self._psycopg.errors.UniqueViolation)

    def close(self) -> None:
        self._conn.close()
