"""The contract between the ledger and a database: what ``core.Ledger`` asks of a
backend (``sqlite.SqliteBackend``, ``postgres.PostgresBackend``).

What this module owns
---------------------
* :class:`Transaction` and :class:`Backend`, typing protocols only. The SQL
  the ledger runs is written once, with ``?`` placeholders, and runs unchanged
  on every backend; a backend supplies its connection, its DDL and triggers,
  its locks and its error translation.

What it must not do
-------------------
* Hold code: a new backend is a new module that satisfies these protocols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Backend", "Transaction"]


class Transaction(Protocol):
    """One open transaction; ``execute`` takes ``?`` placeholders and returns all rows."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...


class Backend(Protocol):
    """A ledger database: ``name`` is ``"sqlite"`` or ``"postgresql"``, ``url`` the
    redacted URL, ``ddl`` the statements that create the tables and triggers (at
    ``core.SCHEMA_VERSION``), ``migrations[v]`` those that bring version ``v``'s
    tables to ``v + 1``."""

    name: str
    url: str
    ddl: tuple[str, ...]

    @property
    def migrations(self) -> Mapping[int, tuple[str, ...]]: ...

    def transaction(
        self,
        *,
        write: bool,
        lock_dataset: str | None = None,
        lock_charge: str | None = None,
        lock_schema: bool = False,
    ) -> AbstractContextManager[Transaction]:
        """A transaction that holds the asked-for locks before it is handed out;
        database errors leave it as :class:`StorageError` (unique violations as
        they are, for :meth:`is_unique_violation`)."""
        ...

    def table_exists(self, tx: Transaction, table: str) -> bool: ...

    def is_unique_violation(self, exc: BaseException) -> bool: ...

    def close(self) -> None: ...
