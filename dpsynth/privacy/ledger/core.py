"""The ledger itself: the order a charge's status follows, and the budget policy.

What this module owns
---------------------
* :class:`Ledger`, written once against ``backend.Backend`` (the SQL here is
  the same on both databases; ``?`` placeholders).
* The status state machine (``_TRANSITIONS``; the backends' triggers enforce
  the same rule in the database)::

      reserve()      status 'reserved'   before the input is opened
      mark_spent()   status 'spent'      immediately before the first read
      mark_released()   'released'       after the bundle is in place (by the release,
                                         or by ``dpsynth ledger reconcile`` from the
                                         manifest of a bundle a killed run published)
      mark_failed()     'spent-failed'   if it was spent (the budget stays used)
                        'cancelled'      if still reserved (no data was read)

* The budget policy: a dataset's total is an :class:`ApproxDP` stored with its
  rho; a charge stores the (epsilon, delta) the release asked for and its rho;
  counted rho adds up (zCDP composition) and a reservation fits when
  ``total.covers(spent + cost)``; spent and remaining are reported as epsilon at
  the dataset's delta. Every status except ``cancelled`` counts, including a
  ``reserved`` charge whose job crashed before saying anything more.
* Charge kinds (``release``, ``schema-draft``): both count against the same total.
  A schema draft's key selection is approximate zCDP, so its charge also spends
  ``extra_delta`` outside rho; counted rho is then converted (and the total's rho
  computed) at the dataset's delta less the counted ``extra_delta``
  (:func:`_effective_total`).
* Creating and versioning the tables (``SCHEMA_VERSION``) on first open, and
  migrating older tables forward (the backend's ``migrations``).

What it must not do
-------------------
* Know which database it talks to: locking, DDL and error translation are the
  backend's (``sqlite``, ``postgres``).
* Compare or convert budgets itself: ``Budget.covers`` and ``Budget.epsilon``
  from ``accountant`` are the only tolerance and conversion.
* Read, receive or store private data; delete or rewrite a charge; move a status
  backwards; change a total once set; let a retried release id spend twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from dpsynth.errors import BudgetError, StorageError, UsageError
from dpsynth.privacy.accountant import ApproxDP, Budget, rho_for
from dpsynth.privacy.ledger.backend import Backend, Transaction
from dpsynth.privacy.ledger.records import KINDS, ChargeRecord, DatasetSummary

__all__ = ["SCHEMA_VERSION", "Ledger"]

SCHEMA_VERSION = 2
"""Version of the ledger's tables; bump it and add a migration when they change.
1: the first tables. 2: charges gain ``kind`` (release / schema-draft) and
``extra_delta`` (delta spent outside rho)."""

_TRANSITIONS: dict[str, frozenset[str]] = {
    "reserved": frozenset({"spent", "cancelled"}),
    "spent": frozenset({"released", "spent-failed"}),
    "released": frozenset(),
    "spent-failed": frozenset(),
    "cancelled": frozenset(),
}

_MAX_ID_LEN = 200
_MAX_DETAIL_LEN = 2000

# Full statements as literals (no string building around SQL).
_SELECT_CHARGES = (
    "SELECT release_id, dataset_id, rho, epsilon, delta, engine, dpsynth_version, "
    "schema_hash, input_hash, status, created_at, updated_at, detail, kind, extra_delta "
    "FROM charges "
)
_INSERT_CHARGE = (
    "INSERT INTO charges (release_id, dataset_id, rho, epsilon, delta, engine, "
    "dpsynth_version, schema_hash, input_hash, status, created_at, updated_at, detail, "
    "kind, extra_delta) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 'reserved', ?, ?, NULL, ?, ?)"
)
_SELECT_DATASETS = "SELECT dataset_id, total_epsilon, total_delta, total_rho, created_at FROM datasets "


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


def _check_budget(kind: str, value: object) -> ApproxDP:
    if not isinstance(value, ApproxDP):
        raise UsageError(f"{kind} must be an ApproxDP (epsilon, delta), not {type(value).__name__}")
    return value


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
        kind=row[13],
        extra_delta=float(row[14]),
    )


def _left(total: Budget, spent: Budget) -> Budget:
    """What remains of ``total`` (never negative, never an error: reports must show
    even a ledger that something outside dpsynth pushed over its total)."""
    return Budget(max(0.0, total.rho - spent.rho))


def _effective_total(ds: Sequence[Any], extra_delta: float) -> Budget:
    """The dataset's total rho once ``extra_delta`` of its delta was spent outside rho
    (by schema drafts): rho at (total epsilon, total delta - extra_delta); the stored
    total when none was."""
    if extra_delta <= 0:
        return Budget(float(ds[3]))
    left = float(ds[2]) - extra_delta
    if left <= 0:
        return Budget(0.0)
    return Budget(min(float(ds[3]), rho_for(float(ds[1]), left)))


def _summarise(ds: Sequence[Any], charges: list[ChargeRecord]) -> DatasetSummary:
    extra = math.fsum(c.extra_delta for c in charges if c.counted)
    total = _effective_total(ds, extra)
    spent = Budget(math.fsum(c.rho for c in charges if c.counted))
    return DatasetSummary(
        dataset_id=ds[0],
        total_epsilon=float(ds[1]),
        total_delta=float(ds[2]),
        total_rho=total.rho,
        created_at=_iso(ds[4]),
        spent_rho=spent.rho,
        remaining_rho=_left(total, spent).rho,
        charges=tuple(charges),
        spent_extra_delta=extra,
    )


def _refusal(release_id: str, budget: ApproxDP, cost: Budget, ds: Sequence[Any],
             spent: Budget, extra_delta: float = 0.0, kind: str = "release") -> str:
    """The overspend message: what was asked for and what remains (``extra_delta``:
    the delta already spent outside rho by counted charges; ``kind``: the charge's kind,
    named in the message as ``release`` or ``schema draft``)."""
    total_delta, total = float(ds[2]) - extra_delta, _effective_total(ds, extra_delta)
    what = "schema draft" if kind == "schema-draft" else "release"
    if total_delta <= 0:
        return (f"{what} {release_id!r} refused: dataset {ds[0]!r} has no delta left "
                f"(total delta {float(ds[2]):g}, all spent by schema drafts' key selection)")
    remaining = _left(total, spent)
    return (
        f"{what} {release_id!r} refused: it asks for epsilon {budget.epsilon:g} at "
        f"delta {budget.delta:g} (rho {cost.rho:.6g}; epsilon "
        f"{cost.epsilon(total_delta):.6g} at the dataset's delta {total_delta:g}) "
        f"but dataset {ds[0]!r} has only epsilon "
        f"{remaining.epsilon(total_delta):.6g} remaining at delta "
        f"{total_delta:g} (rho {remaining.rho:.6g} of {total.rho:.6g}; total "
        f"epsilon {float(ds[1]):g})"
    )


class Ledger:
    """A privacy-budget ledger; create with :func:`~dpsynth.privacy.ledger.open_ledger`,
    then ``close()`` (or use it as a context manager). One instance per process/thread."""

    def __init__(self, backend: Backend) -> None:
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
    def _tx(self, *, write: bool, lock_dataset: str | None = None,
            lock_charge: str | None = None, lock_schema: bool = False) -> Iterator[Transaction]:
        if self._closed:
            raise StorageError(f"ledger {self.url} is closed")
        with self._b.transaction(write=write, lock_dataset=lock_dataset,
                                 lock_charge=lock_charge, lock_schema=lock_schema) as tx:
            yield tx

    def _ensure_schema(self) -> None:
        with self._tx(write=False) as tx:
            if self._schema_is_current(tx):
                return
        with self._tx(write=True, lock_schema=True) as tx:
            if self._schema_is_current(tx):  # another process created it meanwhile
                return
            stored = self._stored_version(tx)
            if stored is not None:
                self._migrate(tx, stored)
                return
            for table in ("datasets", "charges"):
                if self._b.table_exists(tx, table):
                    raise StorageError(
                        f"ledger {self.url}: a table {table!r} exists that dpsynth did not "
                        "create; use a dedicated database (or PostgreSQL schema) for the ledger"
                    )
            for stmt in self._b.ddl:
                tx.execute(stmt)
            tx.execute(
                "INSERT INTO ledger_schema_version (version, applied_at) VALUES (?, ?)",
                (SCHEMA_VERSION, _now()),
            )

    def _stored_version(self, tx: Transaction) -> int | None:
        """The tables' version, or ``None`` when they have none yet."""
        if not self._b.table_exists(tx, "ledger_schema_version"):
            return None
        rows = tx.execute("SELECT MAX(version) FROM ledger_schema_version")
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0])

    def _schema_is_current(self, tx: Transaction) -> bool:
        """True when the tables exist at this dpsynth's version (an older version
        needs :meth:`_migrate`, a newer one is refused)."""
        version = self._stored_version(tx)
        if version is None:
            return False
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"ledger {self.url} has schema version {version}, newer than this dpsynth "
                f"understands ({SCHEMA_VERSION}); upgrade dpsynth"
            )
        return version == SCHEMA_VERSION

    def _migrate(self, tx: Transaction, version: int) -> None:
        """Bring tables of an older ``version`` forward, one version at a time (under the
        schema lock). Existing charges keep every value; new columns get their defaults
        (a version 1 charge is a release with no delta outside rho)."""
        while version < SCHEMA_VERSION:
            for stmt in self._b.migrations[version]:
                tx.execute(stmt)
            version += 1
            tx.execute(
                "INSERT INTO ledger_schema_version (version, applied_at) VALUES (?, ?)",
                (version, _now()),
            )

    def _dataset_row(self, tx: Transaction, dataset_id: str) -> tuple[Any, ...] | None:
        rows = tx.execute(_SELECT_DATASETS + "WHERE dataset_id = ?", (dataset_id,))
        return rows[0] if rows else None

    def _charges_of(self, tx: Transaction, dataset_id: str) -> list[ChargeRecord]:
        rows = tx.execute(
            _SELECT_CHARGES + "WHERE dataset_id = ? ORDER BY created_at, release_id",
            (dataset_id,),
        )
        return [_charge(r) for r in rows]

    def _not_initialised(self, dataset_id: str) -> str:
        return (
            f"dataset {dataset_id!r} has no budget in ledger {self.url}; the custodian sets "
            f"it once with: dpsynth ledger init --ledger URL --dataset-id {dataset_id} "
            "--total-epsilon E [--total-delta D]"
        )

    # -- datasets

    def init_dataset(self, dataset_id: str, total: ApproxDP) -> DatasetSummary:
        """Set a dataset's total budget (once). Repeating the same total is a no-op;
        a different total for an existing dataset raises :class:`UsageError`."""
        dataset_id = _check_id("dataset id", dataset_id)
        total = _check_budget("total", total)
        eps, delta, total_rho = float(total.epsilon), float(total.delta), total.rho.rho
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
                    elif float(row[1]) != eps or float(row[2]) != delta:
                        raise UsageError(
                            f"dataset {dataset_id!r} already has a total of epsilon "
                            f"{float(row[1]):g}, delta {float(row[2]):g}; totals are set once "
                            f"and cannot be changed (asked for epsilon {eps:g}, delta {delta:g})"
                        )
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

    # -- charges

    def reserve(
        self,
        dataset_id: str,
        release_id: str,
        budget: ApproxDP,
        engine: str,
        dpsynth_version: str,
        schema_hash: str,
        *,
        kind: str = "release",
        extra_delta: float = 0.0,
    ) -> ChargeRecord:
        """Reserve ``budget`` for a release (or a schema draft, ``kind``), *before* any
        private data is read.

        The charge stores ``budget.epsilon``, ``budget.delta`` and its rho: the rho
        of ``budget`` at ``budget.delta - extra_delta`` (``extra_delta``: delta the
        charge spends outside rho, a schema draft's key selection; 0 for releases).
        In one transaction: refuse a release id that already has a charge (in any
        status), refuse an unknown dataset, refuse if the counted charges plus this
        one are not covered by the total (all :class:`BudgetError`); else insert it
        as 'reserved'.
        """
        dataset_id = _check_id("dataset id", dataset_id)
        release_id = _check_id("release id", release_id)
        budget = _check_budget("budget", budget)
        for what, value in (
            ("engine", engine),
            ("dpsynth version", dpsynth_version),
            ("schema hash", schema_hash),
        ):
            _check_id(what, value)
        if kind not in KINDS:
            raise UsageError(f"charge kind ({kind!r}) must be one of: {', '.join(KINDS)}")
        if (isinstance(extra_delta, bool) or not isinstance(extra_delta, int | float)
                or not 0 <= extra_delta < budget.delta):
            raise UsageError(f"extra delta ({extra_delta}) must be at least 0 and less than "
                             f"delta ({budget.delta:g})")
        extra_delta = float(extra_delta)
        cost = budget.rho if extra_delta == 0 else Budget(
            rho_for(budget.epsilon, budget.delta - extra_delta))
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
                rows = tx.execute(
                    "SELECT rho, extra_delta FROM charges WHERE dataset_id = ? "
                    "AND status <> 'cancelled'",
                    (dataset_id,),
                )
                counted = [float(r[0]) for r in rows]
                extra = math.fsum(float(r[1]) for r in rows)
                after = extra + extra_delta
                total = _effective_total(ds, after)
                if after >= float(ds[2]) or not total.covers(
                        Budget(math.fsum([*counted, cost.rho]))):
                    raise BudgetError(
                        _refusal(release_id, budget, cost, ds, Budget(math.fsum(counted)), extra,
                                 kind)
                    )
                now = _now()
                tx.execute(
                    _INSERT_CHARGE,
                    (
                        release_id, dataset_id, cost.rho, float(budget.epsilon),
                        float(budget.delta), engine, dpsynth_version, schema_hash, now, now,
                        kind, extra_delta,
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
            rows = tx.execute(_SELECT_CHARGES + "WHERE release_id = ?", (release_id,))
        if not rows:
            raise UsageError(f"ledger {self.url} has no charge for release id {release_id!r}")
        return _charge(rows[0])

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
        with self._tx(write=True, lock_charge=release_id) as tx:
            rows = tx.execute("SELECT status FROM charges WHERE release_id = ?", (release_id,))
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

    def mark_released(self, release_id: str, detail: str | None = None) -> ChargeRecord:
        """spent -> released, once the bundle is in place. ``detail`` says how it was
        confirmed when that was not the release itself (``dpsynth ledger reconcile``);
        it must not hold private values."""
        if detail is not None and not isinstance(detail, str):
            raise UsageError("release detail must be a string")
        return self._move(release_id, "released",
                          detail=None if detail is None else detail[:_MAX_DETAIL_LEN])

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
        return _summarise(ds, charges)

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
            rows = tx.execute(_SELECT_DATASETS + "ORDER BY dataset_id")
            result = [(r, self._charges_of(tx, r[0])) for r in rows]
        return [_summarise(r, c) for r, c in result]
