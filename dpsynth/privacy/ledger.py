"""The privacy-budget ledger: one total (epsilon, delta) per dataset and an
append-only list of charges against it, kept in SQLite or PostgreSQL.

What this module owns
---------------------
* The ledger's storage: opening ``sqlite:///path`` (stdlib ``sqlite3``, the
  embedded default) or ``postgresql://user:pw@host:port/db`` (psycopg 3,
  imported lazily: install ``dpsynth[postgres]``), creating and versioning the
  tables, and guarding them with triggers (no deletes; status only forward).
* Composition across releases in zCDP: a dataset's total (epsilon, delta) is
  stored as ``total_rho = rho_for(total_epsilon, total_delta)``; every charge
  stores its rho (plus the epsilon/delta the user asked for); spent rho adds up;
  spent and remaining budgets are reported as epsilon at the dataset's delta.
* The order a release must follow (design.md §2 rule 5, "budget before data")::

      reserve()      status 'reserved'   before the input is opened
      mark_spent()   status 'spent'      immediately before the first read
      mark_released()   'released'       after the bundle is in place
      mark_failed()     'spent-failed'   if it was spent (the budget stays used)
                        'cancelled'      if still reserved (no data was read)

  Every status except ``cancelled`` counts against the total, including a
  ``reserved`` charge whose job crashed before saying anything more.
* Concurrency: ``reserve`` checks and inserts in one transaction, serialised by
  ``BEGIN IMMEDIATE`` (SQLite, with a busy timeout) or by
  ``SELECT ... FOR UPDATE`` on the dataset's row (PostgreSQL), so parallel
  releases can never exceed the total.

What it must not do
-------------------
* Never read, receive or store private data. It sees only ids, budgets,
  versions and hashes; ``detail`` is a short error text the caller must keep
  free of cell values (design.md §2 rule 7).
* Never delete or rewrite a charge, never move a status backwards, never change
  a dataset's total once set, and never let a retried release id spend twice.
* Never put a database password in an error message (URLs are redacted).
* Never draw noise or import opendp (the arithmetic lives in ``accountant``).

On PostgreSQL the tables are called ``ledger_schema_version``, ``datasets`` and
``charges``; to keep them apart from other applications' tables use a
dedicated database, or a schema via ``?options=-csearch_path%3Ddpsynth``.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from dpsynth.errors import BudgetError, StorageError, UsageError
from dpsynth.privacy.accountant import epsilon_for, rho_for

__all__ = [
    "COUNTED_STATUSES",
    "SCHEMA_VERSION",
    "STATUSES",
    "ChargeRecord",
    "DatasetSummary",
    "Ledger",
    "open_ledger",
    "redact_url",
]

SCHEMA_VERSION = 1
"""Version of the ledger's tables; bump it and add a migration when they change."""

STATUSES: tuple[str, ...] = ("reserved", "spent", "released", "spent-failed", "cancelled")
COUNTED_STATUSES: frozenset[str] = frozenset(STATUSES) - {"cancelled"}
"""Statuses whose rho counts against the dataset's total (all but cancelled)."""

_TRANSITIONS: dict[str, frozenset[str]] = {
    "reserved": frozenset({"spent", "cancelled"}),
    "spent": frozenset({"released", "spent-failed"}),
    "released": frozenset(),
    "spent-failed": frozenset(),
    "cancelled": frozenset(),
}

# Same slack as accountant.Budget.covers: spending exactly the total is allowed.
_REL_TOL = 1e-9
_SQLITE_BUSY_TIMEOUT_S = 60.0
_PG_CONNECT_TIMEOUT_S = 10
_MAX_ID_LEN = 200
_MAX_DETAIL_LEN = 2000
# Key of the PostgreSQL advisory lock that serialises creating the tables.
_PG_SCHEMA_LOCK = 0x6470_7379_6E74  # "dpsynt"

# Full statements as literals (no string building around SQL).
_SELECT_CHARGES = (
    "SELECT release_id, dataset_id, rho, epsilon, delta, engine, dpsynth_version, "
    "schema_hash, input_hash, status, created_at, updated_at, detail FROM charges "
)
_INSERT_CHARGE = (
    "INSERT INTO charges (release_id, dataset_id, rho, epsilon, delta, engine, "
    "dpsynth_version, schema_hash, input_hash, status, created_at, updated_at, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 'reserved', ?, ?, NULL)"
)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ChargeRecord:
    """One row of ``charges``; times are ISO 8601 in UTC."""

    release_id: str
    dataset_id: str
    rho: float
    epsilon: float
    delta: float
    engine: str
    dpsynth_version: str
    schema_hash: str
    input_hash: str | None
    status: str
    created_at: str
    updated_at: str
    detail: str | None

    @property
    def counted(self) -> bool:
        """True when this charge counts against the dataset's total."""
        return self.status in COUNTED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset's total, what has been spent (counted charges) and what remains.

    rho composes by addition; ``spent_epsilon`` and ``remaining_epsilon`` are the
    epsilons at the dataset's ``total_delta`` (computed on first use: the tight
    conversion takes ~10 ms).
    """

    dataset_id: str
    total_epsilon: float
    total_delta: float
    total_rho: float
    created_at: str
    spent_rho: float
    remaining_rho: float
    charges: tuple[ChargeRecord, ...]

    @cached_property
    def spent_epsilon(self) -> float:
        return _eps(self.spent_rho, self.total_delta)

    @cached_property
    def remaining_epsilon(self) -> float:
        return _eps(self.remaining_rho, self.total_delta)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spent_epsilon"] = self.spent_epsilon
        d["remaining_epsilon"] = self.remaining_epsilon
        d["charges"] = [c.to_dict() for c in self.charges]
        return d


# --------------------------------------------------------------------------- helpers


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        # Unparseable: hide everything between "://" and the last "@".
        scheme, sep, rest = url.partition("://")
        if sep and "@" in rest:
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return url


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value)


def _check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{kind} must be a non-empty string")
    if len(value) > _MAX_ID_LEN or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UsageError(f"{kind} must be at most {_MAX_ID_LEN} printable characters")
    return value


def _check_positive(kind: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{kind} must be a number")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise UsageError(f"{kind} ({value}) must be a positive finite number")
    return v


def _check_delta(kind: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{kind} must be a number")
    v = float(value)
    if not 0 < v < 1:
        raise UsageError(f"{kind} ({value}) must be in (0, 1)")
    return v


def _fits(spent_rho: float, total_rho: float) -> bool:
    return spent_rho <= total_rho * (1 + _REL_TOL)


def _eps(rho: float, delta: float) -> float:
    return epsilon_for(max(0.0, rho), delta)


# --------------------------------------------------------------------------- backends


class _Tx(Protocol):
    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...


_SQLITE_DDL = (
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
        detail TEXT)""",
    "CREATE INDEX IF NOT EXISTS charges_dataset ON charges (dataset_id)",
    """CREATE TRIGGER IF NOT EXISTS datasets_no_delete BEFORE DELETE ON datasets
       BEGIN SELECT RAISE(ABORT, 'ledger datasets cannot be deleted'); END""",
    """CREATE TRIGGER IF NOT EXISTS datasets_no_update BEFORE UPDATE ON datasets
       BEGIN SELECT RAISE(ABORT, 'a dataset total is set once'); END""",
    """CREATE TRIGGER IF NOT EXISTS charges_no_delete BEFORE DELETE ON charges
       BEGIN SELECT RAISE(ABORT, 'ledger charges are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS charges_forward_only BEFORE UPDATE ON charges
       WHEN NOT (
            (OLD.status = 'reserved' AND NEW.status IN ('spent', 'cancelled'))
         OR (OLD.status = 'spent' AND NEW.status IN ('released', 'spent-failed')))
         OR NEW.release_id IS NOT OLD.release_id OR NEW.dataset_id IS NOT OLD.dataset_id
         OR NEW.rho IS NOT OLD.rho OR NEW.epsilon IS NOT OLD.epsilon
         OR NEW.delta IS NOT OLD.delta OR NEW.engine IS NOT OLD.engine
         OR NEW.dpsynth_version IS NOT OLD.dpsynth_version
         OR NEW.schema_hash IS NOT OLD.schema_hash OR NEW.created_at IS NOT OLD.created_at
         OR (OLD.input_hash IS NOT NULL AND NEW.input_hash IS NOT OLD.input_hash)
       BEGIN SELECT RAISE(ABORT, 'ledger charges only move forward'); END""",
)

_PG_DDL = (
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
        detail TEXT)""",
    "CREATE INDEX IF NOT EXISTS charges_dataset ON charges (dataset_id)",
    """CREATE OR REPLACE FUNCTION dpsynth_datasets_guard() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'ledger datasets cannot be changed or deleted (totals are set once)';
       END $$""",
    """CREATE OR REPLACE FUNCTION dpsynth_charges_guard() RETURNS trigger
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
            OR (OLD.input_hash IS NOT NULL AND NEW.input_hash IS DISTINCT FROM OLD.input_hash)
         THEN
           RAISE EXCEPTION 'ledger charges only move forward';
         END IF;
         RETURN NEW;
       END $$""",
    "DROP TRIGGER IF EXISTS datasets_guard ON datasets",
    """CREATE TRIGGER datasets_guard BEFORE UPDATE OR DELETE ON datasets
       FOR EACH ROW EXECUTE FUNCTION dpsynth_datasets_guard()""",
    "DROP TRIGGER IF EXISTS charges_guard ON charges",
    """CREATE TRIGGER charges_guard BEFORE UPDATE OR DELETE ON charges
       FOR EACH ROW EXECUTE FUNCTION dpsynth_charges_guard()""",
)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(sql, tuple(params))
        try:
            return list(cur.fetchall())
        finally:
            cur.close()


class _SqliteBackend:
    name = "sqlite"

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
            self._conn = sqlite3.connect(
                path, timeout=_SQLITE_BUSY_TIMEOUT_S, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise StorageError(f"ledger {url}: cannot open SQLite database: {exc}") from None
        try:
            self._conn.execute("PRAGMA foreign_keys = ON").close()
            ms = int(_SQLITE_BUSY_TIMEOUT_S * 1000)
            self._conn.execute(f"PRAGMA busy_timeout = {ms}").close()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StorageError(f"ledger {url}: not a usable SQLite database: {exc}") from None

    @contextmanager
    def transaction(self, *, write: bool, lock_dataset: str | None = None) -> Iterator[_Tx]:
        # BEGIN IMMEDIATE takes the database's write lock up front (waiting up to
        # the busy timeout), so check-then-insert cannot interleave.
        del lock_dataset
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

    def table_exists(self, tx: _Tx, table: str) -> bool:
        rows = tx.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))
        return bool(rows)

    def ddl(self) -> tuple[str, ...]:
        return _SQLITE_DDL

    def is_db_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    def close(self) -> None:
        self._conn.close()


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s") if params else sql, tuple(params) or None)
            return list(cur.fetchall()) if cur.description is not None else []


class _PgBackend:
    name = "postgresql"

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
            self._conn = psycopg.connect(
                raw_url, autocommit=True, connect_timeout=_PG_CONNECT_TIMEOUT_S
            )
        except Exception as exc:  # psycopg.Error, or ValueError for a bad conninfo
            msg = _scrub(str(exc).strip(), self._secrets) or type(exc).__name__
            raise StorageError(f"ledger {url}: cannot connect to PostgreSQL: {msg}") from None

    @contextmanager
    def transaction(self, *, write: bool, lock_dataset: str | None = None) -> Iterator[_Tx]:
        del write
        try:
            with self._conn.transaction():
                tx = _PgTx(self._conn)
                if lock_dataset is not None:
                    # Row lock on the dataset: concurrent reserves of one dataset
                    # run one after the other; others proceed in parallel.
                    tx.execute(
                        "SELECT dataset_id FROM datasets WHERE dataset_id = ? FOR UPDATE",
                        (lock_dataset,),
                    )
                yield tx
        except self._psycopg.Error as exc:
            if self.is_unique_violation(exc):
                raise
            raise self._storage_error(exc) from None

    def _storage_error(self, exc: BaseException) -> StorageError:
        msg = _scrub(str(exc).strip(), self._secrets)
        return StorageError(f"ledger {self.url}: PostgreSQL error: {msg}")

    def table_exists(self, tx: _Tx, table: str) -> bool:
        rows = tx.execute("SELECT to_regclass(?) IS NOT NULL", (table,))
        return bool(rows[0][0])

    def ddl(self) -> tuple[str, ...]:
        return _PG_DDL

    def is_db_error(self, exc: BaseException) -> bool:
        return isinstance(exc, self._psycopg.Error)

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, self._psycopg.errors.UniqueViolation)

    def close(self) -> None:
        self._conn.close()


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """A privacy-budget ledger; create with :func:`open_ledger`, then ``close()``
    (or use it as a context manager). One instance per process/thread."""

    def __init__(self, backend: _SqliteBackend | _PgBackend) -> None:
        self._b = backend
        self._closed = False
        try:
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    # -- plumbing

    @property
    def url(self) -> str:
        """The ledger's URL with any password redacted."""
        return self._b.url

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._b.name

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._b.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, *, write: bool, lock_dataset: str | None = None) -> Iterator[_Tx]:
        if self._closed:
            raise StorageError(f"ledger {self.url} is closed")
        try:
            with self._b.transaction(write=write, lock_dataset=lock_dataset) as tx:
                yield tx
        except sqlite3.Error as exc:
            if self._b.is_unique_violation(exc):
                raise
            raise StorageError(f"ledger {self.url}: SQLite error: {exc}") from None

    def _ensure_schema(self) -> None:
        with self._tx(write=False) as tx:
            if self._b.table_exists(tx, "ledger_schema_version"):
                rows = tx.execute("SELECT MAX(version) FROM ledger_schema_version")
                if rows and rows[0][0] is not None:
                    self._check_version(int(rows[0][0]))
                    return
        with self._tx(write=True) as tx:
            if isinstance(self._b, _PgBackend):
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_SCHEMA_LOCK,))
            if self._b.table_exists(tx, "ledger_schema_version"):
                rows = tx.execute("SELECT MAX(version) FROM ledger_schema_version")
                if rows and rows[0][0] is not None:
                    self._check_version(int(rows[0][0]))
                    return
            for table in ("datasets", "charges"):
                if self._b.table_exists(tx, table):
                    raise StorageError(
                        f"ledger {self.url}: a table {table!r} exists that dpsynth did not "
                        "create; use a dedicated database (or PostgreSQL schema) for the ledger"
                    )
            for stmt in self._b.ddl():
                tx.execute(stmt)
            tx.execute(
                "INSERT INTO ledger_schema_version (version, applied_at) VALUES (?, ?)",
                (SCHEMA_VERSION, _now()),
            )

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"ledger {self.url} has schema version {version}, newer than this dpsynth "
                f"understands ({SCHEMA_VERSION}); upgrade dpsynth"
            )
        # version < SCHEMA_VERSION: migrations go here when the schema changes.

    @staticmethod
    def _charge(row: Sequence[Any]) -> ChargeRecord:
        return ChargeRecord(
            release_id=row[0],
            dataset_id=row[1],
            rho=float(row[2]),
            epsilon=float(row[3]),
            delta=float(row[4]),
            engine=row[5],
            dpsynth_version=row[6],
            schema_hash=row[7],
            input_hash=row[8],
            status=row[9],
            created_at=_iso(row[10]),
            updated_at=_iso(row[11]),
            detail=row[12],
        )

    def _dataset_row(self, tx: _Tx, dataset_id: str) -> tuple[Any, ...] | None:
        rows = tx.execute(
            "SELECT dataset_id, total_epsilon, total_delta, total_rho, created_at "
            "FROM datasets WHERE dataset_id = ?",
            (dataset_id,),
        )
        return rows[0] if rows else None

    def _charges_of(self, tx: _Tx, dataset_id: str) -> list[ChargeRecord]:
        rows = tx.execute(
            _SELECT_CHARGES + "WHERE dataset_id = ? ORDER BY created_at, release_id",
            (dataset_id,),
        )
        return [self._charge(r) for r in rows]

    def _not_initialised(self, dataset_id: str) -> str:
        return (
            f"dataset {dataset_id!r} has no budget in ledger {self.url}; the custodian sets "
            f"it once with: dpsynth ledger init --ledger URL --dataset-id {dataset_id} "
            "--total-epsilon E [--total-delta D]"
        )

    # -- datasets

    def init_dataset(
        self, dataset_id: str, total_epsilon: float, total_delta: float
    ) -> DatasetSummary:
        """Set a dataset's total budget (once). Repeating the same totals is a no-op;
        different totals for an existing dataset raise :class:`UsageError`."""
        dataset_id = _check_id("dataset id", dataset_id)
        eps = _check_positive("total epsilon", total_epsilon)
        delta = _check_delta("total delta", total_delta)
        total_rho = rho_for(eps, delta)
        for attempt in range(2):
            try:
                with self._tx(write=True, lock_dataset=dataset_id) as tx:
                    row = self._dataset_row(tx, dataset_id)
                    if row is None:
                        tx.execute(
                            "INSERT INTO datasets (dataset_id, total_epsilon, total_delta, "
                            "total_rho, created_at) VALUES (?, ?, ?, ?, ?)",
                            (dataset_id, eps, delta, total_rho, _now()),
                        )
                    else:
                        self._check_same_totals(dataset_id, row, eps, delta)
                break
            except Exception as exc:
                # PostgreSQL: a concurrent init of the same id won; check its totals.
                if not self._b.is_unique_violation(exc):
                    raise
                if attempt:
                    raise StorageError(
                        f"ledger {self.url}: could not record dataset {dataset_id!r}"
                    ) from None
        return self.summary(dataset_id)

    def _check_same_totals(
        self, dataset_id: str, row: Sequence[Any], eps: float, delta: float
    ) -> None:
        if float(row[1]) != eps or float(row[2]) != delta:
            raise UsageError(
                f"dataset {dataset_id!r} already has a total of epsilon {float(row[1]):g}, "
                f"delta {float(row[2]):g}; totals are set once and cannot be changed "
                f"(asked for epsilon {eps:g}, delta {delta:g})"
            )

    # -- charges

    def reserve(
        self,
        dataset_id: str,
        release_id: str,
        rho: float,
        epsilon: float,
        delta: float,
        engine: str,
        dpsynth_version: str,
        schema_hash: str,
    ) -> ChargeRecord:
        """Reserve ``rho`` for a release, *before* any private data is read.

        In one transaction: refuse a release id that already has a charge (in any
        status), refuse an unknown dataset, refuse if counted rho + ``rho`` would
        exceed the total (all :class:`BudgetError`); else insert it as 'reserved'.
        """
        dataset_id = _check_id("dataset id", dataset_id)
        release_id = _check_id("release id", release_id)
        rho = _check_positive("rho", rho)
        epsilon = _check_positive("epsilon", epsilon)
        delta = _check_delta("delta", delta)
        for kind, value in (
            ("engine", engine),
            ("dpsynth version", dpsynth_version),
            ("schema hash", schema_hash),
        ):
            _check_id(kind, value)
        duplicate = BudgetError(
            f"release id {release_id!r} already has a charge in ledger {self.url}; "
            "a retried job must not spend twice (use a new release id for a new release)"
        )
        try:
            with self._tx(write=True, lock_dataset=dataset_id) as tx:
                if tx.execute("SELECT 1 FROM charges WHERE release_id = ?", (release_id,)):
                    raise duplicate
                ds = self._dataset_row(tx, dataset_id)
                if ds is None:
                    raise BudgetError(self._not_initialised(dataset_id))
                total_delta, total_rho = float(ds[2]), float(ds[3])
                counted = [
                    float(r[0])
                    for r in tx.execute(
                        "SELECT rho FROM charges WHERE dataset_id = ? AND status <> 'cancelled'",
                        (dataset_id,),
                    )
                ]
                spent = math.fsum(counted)
                if not _fits(math.fsum([*counted, rho]), total_rho):
                    remaining = max(0.0, total_rho - spent)
                    raise BudgetError(
                        f"release {release_id!r} refused: it asks for epsilon {epsilon:g} at "
                        f"delta {delta:g} (rho {rho:.6g}; epsilon "
                        f"{_eps(rho, total_delta):.6g} at the dataset's delta {total_delta:g}) "
                        f"but dataset {dataset_id!r} has only epsilon "
                        f"{_eps(remaining, total_delta):.6g} remaining at delta "
                        f"{total_delta:g} (rho {remaining:.6g} of {total_rho:.6g}; total "
                        f"epsilon {float(ds[1]):g})"
                    )
                now = _now()
                tx.execute(
                    _INSERT_CHARGE,
                    (
                        release_id, dataset_id, rho, epsilon, delta, engine,
                        dpsynth_version, schema_hash, now, now,
                    ),
                )
        except BudgetError:
            raise
        except Exception as exc:
            # Same release id inserted concurrently for another dataset.
            if self._b.is_unique_violation(exc):
                raise duplicate from None
            raise
        return self.charge(release_id)

    def charge(self, release_id: str) -> ChargeRecord:
        """The charge of ``release_id`` (:class:`UsageError` if there is none)."""
        with self._tx(write=False) as tx:
            rows = tx.execute(
                _SELECT_CHARGES + "WHERE release_id = ?", (release_id,)
            )
        if not rows:
            raise UsageError(f"ledger {self.url} has no charge for release id {release_id!r}")
        return self._charge(rows[0])

    def _move(
        self,
        release_id: str,
        target: str | None,
        *,
        input_hash: str | None = None,
        detail: str | None = None,
    ) -> ChargeRecord:
        """Move a charge forward; ``target=None`` means the failure status."""
        release_id = _check_id("release id", release_id)
        with self._tx(write=True) as tx:
            rows = tx.execute(
                "SELECT status FROM charges WHERE release_id = ? FOR UPDATE"
                if self._b.name == "postgresql"
                else "SELECT status FROM charges WHERE release_id = ?",
                (release_id,),
            )
            if not rows:
                raise StorageError(
                    f"ledger {self.url} has no charge for release id {release_id!r}"
                )
            status = rows[0][0]
            new = target or ("spent-failed" if status == "spent" else "cancelled")
            if new not in _TRANSITIONS.get(status, frozenset()):
                raise StorageError(
                    f"charge {release_id!r} is {status!r} and cannot become {new!r}: "
                    "charges only move forward (reserved -> spent -> released | "
                    "spent-failed; reserved -> cancelled)"
                )
            tx.execute(
                "UPDATE charges SET status = ?, updated_at = ?, "
                "input_hash = COALESCE(input_hash, ?), detail = COALESCE(?, detail) "
                "WHERE release_id = ?",
                (new, _now(), input_hash, detail, release_id),
            )
        return self.charge(release_id)

    def mark_spent(self, release_id: str, input_hash: str | None = None) -> ChargeRecord:
        """reserved -> spent. Call immediately *before* the first read of private data."""
        if input_hash is not None:
            _check_id("input hash", input_hash)
        return self._move(release_id, "spent", input_hash=input_hash)

    def mark_released(self, release_id: str) -> ChargeRecord:
        """spent -> released, once the bundle is in place."""
        return self._move(release_id, "released")

    def mark_failed(self, release_id: str, detail: str) -> ChargeRecord:
        """spent -> spent-failed (budget stays used), or reserved -> cancelled
        (no private data was read, so the budget is given back).

        ``detail`` is stored as is (truncated); it must not hold private values.
        """
        if not isinstance(detail, str):
            raise UsageError("failure detail must be a string")
        return self._move(release_id, None, detail=detail[:_MAX_DETAIL_LEN])

    # -- reports

    def summary(self, dataset_id: str) -> DatasetSummary:
        """Totals, spent and remaining budget, and all charges of one dataset."""
        with self._tx(write=False) as tx:
            ds = self._dataset_row(tx, dataset_id)
            if ds is None:
                raise UsageError(self._not_initialised(dataset_id))
            charges = self._charges_of(tx, dataset_id)
        return self._summarise(ds, charges)

    def datasets_with_input(self, input_hash: str) -> list[str]:
        """Dataset ids with a counted charge whose input file had this SHA-256 (the
        same bytes under another id would get a fresh budget)."""
        _check_id("input hash", input_hash)
        with self._tx(write=False) as tx:
            rows = tx.execute(
                "SELECT DISTINCT dataset_id FROM charges WHERE input_hash = ? "
                "AND status <> 'cancelled' ORDER BY dataset_id",
                (input_hash,),
            )
        return [r[0] for r in rows]

    def datasets(self) -> list[DatasetSummary]:
        """Summaries of every dataset in the ledger, by dataset id."""
        with self._tx(write=False) as tx:
            rows = tx.execute(
                "SELECT dataset_id, total_epsilon, total_delta, total_rho, created_at "
                "FROM datasets ORDER BY dataset_id"
            )
            result = [(r, self._charges_of(tx, r[0])) for r in rows]
        return [self._summarise(r, c) for r, c in result]

    @staticmethod
    def _summarise(ds: Sequence[Any], charges: list[ChargeRecord]) -> DatasetSummary:
        total_delta, total_rho = float(ds[2]), float(ds[3])
        spent = math.fsum(c.rho for c in charges if c.counted)
        remaining = max(0.0, total_rho - spent)
        return DatasetSummary(
            dataset_id=ds[0],
            total_epsilon=float(ds[1]),
            total_delta=total_delta,
            total_rho=total_rho,
            created_at=_iso(ds[4]),
            spent_rho=spent,
            remaining_rho=remaining,
            charges=tuple(charges),
        )


def open_ledger(url: str) -> Ledger:
    """Open (creating tables on first use) the ledger at ``url``.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (the file is
    created, its directory must exist) or ``postgresql://user:pw@host:port/db``
    (``postgres://`` also accepted). Errors are :class:`StorageError` (exit 6)
    and never show the password.
    """
    if not isinstance(url, str) or not url.strip():
        raise StorageError("no ledger URL given (use --ledger or DPSYNTH_LEDGER)")
    url = url.strip()
    safe = redact_url(url)
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise StorageError(
                f"bad ledger URL {safe!r}: use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        path = url[len("sqlite:///"):]
        return Ledger(_SqliteBackend(safe, path))
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError for a non-numeric port
        except ValueError:
            raise StorageError(
                f"bad ledger URL {safe!r}: expected postgresql://user:password@host:port/db"
            ) from None
        if not parts.path.strip("/"):
            raise StorageError(f"bad ledger URL {safe!r}: no database name after the host")
        return Ledger(_PgBackend(safe, url))
    raise StorageError(
        f"bad ledger URL {safe!r}: expected sqlite:///path or postgresql://user:pw@host:port/db"
    )

