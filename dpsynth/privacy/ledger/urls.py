"""Ledger URLs: which backend a URL names, and its password-free form.

What this module owns
---------------------
* :func:`redact_url`, the one way a ledger URL reaches a message or a log.
* :func:`parse_ledger_url`: ``sqlite:///relative/path.db``,
  ``sqlite:////absolute/path.db`` or ``postgresql://user:pw@host:port/db``
  (``postgres://`` also accepted) -> a :class:`LedgerURL`; anything else is a
  :class:`~dpsynth.errors.StorageError` (exit 6) that never shows the password.

What it must not do
-------------------
* Open a file or a connection (the backends do), or put a password in an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from dpsynth.errors import StorageError

__all__ = ["LedgerURL", "parse_ledger_url", "redact_url"]

_SQLITE_PREFIX = "sqlite:///"


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


@dataclass(frozen=True, repr=False)
class LedgerURL:
    """A checked ledger URL. ``target`` may hold a password: never print it
    (``repr`` shows only the redacted form)."""

    backend: Literal["sqlite", "postgresql"]
    safe: str
    """The URL with any password redacted, for messages."""
    target: str
    """SQLite: the file path (or ``:memory:``); PostgreSQL: the full URL."""

    def __repr__(self) -> str:
        return f"LedgerURL({self.backend!r}, {self.safe!r})"


def parse_ledger_url(url: object) -> LedgerURL:
    """Check ``url`` and say which backend it names (:class:`StorageError` if bad)."""
    if not isinstance(url, str) or not url.strip():
        raise StorageError("no ledger URL given (use --ledger or DPSYNTH_LEDGER)")
    url = url.strip()
    safe = redact_url(url)
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        if not url.startswith(_SQLITE_PREFIX) or len(url) == len(_SQLITE_PREFIX):
            raise StorageError(
                f"bad ledger URL {safe!r}: use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        return LedgerURL("sqlite", safe, url[len(_SQLITE_PREFIX):])
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
        return LedgerURL("postgresql", safe, url)
    raise StorageError(
        f"bad ledger URL {safe!r}: expected sqlite:///path or postgresql://user:pw@host:port/db"
    )
