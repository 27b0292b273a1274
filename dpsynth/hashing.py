"""SHA-256 of a file: the one helper for file digests (the ledger's input hash, the
bundle manifest). Public: a digest says nothing about the bytes beyond equality."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_file"]

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of the file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
