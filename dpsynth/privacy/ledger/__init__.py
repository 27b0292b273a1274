"""The privacy-budget ledger: one total (epsilon, delta) per dataset and an
append-only list of charges against it, kept in SQLite or PostgreSQL.

Open one with :func:`open_ledger`; budgets go in and come out as
:class:`~dpsynth.privacy.accountant.ApproxDP` and
:class:`~dpsynth.privacy.accountant.Budget` values. The order a release must
follow ("budget before data", docs/privacy-model.md) is ``reserve`` before the
input is opened, ``mark_spent`` immediately before its first read, then
``mark_released`` or ``mark_failed``. ``reserve`` checks and inserts in one
serialised transaction, so parallel releases can never exceed the total.

Modules (this file only re-exports and opens)::

    records.py    ChargeRecord, DatasetSummary, the status names
    core.py       Ledger: status state machine, budget policy, table versioning
    backend.py    the protocols a database backend satisfies
    sqlite.py     SQLite backend: connection, locking, DDL and triggers
    postgres.py   PostgreSQL backend: connection, locking, DDL and triggers
    urls.py       ledger URL parsing and password redaction

What the ledger must not do
---------------------------
* Never read, receive or store private data. It sees only ids, budgets,
  versions and hashes; ``detail`` is a short error text the caller must keep
  free of cell values (docs/privacy-model.md).
* Never delete or rewrite a charge, never move a status backwards, never change
  a dataset's total once set, and never let a retried release id spend twice.
* Never put a database password in an error message (URLs are redacted).
* Never draw noise or import opendp (the arithmetic lives in ``accountant``).
"""

from __future__ import annotations

from dpsynth.privacy.ledger.core import SCHEMA_VERSION, Ledger
from dpsynth.privacy.ledger.postgres import PostgresBackend
from dpsynth.privacy.ledger.records import COUNTED_STATUSES, STATUSES, ChargeRecord, DatasetSummary
from dpsynth.privacy.ledger.sqlite import SqliteBackend
from dpsynth.privacy.ledger.urls import parse_ledger_url, redact_url

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


def open_ledger(url: str) -> Ledger:
    """Open (creating tables on first use) the ledger at ``url``.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (the file is
    created, its directory must exist) or ``postgresql://user:pw@host:port/db``
    (``postgres://`` also accepted). Errors are :class:`~dpsynth.errors.StorageError`
    (exit 6) and never show the password.
    """
    parsed = parse_ledger_url(url)
    if parsed.backend == "sqlite":
        return Ledger(SqliteBackend(parsed.safe, parsed.target))
    return Ledger(PostgresBackend(parsed.safe, parsed.target))
